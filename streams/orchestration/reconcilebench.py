"""What a reconcile pass costs: N objects in the bucket, N outcomes on Kafka, one `reconcile --dry-run`, timed
and extrapolated linearly to 1,000,000 objects (both halves are linear: one listing page per 1,000 objects,
one outcome record per object). Starts Kafka and S3 only (no model needed); JSON to --out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from streams.orchestration.harness import Upload, upload_all
from streams.stack.stack import Stack, StackConfig
from streams.worker.publisher import Publisher
from streams.worker.reconcile import KafkaOutcomes, OutcomeIndex, reconcile
from streams.worker.settings import Settings

MILLION = 1_000_000


class ReconcileCost(BaseModel):
    objects: int
    outcome_records: int
    unsettled: int
    outcomes_s: float
    list_s: float
    total_s: float
    max_rss_mb: float
    index_bytes_per_outcome: float
    per_million: dict[str, float]


def index_bytes_per_outcome(n: int = 200_000) -> float:
    """Memory of the reconciler's outcome index per entry (tracemalloc, n synthetic outcomes)."""
    import tracemalloc

    tracemalloc.start()
    index = OutcomeIndex((("artworks", f"dept/{i:08d}.jpg", f"{i:032x}") for i in range(n)))
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return round(used / len(index), 1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", type=int, default=20000, help="objects (and outcomes) to measure with (default 20000)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/reconcile.json"), help="JSON result file")
    p.add_argument("--run-dir", type=Path, default=Path("runs/bench/reconcile-stack"))


async def _publish_outcomes(settings: Settings, uploads: list[Upload]) -> None:
    """One decision-shaped record per object (what the reconciler reads: bucket, key, etag)."""
    now = datetime.now(UTC).isoformat()
    async with Publisher(settings) as pub:
        for i in range(0, len(uploads), 1000):
            await pub.send_all([(settings.decisions_topic, u.key.encode(), json.dumps(
                {"schema_version": 1, "bucket": settings.bucket, "key": u.key, "etag": u.etag, "decided_at": now,
                 "department": "Egyptian Art", "confidence": 0.9}).encode()) for u in uploads[i:i + 1000]])


def main(args: argparse.Namespace) -> int:
    stack = Stack(StackConfig(run_dir=args.run_dir.resolve(), with_triton=False), Settings())
    try:
        stack.start()
        settings = stack.settings_for_clients()
        uploads = [Upload(f"reconcile-bench/{i:07d}.jpg", b"\xff\xd8\xff" + bytes(64)) for i in range(args.objects)]
        print(f"uploading {len(uploads)} objects ...", flush=True)
        upload_all(settings, uploads, threads=16)
        asyncio.run(_publish_outcomes(settings, uploads))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.monotonic()
        source = KafkaOutcomes(settings, idle_s=2.0)
        report = asyncio.run(reconcile(settings, source, prefix="reconcile-bench/", grace_s=0, dry_run=True))
        total = time.monotonic() - t0 - 2.0  # minus the idle wait that ends the topic read
        rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, before) / 1024
    finally:
        stack.stop()
    scale, per_entry = MILLION / args.objects, index_bytes_per_outcome()
    result = ReconcileCost(objects=args.objects, outcome_records=source.records, unsettled=report.unsettled,
                           outcomes_s=round(report.outcomes_s - 2.0, 2), list_s=report.list_s, total_s=round(total, 2),
                           max_rss_mb=round(rss, 1), index_bytes_per_outcome=per_entry,
                           per_million={"index_mb": round(per_entry * MILLION / 2**20, 1), "outcomes_s": round((report.outcomes_s - 2.0) * scale, 1),
                                        "list_s": round(report.list_s * scale, 1), "total_s": round(total * scale, 1),
                                        "list_requests": MILLION / 1000, "outcome_records": MILLION})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(result.model_dump_json(indent=2))
    print(result.model_dump_json(indent=2))
    return 0
