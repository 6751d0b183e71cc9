"""A small real model with a routing rule and an unfamiliarity output: EfficientNet-Lite0 from the packaged
ImageNet weights, frozen, with a head trained briefly on a subset of the Egyptian MET photos in ../shared
(tests skip without it). About two CPU minutes on two cores. Its val top-1 is about 62 % (90 training
photos): the rule for 80 % auto-routes about a quarter of the val photos (top-1 >= 0.8)."""
from __future__ import annotations

import csv
from pathlib import Path

CLASSES = ("Jewellery", "Pottery", "Statuary")
PER_SPLIT = {"train": 30, "val": 16, "test": 6}
IMAGE_SIZE = 160


def egyptian_subset(shared_dir: Path, out: Path) -> tuple[Path, list[dict]]:
    """(corpus dir, the test rows) with PER_SPLIT photos per class and split, in the CSV's own splits."""
    from trainer.corpus.csvfile import read_items
    from trainer.corpus.files import build_corpus

    src = shared_dir / "data" / "egyptian-met"
    taken: dict[tuple[str, str], int] = {}
    rows = []
    with (src / "labels.csv").open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            key = (r["label"], r["split"])
            if r["label"] in CLASSES and taken.get(key, 0) < PER_SPLIT.get(r["split"], 0) and (src / r["file"]).is_file():
                taken[key] = taken.get(key, 0) + 1
                rows.append({"object_id": r["object_id"], "path": str(src / r["file"]), "label": r["label"],
                             "split": r["split"]})
    listing = out.parent / f"{out.name}.csv"
    with listing.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["object_id", "path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    build_corpus(read_items(listing), out, source="csv")
    return out, [r for r in rows if r["split"] == "test"]


def export_trusted_model(corpus: Path, repository: Path, model_name: str, run_dir: Path,
                         target_accuracy: float = 0.8) -> Path:
    """Train the head (frozen Lite0 backbone), evaluate, export with the rule and UNFAMILIAR__2: the version dir."""
    from trainer.export import quick_train_and_export

    return quick_train_and_export(corpus, repository, model_name, arch="tf_efficientnet_lite0",
                                  image_size=IMAGE_SIZE, epochs=4, freeze_epochs=4, pretrained=True,
                                  max_images=10_000, run_dir=run_dir, target_accuracy=target_accuracy)
