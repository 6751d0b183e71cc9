"""A small real model for the stack and worker tests: trained on a synthetic corpus with MET department
labels, exported by the trainer's own export into a Triton model repository."""
from __future__ import annotations

from pathlib import Path

DEPARTMENTS = ["Egyptian Art", "Asian Art", "European Paintings", "Arms and Armor"]


def _tag(dest: Path, model_name: str, labels: list[str]) -> str:
    return f"{dest.name}-{model_name}-{'-'.join(lb.split()[0] for lb in labels)}"


def training_corpus(dest: Path, model_name: str = "artroute", labels: list[str] = DEPARTMENTS) -> Path:
    """The synthetic corpus `build_model_repository(dest, ...)` trained that model on."""
    return dest.parent / f"{_tag(dest, model_name, labels)}-corpus"


def build_model_repository(dest: Path, epochs: int = 2, model_name: str = "artroute",
                           labels: list[str] = DEPARTMENTS) -> Path:
    """Export into dest/<model_name> (the next version); the corpus rows carry the MET department ids,
    so the model's contract does too (taxonomy `corpus`: ids from the rows)."""
    from trainer.export import quick_train_and_export
    from trainer.metapi.models import department_id
    from trainer.synthetic import write_corpus

    tag = _tag(dest, model_name, labels)
    corpus = training_corpus(dest, model_name, labels)
    write_corpus(corpus, labels, per_class=40, seed=1, department_ids={lb: department_id(lb) for lb in labels})
    quick_train_and_export(corpus, dest, model_name, arch="tiny", image_size=64, epochs=epochs,
                           run_dir=dest.parent / f"{tag}-run", seed=0)
    return dest
