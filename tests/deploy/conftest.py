"""Fixtures of the deployment tests: the compose file, the base kustomization's objects and config."""
from __future__ import annotations

import pytest
import yaml

from tests.deploy.deployfiles import BASE, COMPOSE_DIR, COMPOSE_FILE, generated, kustomization, load_docs, read_env_file


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    return read_env_file(COMPOSE_DIR / "artroute.env")


@pytest.fixture(scope="module")
def base_objects() -> list[dict]:
    docs = []
    for res in kustomization(BASE)["resources"]:
        docs += load_docs(BASE / res)
    return docs


@pytest.fixture(scope="module")
def base_config() -> dict[str, str]:
    return generated(BASE, "ConfigMap")["artroute-config"]
