"""`stack up --durable`: the broker keeps its data on an S3 store of its own, so a broker restart mid-stream
loses no event, no outcome and no committed offset. A durable stack of its own (Kafka and both stores; the
worker uses the session stack's Triton)."""
from __future__ import annotations

import asyncio

import pytest

from streams.orchestration.harness import Upload, WorkerProcess, collect_outcomes, upload_all
from streams.stack.processes import free_port
from streams.stack.stack import Stack, StackConfig
from streams.worker.settings import Settings
from tests.fault_fixtures import log_tail_on_failure
from tests.worker_fixtures import jpeg

pytestmark = pytest.mark.stack


@pytest.fixture
def durable_stack(tmp_path):
    s = Stack(StackConfig(run_dir=tmp_path / "durable", durable=True, with_triton=False),
              Settings(kafka_session_timeout_s=4.0))
    s.start()
    s.write_endpoints(tmp_path / "durable" / "endpoints.json")
    yield s
    s.stop()


async def test_broker_restart_mid_stream_loses_nothing(durable_stack, stack, tmp_path):
    settings = durable_stack.settings_for_clients()
    env = {"ARTROUTE_STACK_FILE": str(tmp_path / "durable" / "endpoints.json"),
           "ARTROUTE_TRITON_URL": stack.endpoints.triton_url, "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4",
           "ARTROUTE_MAX_BATCH": "8", "ARTROUTE_METRICS_PORT": str(free_port())}
    before = [Upload(f"durable/a{i:03d}.jpg", jpeg(i % 4, seed=800 + i)) for i in range(30)]
    after = [Upload(f"durable/b{i:03d}.jpg", jpeg(i % 4, seed=900 + i)) for i in range(20)]
    worker = WorkerProcess(env, log_path=tmp_path / "worker.log").start()
    try:
        with log_tail_on_failure(worker.log_path):
            upload_all(settings, before, rate=15)
            mid = await collect_outcomes(settings, [u.key for u in before], timeout=120, linger=0, at_least=10)
            assert len(mid.decisions) >= 10
            down = await asyncio.to_thread(durable_stack.restart, "kafka", 2.0)  # SIGKILL; same port and data
            upload_all(settings, after)
            out = await collect_outcomes(settings, [u.key for u in before + after], timeout=240, linger=1.0)
    finally:
        worker.stop()
    lost = [u.key for u in before + after if not out.settled(u.key)]
    assert not lost, f"{len(lost)} lost across a broker restart ({down:.1f}s away): {lost[:5]}"
    assert not out.dead_letters
    assert set(mid.decisions) <= set(out.decisions)  # outcomes published before the restart are still there
