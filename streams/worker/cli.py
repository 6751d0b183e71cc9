"""Run the routing worker: consume intake events, route every image, publish decisions.

All configuration comes from ARTROUTE_* environment variables (`python -m streams settings` lists
them); on a machine running `python -m streams stack up`, the stack's endpoints file fills in the
addresses. Run as many workers as the intake topic has partitions; they share the consumer group.
Stops cleanly on SIGTERM / Ctrl-C (in-flight batches finish and are published first).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from pydantic import ValidationError

from streams.worker.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", help="override ARTROUTE_LOG_LEVEL")


def main(args: argparse.Namespace) -> int:
    import faust

    from streams.worker.app import create_app

    try:
        settings = Settings()
    except ValidationError as e:
        err = e.errors()[0]
        print(f"worker: error: ARTROUTE_{str(err['loc'][0]).upper()}: {err['msg']}", file=sys.stderr)
        return 2
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    setup_logging(settings)
    worker.execute_from_commandline()
    return 0
