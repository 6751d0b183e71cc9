"""The corpus manifest: one format for every corpus (MET harvest, a folder, a CSV).

A corpus is a directory holding ``manifest.jsonl`` (one `ManifestRow` per line) and the images it names.
Columns are documented in docs/manifest.md. Splits are deterministic: a hash of the object id with a seed,
so a re-harvest never moves an object between train and test; images with the same sha256 are forced into
one split (the split of the smallest object id among them) so near-duplicates never cross splits.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from streams.contract.cli import UserError

Split = Literal["train", "val", "test"]
MANIFEST_NAME = "manifest.jsonl"
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


class ManifestError(UserError):
    """A manifest line that does not parse; the message names the file and line."""


class ManifestRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object_id: str
    label: str                         # the training class (MET: department display name)
    department_id: int | None = None
    department: str | None = None
    classification: str = ""
    object_name: str = ""
    title: str = ""
    culture: str = ""
    period: str = ""
    object_date: str = ""
    medium: str = ""
    image_url: str | None = None
    path: str                          # relative to the manifest's directory, or s3://bucket/key
    sha256: str
    bytes: int
    width: int
    height: int
    split: Split


def assign_split(object_id: str, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> Split:
    """Deterministic split from a hash of (seed, object_id); stable across re-harvests."""
    digest = hashlib.sha256(f"{seed}:{object_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def unify_duplicate_splits(rows: list[ManifestRow]) -> list[ManifestRow]:
    """Rows sharing a sha256 all take the split of the smallest object id among them."""
    owner: dict[str, ManifestRow] = {}
    for row in sorted(rows, key=lambda r: (_id_key(r.object_id))):
        owner.setdefault(row.sha256, row)
    return [r if owner[r.sha256].split == r.split else r.model_copy(update={"split": owner[r.sha256].split})
            for r in rows]


def _id_key(object_id: str) -> tuple[int, int | str]:
    return (0, int(object_id)) if object_id.isdigit() else (1, object_id)


def manifest_path(corpus: str | Path) -> Path:
    """The manifest file of a corpus directory, or the path itself when it is not a directory."""
    p = Path(corpus)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest file (or a corpus directory holding manifest.jsonl)."""
    path = manifest_path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(ManifestRow.model_validate_json(line))
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "line"
                raise ManifestError(f"{path}:{lineno}: {where}: {err['msg']}") from None
    return rows


def write_manifest(path: str | Path, rows: Iterable[ManifestRow]) -> Path:
    """Write rows atomically (temp file + rename), sorted by object id for stable diffs."""
    path = manifest_path(path)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in sorted(rows, key=lambda r: _id_key(r.object_id)):
            f.write(row.model_dump_json() + "\n")
    tmp.replace(path)
    return path


def resolve_image(manifest_dir: Path, row: ManifestRow) -> Path | str:
    """Local path of a row's image, or its s3:// URL unchanged."""
    return row.path if row.path.startswith("s3://") else manifest_dir / row.path


def relocate(row: ManifestRow, source_dir: Path, out: Path, **update) -> ManifestRow:
    """The row with its image path rewritten relative to `out` (s3:// paths unchanged), plus `update`."""
    src = resolve_image(source_dir, row)
    path = src if isinstance(src, str) else Path(os.path.relpath(src.resolve(), out.resolve())).as_posix()
    return row.model_copy(update={"path": path, **update})


def label_counts(rows: Iterable[ManifestRow]) -> dict[str, dict[str, int]]:
    """{label: {split: n}} — for summaries and reports."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r.label, {"train": 0, "val": 0, "test": 0})[r.split] += 1
    return out


def dumps_summary(rows: list[ManifestRow]) -> str:
    return json.dumps(label_counts(rows), indent=2, sort_keys=True)
