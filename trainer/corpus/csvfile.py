"""Make a corpus from a CSV file: one row per image with its path or URL, label, optional split and
optional object id.

Columns are found by name (change them with the --*-column flags). Paths are relative to the CSV's own
folder; http(s) URLs are downloaded into OUT/images/ (with retries). An empty or absent split gets a hash
split from the object id; an absent object id becomes the image path without its suffix. Columns named like descriptive manifest columns
(title, medium, culture, period, object_date, object_name, classification, department, image_url) are
carried into the manifest. Every bad row
(missing column or value, bad split, unknown label with --labels, missing or undecodable image, duplicate
object id) stops with one line naming the file and line. See docs/manifest.md.

example (the Egyptian Art corpus, four classes, the CSV's own splits):
  python -m trainer corpus csv ../shared/data/egyptian-met/labels.csv --path-column file \\
      --drop-label Unclassified --out corpora/egyptian
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from trainer.corpus.common import CorpusInputError
from trainer.corpus.files import META_COLUMNS, Item, add_common_arguments, is_url, run_build

SPLITS = ("train", "val", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="CSV file with a header row")
    p.add_argument("--path-column", default=None,
                   help="column with the image path or URL (default: 'path', else 'url')")
    p.add_argument("--label-column", default="label", help="column with the label (default: label)")
    p.add_argument("--split-column", default="split",
                   help="column with train/val/test; optional, empty = hash split (default: split)")
    p.add_argument("--id-column", default="object_id",
                   help="column with the object id; optional (default: object_id)")
    add_common_arguments(p)


def read_items(path: Path, path_column: str | None = None, label_column: str = "label",
               split_column: str = "split", id_column: str = "object_id") -> list[Item]:
    if not path.is_file():
        raise CorpusInputError(f"{path}: no such file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if path_column is None:
                path_column = "path" if "path" in header or "url" not in header else "url"
            for col in (path_column, label_column):
                if col not in header:
                    raise CorpusInputError(f"{path}:1: missing column {col!r} (columns: {', '.join(header)})")
            items = []
            for row in reader:
                items.append(_item(row, f"{path}:{reader.line_num}", path.parent, path_column, label_column,
                                   split_column if split_column in header else None,
                                   id_column if id_column in header else None))
    except UnicodeDecodeError as e:
        raise CorpusInputError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise CorpusInputError(f"{path}: {e}") from None
    return items


def _item(row: dict, where: str, base: Path, path_col: str, label_col: str, split_col: str | None,
          id_col: str | None) -> Item:
    source, label = (row.get(path_col) or "").strip(), (row.get(label_col) or "").strip()
    if not source:
        raise CorpusInputError(f"{where}: empty {path_col!r}")
    if not label:
        raise CorpusInputError(f"{where}: empty {label_col!r}")
    split = (row.get(split_col) or "").strip().lower() if split_col else ""
    if split and split not in SPLITS:
        raise CorpusInputError(f"{where}: split {split!r} is not one of train, val, test")
    oid = (row.get(id_col) or "").strip() if id_col else ""
    if not oid:
        oid = source.rsplit("/", 1)[-1].rsplit(".", 1)[0] if is_url(source) else Path(source).with_suffix("").as_posix()
    if not is_url(source):
        source = str(base / source)
    meta = {k: row[k].strip() for k in META_COLUMNS if (row.get(k) or "").strip() and k != path_col}
    return Item(source=source, label=label, object_id=oid, split=split or None, where=where, meta=meta)


def main(args: argparse.Namespace) -> int:
    items = read_items(Path(args.file), args.path_column, args.label_column, args.split_column, args.id_column)
    return run_build(items, args, source="csv")
