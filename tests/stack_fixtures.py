"""Session-scoped fixtures around the real embedded stack: the same `Stack` code as `stack up`."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.worker.settings import Settings
from streams.stack.stack import Stack, StackConfig


@pytest.fixture(scope="session")
def served_model_repository(tmp_path_factory) -> Path:
    """A model repository with one small exported model (labels from a synthetic corpus)."""
    from tests.model_fixture import build_model_repository

    return build_model_repository(tmp_path_factory.mktemp("model_repository"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory, served_model_repository) -> Stack:
    run_dir = tmp_path_factory.mktemp("stack")
    os.environ["ARTROUTE_STACK_FILE"] = str(run_dir / "endpoints.json")
    settings = Settings(intake_topic="artroute.intake", kafka_session_timeout_s=4.0)
    s = Stack(StackConfig(run_dir=run_dir, model_repository=served_model_repository), settings)
    s.start()
    s.write_endpoints()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def stack_settings(stack) -> Settings:
    """Settings pointing at the test stack (what a worker would read from the endpoints file)."""
    return stack.settings_for_clients()
