"""Back-catalog replay: publish an intake event (MinIO JSON) for every image in a bucket.

Lists the bucket (optionally under a prefix) in key order and publishes one `s3:ObjectCreated:Put` event
per image object to the intake topic, throttled to --rate events/s, exactly as the store would have.
Resumable: the last key whose event the broker acknowledged is checkpointed in a state file, and a rerun
continues after it (--restart starts over). --missing-only first reads the decision and dead-letter topics
and replays only objects (bucket, key, etag) that have no outcome yet: reconciliation for events a store
failed to deliver. Duplicates are harmless: a decision's id is deterministic.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

from aiokafka.errors import KafkaError
from minio.error import S3Error
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from streams.contract.cli import UserError, invalid_option
from streams.worker.events import classify_object, to_s3_event_json
from streams.worker.publisher import Publisher
from streams.worker.reconcile import KafkaOutcomes, OutcomeIndex
from streams.worker.settings import DEFAULT_STATE_DIR, Settings
from streams.worker.store import make_client


class ReplaySummary(BaseModel):
    bucket: str
    prefix: str
    listed: int = 0
    published: int = 0
    skipped_not_image: int = 0
    skipped_decided: int = 0
    resumed_after: str | None = None
    seconds: float = 0.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket to replay (default: ARTROUTE_BUCKET)")
    p.add_argument("--prefix", default="", help="only keys under this prefix")
    p.add_argument("--rate", type=float, default=50.0, help="events per second at most (default 50; 0 = no limit)")
    p.add_argument("--missing-only", action="store_true",
                   help="replay only objects with no decision and no dead letter yet")
    p.add_argument("--state", type=Path, help="checkpoint file (default .artroute/replay/<bucket>-<prefix>.json)")
    p.add_argument("--restart", action="store_true", help="ignore the checkpoint and start from the first key")
    p.add_argument("--scan-idle-s", type=float, default=3.0,
                   help="--missing-only: stop reading outcome topics after this many idle seconds (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def state_path(bucket: str, prefix: str) -> Path:
    tag = hashlib.sha256(prefix.encode()).hexdigest()[:10]
    return DEFAULT_STATE_DIR / "replay" / f"{bucket}-{tag}.json"


async def replay(settings: Settings, bucket: str, prefix: str = "", rate: float = 50.0, missing_only: bool = False,
                 state: Path | None = None, restart: bool = False, progress: bool = True,
                 scan_idle_s: float = 3.0) -> ReplaySummary:
    state = state or state_path(bucket, prefix)
    summary = ReplaySummary(bucket=bucket, prefix=prefix)
    start_after = None
    if state.is_file() and not restart:
        start_after = json.loads(state.read_text()).get("last_key")
        summary.resumed_after = start_after
    decided = await KafkaOutcomes(settings, scan_idle_s).outcomes() if missing_only else OutcomeIndex()
    client = make_client(settings)
    t0 = time.monotonic()
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    bar = tqdm(desc=f"replay s3://{bucket}/{prefix}", unit="obj", disable=not progress, file=sys.stderr)
    async with Publisher(settings) as publisher:
        objects = client.list_objects(bucket, prefix=prefix or None, recursive=True, start_after=start_after)
        pending: list = []
        last_key = start_after
        for obj in objects:
            summary.listed += 1
            bar.update(1)
            key, etag = obj.object_name, (obj.etag or "").strip('"')
            if classify_object(bucket, key, None) is not None:
                summary.skipped_not_image += 1
                continue
            if (bucket, key, etag) in decided:
                summary.skipped_decided += 1
                continue
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - 1.0)
            value = to_s3_event_json(bucket, key, obj.size or 0, etag, version_id=obj.version_id,
                                     event_time=obj.last_modified)
            pending.append(await publisher.producer.send(settings.intake_topic, value=value, key=key.encode()))
            summary.published += 1
            last_key = key
            if len(pending) >= 100:
                await _checkpoint(pending, state, last_key)
        await _checkpoint(pending, state, last_key)
    bar.close()
    summary.seconds = round(time.monotonic() - t0, 3)
    return summary


async def _checkpoint(pending: list, state: Path, last_key: str | None) -> None:
    """Wait for the broker's acks, then record the last key: a rerun never skips an unpublished object."""
    if pending:
        await asyncio.gather(*pending)
        pending.clear()
    if last_key is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"last_key": last_key, "at": time.time()}))


class ReplayError(UserError):
    """The replay could not run: bad flags, or the store or the broker failed (one line for the operator)."""


def main(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValidationError as e:
        raise invalid_option(e, prefix="ARTROUTE_") from None
    bucket = args.bucket or settings.bucket
    if args.rate < 0:
        raise ReplayError("--rate must be >= 0")
    try:
        summary = asyncio.run(replay(settings, bucket, args.prefix, args.rate, args.missing_only, args.state,
                                     args.restart, not args.no_progress, args.scan_idle_s))
    except (KafkaError, S3Error, OSError) as e:  # the broker or the store is away or refuses
        raise ReplayError(f"{type(e).__name__}: {e}") from None
    print(summary.model_dump_json(indent=2))
    return 0
