"""Run the routing ledger: ingest every decision, review item and dead letter into the ledger database,
and publish recorded verdicts to the verdicts topic (transactional outbox).

Its own consumer group (ARTROUTE_LEDGER_CONSUMER_GROUP) on ARTROUTE_DECISIONS_TOPIC, _REVIEW_TOPIC and
_DEADLETTER_TOPIC; database ARTROUTE_LEDGER_URL (SQLite file by default, PostgreSQL in production),
migrated to the newest schema at start. With --api it also serves the HTTP API (ledger serve) on
ARTROUTE_LEDGER_API_HOST:ARTROUTE_LEDGER_API_PORT. /metrics and /healthz on ARTROUTE_METRICS_PORT when
set. Stops cleanly on SIGTERM / Ctrl-C. See docs/ledger.md.
"""
from __future__ import annotations

import argparse

from streams.ledger.runner import main_with


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", action="store_true", help="also serve the HTTP API (default: ingest and outbox only)")


def main(args: argparse.Namespace) -> int:
    return main_with(consume=True, api=args.api)
