"""Reconcile the bucket with the outcomes: find image objects that have no decision and no dead letter, and
replay them. Loss becomes visible (artroute_unsettled_objects, zero in a healthy system) and heals itself,
whatever its cause: a store notification that never reached Kafka, a bug nobody foresaw.

Lists every image-like object (streams.worker.events.classify_object) under a prefix, skips those younger
than the grace period (their event may still be on its way), and looks each (bucket, key, eTag) up in an
`OutcomeSource`: the outcome topics on Kafka (`KafkaOutcomes`, read from the beginning until idle) or,
later, the routing ledger (anything with an `outcomes()` coroutine returning an `OutcomeIndex`). Unsettled
objects are replayed as MinIO-format events on the intake topic (`--dry-run` only counts them); decisions
are idempotent, so a replay of an object whose outcome is merely late costs one duplicate.

Runs as `python -m streams reconcile` (one pass, JSON report; `--interval` to repeat) or inside the worker
(ARTROUTE_RECONCILE_INTERVAL_S: on the consumer group's leader only), which exports the metrics.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from streams.contract.cli import UserError
from streams.worker.events import classify_object, to_s3_event_json
from streams.worker.publisher import Publisher
from streams.worker.settings import Settings
from streams.worker.store import make_client

log = logging.getLogger(__name__)

UNSETTLED = Gauge("artroute_unsettled_objects", "Image objects older than the grace period with no outcome, "
                  "as of the last reconcile run", ["bucket"])
REPLAYED = Counter("artroute_reconcile_replayed_total", "Objects the reconciler replayed", ["bucket"])
LAST_RUN = Gauge("artroute_reconcile_last_run_timestamp_seconds", "When the reconciler last finished", ["bucket"])


class OutcomeIndex:
    """A set of (bucket, key, eTag) kept as 8-byte digests: ~60 bytes per outcome instead of ~250 for the
    strings (a collision, about 1 in 10^10 for a million objects, would hide one unsettled object)."""

    def __init__(self, items: Iterable[tuple[str, str, str]] = ()):
        self._digests: set[int] = set()
        for item in items:
            self.add(*item)

    @staticmethod
    def _digest(bucket: str, key: str, etag: str) -> int:
        h = hashlib.blake2b(f"{bucket}\0{key}\0{etag.strip(chr(34))}".encode("utf-8", "surrogatepass"),
                            digest_size=8)
        return int.from_bytes(h.digest(), "big")

    def add(self, bucket: str, key: str, etag: str) -> None:
        self._digests.add(self._digest(bucket, key, etag))

    def __contains__(self, item: tuple[str, str, str]) -> bool:
        return self._digest(*item) in self._digests

    def __len__(self) -> int:
        return len(self._digests)


class OutcomeSource(Protocol):
    """Where outcomes are known: the Kafka topics today, the routing ledger once it exists."""

    async def outcomes(self) -> OutcomeIndex: ...


class KafkaOutcomes:
    """Every decision and dead letter naming an object, read from the topics' beginning until idle (end
    offsets are not used: the embedded broker reports them wrongly, docs/stack.md)."""

    def __init__(self, settings: Settings, idle_s: float = 3.0):
        self.settings, self.idle_s = settings, idle_s
        self.records = 0

    async def outcomes(self) -> OutcomeIndex:
        s = self.settings
        consumer = AIOKafkaConsumer(s.decisions_topic, s.deadletter_topic, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    **s.kafka_client_kwargs())
        index = OutcomeIndex()
        await consumer.start()
        try:
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < self.idle_s:
                batch = await consumer.getmany(timeout_ms=500, max_records=10000)
                for msgs in batch.values():
                    for m in msgs:
                        idle_since = time.monotonic()
                        self.records += 1
                        try:
                            doc = json.loads(m.value)
                        except ValueError:
                            continue
                        if isinstance(doc, dict) and doc.get("bucket") and doc.get("key"):
                            index.add(doc["bucket"], doc["key"], str(doc.get("etag") or ""))
        finally:
            await consumer.stop()
        return index


class ReconcileReport(BaseModel):
    bucket: str
    prefix: str
    grace_s: float
    listed: int = 0
    not_image: int = 0
    too_young: int = 0
    settled: int = 0
    unsettled: int = 0
    replayed: int = 0
    outcomes_known: int = 0
    unsettled_sample: list[str] = []
    list_s: float = 0.0
    outcomes_s: float = 0.0
    seconds: float = 0.0


async def reconcile(settings: Settings, source: OutcomeSource, bucket: str | None = None, prefix: str = "",
                    grace_s: float | None = None, dry_run: bool = False, rate: float = 0.0,
                    now: datetime | None = None) -> ReconcileReport:
    """One pass: list, compare, replay what is unsettled (unless dry_run); updates the metrics."""
    bucket = bucket or settings.bucket
    grace_s = settings.reconcile_grace_s if grace_s is None else grace_s
    report = ReconcileReport(bucket=bucket, prefix=prefix, grace_s=grace_s)
    t0 = time.monotonic()
    known = await source.outcomes()
    report.outcomes_known, report.outcomes_s = len(known), round(time.monotonic() - t0, 3)
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_s)
    t1 = time.monotonic()
    unsettled = await asyncio.to_thread(_compare, settings, bucket, prefix, known, cutoff, report)
    report.list_s = round(time.monotonic() - t1, 3)
    report.unsettled, report.unsettled_sample = len(unsettled), [o.object_name for o in unsettled[:20]]
    if unsettled and not dry_run:
        report.replayed = await _replay(settings, bucket, unsettled, rate)
    UNSETTLED.labels(bucket).set(report.unsettled)
    REPLAYED.labels(bucket).inc(report.replayed)
    LAST_RUN.labels(bucket).set(time.time())
    report.seconds = round(time.monotonic() - t0, 3)
    if report.unsettled:
        log.warning("reconcile s3://%s/%s: %d unsettled object(s), %d replayed (e.g. %s)", bucket, prefix,
                    report.unsettled, report.replayed, report.unsettled_sample[:3])
    return report


def _compare(settings: Settings, bucket: str, prefix: str, known: OutcomeIndex, cutoff: datetime,
             report: ReconcileReport) -> list:
    """List the bucket page by page (in a thread) and keep only the unsettled objects; counts into report."""
    unsettled = []
    for obj in make_client(settings).list_objects(bucket, prefix=prefix or None, recursive=True):
        report.listed += 1
        key, etag = obj.object_name, (obj.etag or "").strip('"')
        if classify_object(bucket, key, None) is not None:
            report.not_image += 1
        elif obj.last_modified is not None and obj.last_modified > cutoff:
            report.too_young += 1
        elif (bucket, key, etag) in known:
            report.settled += 1
        else:
            unsettled.append(obj)
    return unsettled


async def _replay(settings: Settings, bucket: str, objects: list, rate: float) -> int:
    interval, sent = (1.0 / rate if rate > 0 else 0.0), 0
    async with Publisher(settings) as pub:
        pending = []
        for obj in objects:
            key = obj.object_name
            value = to_s3_event_json(bucket, key, obj.size or 0, (obj.etag or "").strip('"'),
                                     version_id=obj.version_id if obj.version_id not in (None, "null") else None,
                                     event_time=obj.last_modified)
            pending.append(await pub.producer.send(settings.intake_topic, value=value, key=key.encode()))
            sent += 1
            if interval:
                await asyncio.sleep(interval)
        await asyncio.gather(*pending)
    return sent


# --- CLI: python -m streams reconcile --------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket to reconcile (default: ARTROUTE_BUCKET)")
    p.add_argument("--prefix", default="", help="only keys under this prefix")
    p.add_argument("--grace-s", type=float, help="replay only objects older than this many seconds "
                                                  "(default: ARTROUTE_RECONCILE_GRACE_S, 600)")
    p.add_argument("--dry-run", action="store_true", help="count unsettled objects, replay nothing")
    p.add_argument("--rate", type=float, default=0.0, help="replayed events per second at most (0 = no limit)")
    p.add_argument("--scan-idle-s", type=float, default=3.0,
                   help="stop reading the outcome topics after this many idle seconds (default 3)")
    p.add_argument("--interval", type=float, default=0.0, help="repeat every this many seconds (0: one pass)")


def main(args: argparse.Namespace) -> int:
    if args.rate < 0 or args.interval < 0 or (args.grace_s is not None and args.grace_s < 0):
        raise UserError("--rate, --interval and --grace-s must be >= 0")
    settings = Settings()

    async def run() -> int:
        while True:
            report = await reconcile(settings, KafkaOutcomes(settings, args.scan_idle_s), args.bucket,
                                     args.prefix, args.grace_s, args.dry_run, args.rate)
            print(report.model_dump_json(indent=2), flush=True)
            if not args.interval:
                return 0
            await asyncio.sleep(args.interval)

    return asyncio.run(run())
