"""Fixtures for the corpus tests: the offline fake MET API as a real aiohttp server on 127.0.0.1."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trainer.metapi.client import ClientConfig
from trainer.metapi.fake import FakeMetApi, Faults
from trainer.metapi.records import build_records

REPO_ROOT = Path(__file__).resolve().parents[2]
MET_API_DIR = REPO_ROOT.parent / "shared" / "data" / "met-api"


@pytest.fixture(scope="session")
def fake_records() -> dict:
    """Real records from ../shared when present (topped up to 40 per department), else generated ones."""
    return build_records(MET_API_DIR if MET_API_DIR.is_dir() else None, min_per_department=40)


@pytest.fixture
async def fake_api(fake_records):
    """A started fake with the public API's 80 requests/s limit and no faults; tests change .faults."""
    async with FakeMetApi(fake_records, faults=Faults(rate_limit=80)) as fake:
        yield fake


def client_config(fake: FakeMetApi, **kw) -> ClientConfig:
    """Fast-retrying client settings for tests, pointed at a fake."""
    return ClientConfig(base_url=fake.base_url, **{"backoff_s": 0.02, "backoff_cap_s": 0.5, **kw})


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]
