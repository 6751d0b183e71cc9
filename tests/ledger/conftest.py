"""Ledger fixtures: a real PostgreSQL server (Debian's package, installed when missing and root) and a
fresh ledger database per test, on SQLite and on PostgreSQL (`ledger_url` is parametrised over both)."""
from __future__ import annotations

import uuid

import pytest

from streams.ledger.service import Ledger
from streams.stack.postgres import PostgresServer
from streams.stack.processes import StackError
from streams.worker.settings import Settings


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> PostgresServer:
    try:
        server = PostgresServer(tmp_path_factory.mktemp("postgres"), durable=False).start()
    except StackError as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    """An empty database: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres").create_database(f"ledger_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def ledger_settings(ledger_url) -> Settings:
    return Settings(ledger_url=ledger_url, audit_rate=0.0)


@pytest.fixture
def ledger(ledger_settings) -> Ledger:
    lg = Ledger.open(ledger_settings)
    yield lg
    lg.close()
