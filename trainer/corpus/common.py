"""What every corpus builder shares: image checks, the corpus.json sidecar, finishing a corpus, and
`CorpusInputError` (bad input, reported by the CLI dispatcher as one line, exit code 2)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from streams.contract.cli import UserError
from trainer.corpus.manifest import ManifestRow, label_counts, unify_duplicate_splits, write_manifest

CORPUS_INFO_NAME = "corpus.json"
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "GIF": ".gif", "BMP": ".bmp"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"}


class BadImage(ValueError):
    """Bytes that are not a fully decodable image."""


class CorpusInputError(UserError):
    """Bad input to a corpus command; the message names the file (and line) and is shown as is."""


class ImageInfo(BaseModel):
    sha256: str
    bytes: int
    width: int
    height: int
    format: str

    @property
    def suffix(self) -> str:
        return EXTENSIONS.get(self.format, "." + self.format.lower())


def inspect_image(data: bytes) -> ImageInfo:
    """Decode the whole image (a truncated file fails here) and describe it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            width, height, fmt = img.width, img.height, img.format or "unknown"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"not a decodable image ({type(e).__name__}: {e})") from None
    return ImageInfo(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), width=width, height=height,
                     format=fmt)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class CorpusInfo(BaseModel):
    """corpus.json: where a corpus came from and what it holds (documented in docs/manifest.md)."""
    source: str                                  # "met", "folder" or "csv"
    created: str                                 # UTC, ISO 8601
    seed: int | None = None                      # sampling seed (MET)
    split_seed: int = 0                          # seed of assign_split
    args: dict[str, Any] = Field(default_factory=dict)
    total: int = 0
    counts: dict[str, dict[str, int]] = Field(default_factory=dict)      # label -> split -> n
    skipped: dict[str, int] = Field(default_factory=dict)                # reason -> n


def finish_corpus(out: Path, rows: list[ManifestRow], info: CorpusInfo) -> list[ManifestRow]:
    """Unify duplicate-image splits, then write manifest.jsonl and corpus.json atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rows = unify_duplicate_splits(rows)
    write_manifest(out, rows)
    info = info.model_copy(update={"total": len(rows), "counts": label_counts(rows)})
    write_atomic(out / CORPUS_INFO_NAME, (info.model_dump_json(indent=2) + "\n").encode())
    return rows


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def jsonable_args(args: Any) -> dict[str, Any]:
    return json.loads(json.dumps(vars(args), default=str))
