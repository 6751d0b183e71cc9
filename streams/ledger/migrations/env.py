"""Alembic environment of the ledger: runs against the engine `streams.ledger.db.migrate` passes in
(`config.attributes["engine"]`), else against ARTROUTE_LEDGER_URL (for `alembic` used by hand).

On PostgreSQL every upgrade first takes a transaction-level advisory lock, so ledger processes starting
at the same time migrate one after the other; on SQLite the upgrade's transaction is BEGIN IMMEDIATE.
"""
from __future__ import annotations

from alembic import context

from streams.ledger.db import PG_LOCK_ID, make_engine
from streams.ledger.models import Base

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        from streams.worker.settings import Settings

        s = Settings()
        engine = make_engine(s.ledger_url, s.ledger_password.get_secret_value() if s.ledger_password else None)
    with engine.connect().execution_options(ledger_write=True) as conn:
        context.configure(connection=conn, target_metadata=Base.metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_LOCK_ID})")
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the ledger migrates online only: python -m streams ledger migrate")
run_migrations_online()
