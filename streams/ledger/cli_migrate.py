"""Create or upgrade the ledger database schema (Alembic migrations shipped in streams/ledger/migrations).

Every ledger process also upgrades at start; run this first when several start at once or to check
the schema: it prints the revision the database is at. ARTROUTE_LEDGER_URL names the database.
"""
from __future__ import annotations

import argparse

from streams.ledger.db import current_revision, head_revision, make_engine, migrate
from streams.ledger.runner import load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", default="head", help="target revision (default: head, the newest)")
    p.add_argument("--check", action="store_true", help="only print the current and newest revision")


def main(args: argparse.Namespace) -> int:
    s = load_settings()
    engine = make_engine(s.ledger_url, s.ledger_password.get_secret_value() if s.ledger_password else None)
    where = engine.url.render_as_string(hide_password=True)
    if args.check:
        current = current_revision(engine)
        print(f"{where}: at {current or 'nothing (empty)'}, newest {head_revision()}")
        return 0 if current == head_revision() else 1
    print(f"{where}: at {migrate(engine, args.revision)}")
    return 0
