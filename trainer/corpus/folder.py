"""Make a corpus from a folder with one sub-folder per label.

Two layouts. DIR/<label>/…/<image>: every image gets a split from a hash of its object id (its path
under DIR without the suffix) and --split-seed, so adding images never moves old ones between splits.
DIR/{train,val,test}/<label>/…/<image> (DIR holds only split folders): the folders give the split, and
the object id leaves the split folder out. Images are checked (they must decode) and hashed; the
manifest points at them in place unless --copy. See docs/manifest.md.

example: python -m trainer corpus folder photos/ --out corpora/photos --drop-label misc
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trainer.corpus.common import IMAGE_SUFFIXES, CorpusInputError
from trainer.corpus.files import Item, add_common_arguments, run_build

SPLITS = ("train", "val", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder with one sub-folder per label (or train/val/test ones)")
    add_common_arguments(p)


def scan(root: Path) -> list[Item]:
    """Items of a label-folder tree; see the module docstring for the two layouts."""
    if not root.is_dir():
        raise CorpusInputError(f"{root}: no such directory")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise CorpusInputError(f"{root}: no label sub-folders")
    loose = sorted(f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise CorpusInputError(f"{root / loose[0]}: image outside a label folder")
    by_split = {d.name for d in subdirs} <= set(SPLITS)
    tops = [(d, d.name) for d in subdirs] if by_split else [(root, None)]
    items = []
    for top, split in tops:
        for label_dir in sorted(d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for f in sorted(label_dir.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    oid = f.relative_to(top).with_suffix("").as_posix()
                    items.append(Item(source=str(f), label=label_dir.name, object_id=oid, split=split,
                                      where=str(f)))
    return items


def main(args: argparse.Namespace) -> int:
    return run_build(scan(Path(args.dir)), args, source="folder")
