"""The built-in MET taxonomies accept every label a MET harvest writes, under every name a department has."""
from __future__ import annotations

import json

import pytest

from streams.contract.taxonomy import agreed_department_ids, load_taxonomy
from trainer.metapi.models import DEPARTMENT_ALIASES, DEPARTMENT_LABELS


@pytest.mark.parametrize("name,n_classes", [("met-19", 19), ("met-6", 6)])
def test_every_met_department_name_maps_to_exactly_one_class(name, n_classes):
    tax = load_taxonomy(name)
    index = tax.label_to_index()
    assert len(tax.classes) == n_classes
    for dept_id, label in DEPARTMENT_LABELS.items():  # what `corpus met` writes
        assert label in index, f"{name}: harvest label {label!r} (department {dept_id}) would be dropped"
        assert dept_id in tax.classes[index[label]].department_ids
    for alias, dept_id in DEPARTMENT_ALIASES.items():  # /departments display names and newer names
        if alias in index:
            assert dept_id in tax.classes[index[alias]].department_ids


def test_met19_classes_are_the_real_departments(shared_dir):
    api = json.loads((shared_dir / "data/met-api/departments.json").read_text())["departments"]
    tax = load_taxonomy("met-19")
    assert [c.department_ids for c in tax.classes] == [[d["departmentId"]] for d in api]
    index = tax.label_to_index()
    for d in api:  # every display name routes to its own department
        assert tax.classes[index[d["displayName"]]].department_ids == [d["departmentId"]]


def test_corpus_taxonomy_takes_department_ids_the_rows_agree_on():
    rows = [("Egyptian Art", 10), ("Egyptian Art", 10), ("Vases", None), ("Mixed", 3), ("Mixed", 4),
            ("Partly", 5), ("Partly", None)]
    ids = agreed_department_ids(rows)
    assert ids == {"Egyptian Art": [10]}
    tax = load_taxonomy("corpus", (label for label, _ in rows), ids)
    assert {c.name: c.department_ids for c in tax.classes} == {"Egyptian Art": [10], "Mixed": [], "Partly": [],
                                                              "Vases": []}
