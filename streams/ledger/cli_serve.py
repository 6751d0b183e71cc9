"""Serve the ledger's HTTP/JSON API (FastAPI): review queue, verdicts, search, history, statistics,
dead letters, export, object images; /metrics (live accuracy as Prometheus gauges) and /healthz.

Listens on ARTROUTE_LEDGER_API_HOST:ARTROUTE_LEDGER_API_PORT (127.0.0.1:8300); with
ARTROUTE_LEDGER_API_TOKEN set every /api route needs `Authorization: Bearer <token>`. Verdicts it
records are published by `python -m streams ledger run` (the outbox). Routes: docs/ledger.md, or /docs.
"""
from __future__ import annotations

import argparse

from streams.ledger.runner import main_with


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--with-ingest", action="store_true",
                   help="also ingest and publish verdicts in this process (= ledger run --api)")


def main(args: argparse.Namespace) -> int:
    return main_with(consume=args.with_ingest, api=True)
