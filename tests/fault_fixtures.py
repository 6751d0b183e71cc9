"""Workers of their own for the fault tests (tests/test_worker_*.py); hostile inputs come from
streams.orchestration.faults, which the fault bench uses too.

A test that kills, starves or cuts off a worker gets one of its own (`own_worker`): its own intake topic with
one partition and its own consumer group, so it can neither disturb the session's worker nor be helped by
it. Objects whose events such a test publishes itself are uploaded under a name and content type the intake
ignores (`QUIET_TYPE`), so the filer's own events for them (on the session intake topic) decide nothing.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.orchestration.faults import SCAN_SIZE, png_header, scan16_png
from streams.orchestration.harness import Upload, WorkerProcess, upload_all
from streams.stack.processes import free_port
from streams.stack.servers import create_topics
from streams.worker.events import to_s3_event_json
from streams.worker.publisher import Publisher
from tests.worker_fixtures import MAX_OBJECT_BYTES

QUIET_TYPE = "application/x-artroute-test"  # with a ".bin" name: the intake ignores it (not an image)


@pytest.fixture(scope="session")
def slow_scan() -> bytes:
    """A ~120 MP 16-bit RGBA scan (4 MB) that takes 7 s or more to decode on 2 cores."""
    return scan16_png(*SCAN_SIZE, colour=True)


@pytest.fixture
def own_worker(stack, worker_env, tmp_path):
    """Async factory: start a worker with its own one-partition intake topic and group (extra env on top);
    returns (worker, intake topic). Workers still running at the end are killed."""
    started: list[WorkerProcess] = []

    async def start(name: str, **env: str) -> tuple[WorkerProcess, str]:
        topic = env.pop("ARTROUTE_INTAKE_TOPIC", f"test.{name}.{uuid.uuid4().hex[:6]}")
        await create_topics(stack.endpoints.kafka_brokers, {topic: 1})
        full = {**worker_env, "ARTROUTE_INTAKE_TOPIC": topic, "ARTROUTE_CONSUMER_GROUP": f"{topic}.group",
                "ARTROUTE_METRICS_PORT": str(free_port()), **env}
        w = WorkerProcess(full, log_path=tmp_path / f"{name}-worker.log").start()
        started.append(w)
        return w, topic

    yield start
    for w in started:
        w.kill()


def upload_quietly(settings, objects: dict[str, bytes]) -> dict[str, Upload]:
    """Upload objects so that the store's own events for them are ignored (see QUIET_TYPE)."""
    ups = upload_all(settings, [Upload(k, v, QUIET_TYPE) for k, v in objects.items()])
    return {u.key: u for u in ups}


async def publish_events(settings, topic: str, uploads: list[Upload], content_type: str = "image/png") -> None:
    """One MinIO-format event per upload on `topic` (partition 0), as an image of `content_type`."""
    async with Publisher(settings) as pub:
        await pub.send_all([(topic, u.key.encode(), to_s3_event_json(settings.bucket, u.key, len(u.data), u.etag,
                                                                      content_type=content_type))
                            for u in uploads])


async def publish_raw(settings, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    async with Publisher(settings) as pub:
        await pub.send_all([(topic, k, v) for k, v in values])


@contextmanager
def log_tail_on_failure(path: Path):
    try:
        yield
    except BaseException:
        if path.exists():
            print("worker log tail:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        raise


__all__ = ["MAX_OBJECT_BYTES", "QUIET_TYPE", "SCAN_SIZE", "own_worker", "png_header", "publish_events",
           "publish_raw", "scan16_png", "slow_scan", "upload_quietly"]
