"""Build a corpus from an institution's own files: items (image path or URL, label, optional split) ->
checked images -> manifest.jsonl + corpus.json. Shared by `corpus folder` and `corpus csv`.

Local images stay where they are (manifest paths are relative to the corpus directory) unless ``copy``;
URLs are downloaded into ``OUT/images/<label>/`` with the same client (rate limit, retries) as the MET
harvest. Items without a split get ``assign_split(object_id, split_seed)``.
"""
from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from pathlib import Path

from pydantic import BaseModel

from trainer.corpus.common import (BadImage, CorpusInfo, CorpusInputError, ImageInfo, finish_corpus,
                                   inspect_image, jsonable_args, utc_now, write_atomic)
from trainer.corpus.manifest import ManifestRow, Split, assign_split, dumps_summary
from trainer.metapi.client import ClientConfig, FetchError, MetClient


META_COLUMNS = ("department", "classification", "object_name", "title", "culture", "period", "object_date",
                "medium", "image_url")


class Item(BaseModel):
    source: str              # local path or http(s) URL
    label: str
    object_id: str
    split: Split | None = None
    where: str               # "file:line" (or the image path) for error messages
    meta: dict[str, str] = {}  # optional descriptive manifest columns (title, medium, …)


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "item"


def _check_unique(items: list[Item]) -> None:
    seen: dict[str, str] = {}
    for it in items:
        if it.object_id in seen:
            raise CorpusInputError(f"{it.where}: duplicate object id {it.object_id!r} (first at {seen[it.object_id]})")
        seen[it.object_id] = it.where


async def _download(items: list[Item], client_cfg: ClientConfig) -> dict[str, bytes | None | str]:
    """URL -> bytes, None (404) or an error string."""
    out: dict[str, bytes | None | str] = {}
    async with MetClient(client_cfg) as client:
        async def one(url: str) -> None:
            try:
                out[url] = await client.image(url)
            except FetchError as e:
                out[url] = str(e)
        await asyncio.gather(*(one(u) for u in {it.source for it in items if is_url(it.source)}))
    return out


def build_corpus(items: list[Item], out: Path, *, source: str, copy: bool = False, split_seed: int = 0,
                 skip_bad: bool = False, args: dict | None = None,
                 client_cfg: ClientConfig | None = None) -> list[ManifestRow]:
    """Check every image, then write the corpus. Bad images raise `CorpusInputError` naming the item,
    or are skipped with a warning when ``skip_bad``."""
    if not items:
        raise CorpusInputError("no images found")
    _check_unique(items)
    out.mkdir(parents=True, exist_ok=True)
    downloads = asyncio.run(_download(items, client_cfg or ClientConfig())) if any(
        is_url(it.source) for it in items) else {}
    rows, skipped = [], Counter()
    for it in items:
        try:
            data = _read(it, downloads)
            info = inspect_image(data)
        except (BadImage, CorpusInputError) as e:
            msg = f"{it.where}: {it.source}: {e}"
            if not skip_bad:
                raise CorpusInputError(msg) from None
            print(f"warning: skipped {msg}", file=sys.stderr)
            skipped["bad image"] += 1
            continue
        rows.append(_row(it, info, data, out, copy, split_seed))
    info = CorpusInfo(source=source, created=utc_now(), split_seed=split_seed, args=args or {}, skipped=dict(skipped))
    return finish_corpus(out, rows, info)


def _read(it: Item, downloads: dict[str, bytes | None | str]) -> bytes:
    if is_url(it.source):
        got = downloads[it.source]
        if got is None:
            raise CorpusInputError("image URL answered 404")
        if isinstance(got, str):
            raise CorpusInputError(f"download failed: {got}")
        return got
    path = Path(it.source)
    if not path.is_file():
        raise CorpusInputError("no such image file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusInputError(f"unreadable ({e.strerror})") from None


def _row(it: Item, info: ImageInfo, data: bytes, out: Path, copy: bool, split_seed: int) -> ManifestRow:
    if copy or is_url(it.source):
        dest = out / "images" / safe_name(it.label) / (safe_name(it.object_id) + info.suffix)
        write_atomic(dest, data)
        path = dest.relative_to(out).as_posix()
    else:
        path = Path(os.path.relpath(Path(it.source).resolve(), out.resolve())).as_posix()
    return ManifestRow(**{"image_url": it.source if is_url(it.source) else None, **it.meta},
                       object_id=it.object_id, label=it.label,
                       path=path, sha256=info.sha256, bytes=info.bytes, width=info.width, height=info.height,
                       split=it.split or assign_split(it.object_id, split_seed))


def filter_labels(items: list[Item], labels: list[str] | None, drop: list[str]) -> list[Item]:
    """Drop items whose label is in ``drop``; with ``labels``, any other label is an error."""
    kept = [it for it in items if it.label not in set(drop)]
    if labels:
        allowed = set(labels)
        for it in kept:
            if it.label not in allowed:
                raise CorpusInputError(f"{it.where}: unknown label {it.label!r} (--labels: {', '.join(labels)})")
    return kept


def add_common_arguments(p) -> None:
    p.add_argument("--out", required=True, help="corpus directory to write (required)")
    p.add_argument("--labels", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=None,
                   metavar="A,B,…", help="the allowed labels; any other label is an error (default: any)")
    p.add_argument("--drop-label", action="append", default=[], metavar="LABEL",
                   help="leave out images with this label; repeatable (default: none)")
    p.add_argument("--copy", action="store_true",
                   help="copy images into OUT/images/ (default: the manifest points at them in place)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the hash split for images without a given split (default: 0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable images with a warning instead of failing (default: fail)")


def run_build(items: list[Item], args, source: str) -> int:
    """Filter labels, build the corpus, print a summary (the tail of both commands' main)."""
    items = filter_labels(items, args.labels, args.drop_label)
    rows = build_corpus(items, Path(args.out), source=source, copy=args.copy, split_seed=args.split_seed,
                        skip_bad=args.skip_bad, args=jsonable_args(args))
    print(dumps_summary(rows))
    print(f"wrote {len(rows)} rows to {Path(args.out) / 'manifest.jsonl'} and corpus.json")
    return 0
