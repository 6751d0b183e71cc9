"""The built-in MET taxonomies accept every label a MET harvest writes, under every name a department has."""
from __future__ import annotations

import json

import pytest

from streams.worker.decisions import met_department_id
from trainer.metapi.models import DEPARTMENT_ALIASES, DEPARTMENT_LABELS
from streams.contract.taxonomy import load_taxonomy


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


def test_met19_classes_are_the_departments_and_routing_resolves_their_ids(shared_dir):
    tax = load_taxonomy("met-19")
    served = {c.name: met_department_id(c.name) for c in tax.classes}
    assert sorted(served.values()) == sorted(d["departmentId"] for d in json.loads(
        (shared_dir / "data/met-api/departments.json").read_text())["departments"])
    assert all(served[c.name] == c.department_ids[0] for c in tax.classes)
