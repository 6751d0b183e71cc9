"""Taxonomies: which classes a model predicts, and which manifest labels feed each class.

A taxonomy is a YAML file (see streams/contract/taxonomies/): a name and an ordered list of classes, each listing
the manifest labels it merges and the institution's department ids it stands for. Labels that no class
lists are dropped. ``corpus`` is the taxonomy made from a corpus' own labels (one class per label,
sorted), for institutions with their own vocabulary; its department ids come from the corpus rows.
The department ids travel with the exported model (`streams.contract.model.Label`) into every decision.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from streams.contract.cli import UserError

TAXONOMY_DIR = Path(__file__).with_name("taxonomies")
CORPUS = "corpus"


class TaxonomyError(UserError):
    """A taxonomy that cannot be found or parsed; the message is one line."""


class TaxonomyClass(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    labels: list[str]
    department_ids: list[int] = []
    display_name: str | None = None   # the institution's department list's name for it, where not `name`


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    classes: list[TaxonomyClass]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def label_to_index(self) -> dict[str, int]:
        """Manifest label -> class index; labels not listed are absent (dropped)."""
        out: dict[str, int] = {}
        for i, c in enumerate(self.classes):
            for label in c.labels:
                if label in out:
                    raise TaxonomyError(f"taxonomy {self.name}: label {label!r} is in two classes")
                out[label] = i
        return out

    def without(self, drop: Iterable[str]) -> Taxonomy:
        """The same taxonomy with some labels dropped (classes left with no label disappear)."""
        drop = set(drop)
        classes = [c.model_copy(update={"labels": [lb for lb in c.labels if lb not in drop]})
                   for c in self.classes]
        return self.model_copy(update={"classes": [c for c in classes if c.labels]})


def available() -> list[str]:
    return sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml")) + [CORPUS]


def from_labels(labels: Iterable[str], name: str = CORPUS,
                department_ids: Mapping[str, Iterable[int]] | None = None) -> Taxonomy:
    """One class per distinct label, sorted by name; `department_ids`: label -> its ids, where known."""
    ids = department_ids or {}
    return Taxonomy(name=name, description="labels straight from the corpus",
                    classes=[TaxonomyClass(name=lb, labels=[lb], department_ids=sorted(ids.get(lb, ())))
                             for lb in sorted(set(labels))])


def agreed_department_ids(rows: Iterable[tuple[str, int | None]]) -> dict[str, list[int]]:
    """label -> [department id] from (label, department id) pairs, for the labels whose every row names
    the same id; labels with a row without an id, or rows that disagree, get none."""
    seen: dict[str, set[int | None]] = {}
    for label, dept in rows:
        seen.setdefault(label, set()).add(dept)
    return {label: [next(iter(ids))] for label, ids in seen.items() if len(ids) == 1 and None not in ids}


def load_taxonomy(name_or_path: str, corpus_labels: Iterable[str] = (),
                  corpus_department_ids: Mapping[str, Iterable[int]] | None = None) -> Taxonomy:
    """A built-in name (met-19, met-6), a YAML path, or ``corpus`` (needs the corpus' labels, and takes
    their department ids: `agreed_department_ids`)."""
    if name_or_path == CORPUS:
        tax = from_labels(corpus_labels, department_ids=corpus_department_ids)
        if not tax.classes:
            raise TaxonomyError("taxonomy corpus: the corpus has no labels")
        return tax
    path = Path(name_or_path)
    if not path.suffix:
        path = TAXONOMY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TaxonomyError(f"unknown taxonomy {name_or_path!r}: not a file; built-in: {', '.join(available())}")
    try:
        tax = Taxonomy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValidationError) as e:
        raise TaxonomyError(f"{path}: not a taxonomy: {str(e).splitlines()[0]}") from None
    tax.label_to_index()  # validates: no label in two classes
    return tax
