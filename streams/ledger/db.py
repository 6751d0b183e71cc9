"""The ledger database: one engine per URL (SQLite file embedded, PostgreSQL in production) and Alembic
migrations that run from inside the package (`python -m streams ledger migrate`, or at every start).

SQLite: WAL journal (readers never wait for the writer), a busy timeout, and write transactions that
start with ``BEGIN IMMEDIATE`` (`write()`), so two processes writing the same file queue up instead of
failing with "database is locked" halfway through a transaction. PostgreSQL: psycopg 3; the password
comes from ARTROUTE_LEDGER_PASSWORD (a Secret), not from the URL in a ConfigMap.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from streams.contract.cli import UserError
from streams.ledger.bulk import json_serializer

MIGRATIONS = Path(__file__).with_name("migrations")
PG_LOCK_ID = 0x61727472  # "artr": serialises migrations of concurrent starters on PostgreSQL


class LedgerDatabaseError(UserError):
    """A ledger URL that cannot be used (bad URL, unknown database kind)."""


def database_url(url: str, password: str | None = None) -> URL:
    """The SQLAlchemy URL: `postgresql://` means psycopg 3, the password is set from the secret."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise LedgerDatabaseError(f"ARTROUTE_LEDGER_URL {url!r} is not a database URL") from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerDatabaseError(f"ARTROUTE_LEDGER_URL {u.render_as_string()!r}: the ledger runs on "
                                  "sqlite:///FILE or postgresql+psycopg://USER@HOST/DB")
    if password:
        u = u.set(password=password)
    return u


def make_engine(url: str | URL, password: str | None = None, pool_size: int = 5) -> Engine:
    u = url if isinstance(url, URL) else database_url(url, password)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": 60}, json_serializer=json_serializer)
        _sqlite_setup(engine)
        return engine
    return create_engine(u, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         json_serializer=json_serializer)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=60000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")


@contextlib.contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction (committed on success, rolled back on error)."""
    with engine.connect().execution_options(ledger_write=True) as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the schema to `revision`; returns the revision the database is at afterwards."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def has_tables(engine: Engine) -> bool:
    return inspect(engine).has_table("objects")
