"""Run the routing worker: consume intake events, route every image, publish decisions.

All configuration comes from ARTROUTE_* environment variables (`python -m streams settings` lists
them); on a machine running `python -m streams stack up`, the stack's endpoints file fills in the
addresses. Run as many workers as the intake topic has partitions; they share the consumer group.
Stops cleanly on SIGTERM / Ctrl-C (in-flight batches finish and are published first).
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import sys

from pydantic import ValidationError

from streams.contract.cli import invalid_option
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


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def bound_malloc(threshold: int = 2**20) -> bool:
    """Serve allocations of `threshold` bytes and more from mmap, and give them back when freed.

    glibc raises its mmap threshold after the first large free (up to 32 MiB), after which the 16 MiB blocks
    of a decoded image come from per-thread heaps that are not returned to the system: two decode threads
    took a worker to 1.5 GB for 0.55 GB of images alive at once (tests/test_worker_memory.py). A fixed
    threshold (as MALLOC_MMAP_THRESHOLD_ would set) turns that off. Returns False where there is no glibc.
    """
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", help="override ARTROUTE_LOG_LEVEL")


def main(args: argparse.Namespace) -> int:
    import faust

    from streams.worker.app import create_app

    bound_malloc()

    try:
        settings = Settings()
    except ValidationError as e:
        raise invalid_option(e, prefix="ARTROUTE_") from None
    if args.log_level:
        settings = settings.model_copy(update={"log_level": args.log_level})
    loop = asyncio.new_event_loop()  # not asyncio.run: that unsets the main thread's loop faust starts from
    try:
        loop.run_until_complete(preflight(settings))
    finally:
        loop.close()
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    setup_logging(settings)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if app.router.fatal is not None:  # the model turned out unusable once Triton came up
            raise app.router.fatal from None
        raise
    return 0


async def preflight(settings: Settings) -> None:
    """Check the served model against the settings before joining the consumer group (one line and exit 2
    on a mismatch); when Triton is not up yet the worker starts anyway and checks once it is."""
    from streams.worker.inference import ModelUnavailable, TritonModel, check_served

    model = TritonModel(settings.triton_url, settings.model_name, settings.model_version)
    try:
        served = await model.served(timeout_s=5.0)
    except ModelUnavailable:
        return
    finally:
        await model.close()
    check_served(served, settings.max_batch)
