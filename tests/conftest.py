"""Fixtures shared by the whole suite. Stack fixtures (real servers) live in tests/stack_fixtures.py."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly when it is absent."""
    if not (SHARED_DIR / "data").is_dir():
        pytest.skip("../shared is not beside this checkout")
    return SHARED_DIR


from tests.stack_fixtures import served_model_repository, stack, stack_settings  # noqa: E402,F401
from tests.worker_fixtures import worker, worker_env  # noqa: E402,F401
from tests.fault_fixtures import own_worker, slow_scan  # noqa: E402,F401
