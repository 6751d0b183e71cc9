"""Driving the pipeline from outside, as a museum's systems would: upload objects, run workers, and
collect the outcomes from Kafka. Used by `demo`, `bench` and the tests, so all three measure the same way.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from streams.worker.settings import Settings, endpoints_file
from streams.worker.store import make_client


@dataclass
class Upload:
    key: str
    data: bytes
    content_type: str = "image/jpeg"
    uploaded_at: float = 0.0  # epoch seconds when the store confirmed the PUT
    etag: str = ""


def upload_all(settings: Settings, uploads: list[Upload], bucket: str | None = None, threads: int = 8,
               rate: float = 0.0) -> list[Upload]:
    """PUT every object (optionally throttled to `rate` per second); records each upload's time and etag."""
    client = make_client(settings, pool_size=threads)
    bucket = bucket or settings.bucket
    start = time.monotonic()

    def put(i_u: tuple[int, Upload]) -> Upload:
        i, u = i_u
        if rate > 0:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        r = client.put_object(bucket, u.key, io.BytesIO(u.data), len(u.data), content_type=u.content_type)
        u.uploaded_at, u.etag = time.time(), (r.etag or "").strip('"')
        return u

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(put, enumerate(uploads)))


@dataclass
class Outcomes:
    decisions: dict[str, list[dict]] = field(default_factory=dict)     # key -> decisions (dupes kept)
    review: dict[str, list[dict]] = field(default_factory=dict)
    dead_letters: dict[str, list[dict]] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)         # key -> first outcome's broker time

    def settled(self, key: str) -> bool:
        return key in self.decisions or key in self.dead_letters


async def collect_outcomes(settings: Settings, keys: Iterable[str], timeout: float = 120.0,
                           linger: float = 1.0, stall: float | None = None, at_least: int | None = None) -> Outcomes:
    """Read the decision, review and dead-letter topics from the beginning until every key (or `at_least`
    of them) has an outcome (or timeout), then `linger` seconds more to catch duplicates. Only the given keys
    are kept. With `stall`, give up early once no new outcome for a wanted key arrived for that many seconds."""
    wanted = set(keys)
    enough = len(wanted) if at_least is None else min(at_least, len(wanted))
    topics = {settings.decisions_topic: "decisions", settings.review_topic: "review",
              settings.deadletter_topic: "dead_letters"}
    out = Outcomes()
    consumer = AIOKafkaConsumer(*topics, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
                                **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        done_at, progress_at = None, time.monotonic()
        while time.monotonic() < deadline and (done_at is None or time.monotonic() < done_at + linger):
            if stall is not None and done_at is None and time.monotonic() - progress_at > stall:
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, msgs in batch.items():
                for m in msgs:
                    try:
                        doc = json.loads(m.value)
                    except ValueError:
                        continue
                    key = doc.get("key")  # decisions and dead letters both carry the object key
                    if key not in wanted:
                        continue
                    getattr(out, topics[tp.topic]).setdefault(key, []).append(doc)
                    progress_at = time.monotonic()
                    if topics[tp.topic] != "review":
                        out.received_at.setdefault(key, m.timestamp / 1000.0)
            if done_at is None and sum(out.settled(k) for k in wanted) >= enough:
                done_at = time.monotonic()
    finally:
        await consumer.stop()
    return out


class WorkerProcess:
    """`python -m streams worker` as a subprocess, pointed at the stack's endpoints file."""
    ARGS: tuple[str, ...] = ("worker",)

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None):
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.env.setdefault("ARTROUTE_STACK_FILE", str(endpoints_file()))
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "streams", *self.ARGS], env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final commit (what a crash looks like)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LedgerProcess(WorkerProcess):
    """`python -m streams ledger run --api` (ingest, verdict outbox, HTTP API) as a subprocess."""
    ARGS = ("ledger", "run", "--api")


def percentile(values: list[float], q: float, digits: int = 3) -> float | None:
    """The q-quantile (nearest rank) of values, rounded; None for no values."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], digits)


def wait_for(predicate, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def warm_up(settings: Settings, timeout: float = 120.0) -> float:
    """Upload one probe image and wait for its decision: returns seconds until the worker answered
    (group join, model info, first inference). Demo and bench time their uploads after this."""
    import uuid

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buf, "JPEG")
    t0 = time.monotonic()
    [probe] = upload_all(settings, [Upload(f"artroute-warmup/{uuid.uuid4().hex}.jpg", buf.getvalue())])
    out = asyncio.run(collect_outcomes(settings, [probe.key], timeout=timeout, linger=0))
    if probe.key not in out.decisions:
        raise RuntimeError(f"the worker did not decide a probe image within {timeout:.0f}s")
    return time.monotonic() - t0
