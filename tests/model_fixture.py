"""A small real model for the stack and worker tests: trained on a synthetic corpus with MET department
labels, exported by the trainer's own export into a Triton model repository."""
from __future__ import annotations

from pathlib import Path

DEPARTMENTS = ["Egyptian Art", "Asian Art", "European Paintings", "Arms and Armor"]


def build_model_repository(dest: Path, epochs: int = 2) -> Path:
    from trainer.export import quick_train_and_export
    from trainer.synthetic import write_corpus

    corpus = dest.parent / f"{dest.name}-corpus"
    write_corpus(corpus, DEPARTMENTS, per_class=40, seed=1)
    quick_train_and_export(corpus, dest, "artroute", arch="tiny", image_size=64, epochs=epochs,
                           run_dir=dest.parent / f"{dest.name}-run", seed=0)
    return dest
