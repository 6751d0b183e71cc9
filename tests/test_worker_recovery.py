"""Killing the worker (SIGKILL, no clean shutdown) mid-stream and restarting it loses no event."""
from __future__ import annotations

import asyncio
import threading

import pytest

from streams.orchestration.harness import Upload, upload_all
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack


async def wait_mid_stream(settings, uploads: list[Upload], attempt_s: float) -> None:
    """Return once the worker has decided some (usually not all) of the uploads."""
    for _ in range(60):
        out = await outcomes_for(settings, [u.key for u in uploads], timeout=attempt_s, linger=0)
        if out.decisions:
            return
    raise AssertionError("the worker decided nothing before it was interrupted")


async def assert_all_settled(settings, uploads: list[Upload], why: str):
    keys = [u.key for u in uploads]
    out = await outcomes_for(settings, keys, timeout=240)
    lost = [k for k in keys if not out.settled(k)]
    assert not lost, f"{len(lost)} uploads never decided {why}: {lost[:5]}"
    return out


async def test_killing_the_worker_mid_stream_loses_no_event(worker, stack_settings):
    p = unique_prefix("kill")
    first = [Upload(p + f"a{i:03d}.jpg", jpeg(i % 4, seed=1000 + i)) for i in range(40)]
    second = [Upload(p + f"b{i:03d}.jpg", jpeg(i % 4, seed=2000 + i)) for i in range(20)]
    upload_all(stack_settings, first, rate=20)
    await wait_mid_stream(stack_settings, first, attempt_s=1.0)
    worker.kill()
    thread = threading.Thread(target=upload_all, args=(stack_settings, second))
    thread.start()           # uploads keep landing while no worker runs
    await asyncio.sleep(2)
    worker.start()
    thread.join()
    out = await assert_all_settled(stack_settings, first + second, "after a SIGKILL restart")
    assert not out.dead_letters
    # Redelivered events are decided again with the same id: at-least-once, never two different answers.
    for k, docs in out.decisions.items():
        assert len({d["decision_id"] for d in docs}) == 1


async def test_stopping_the_worker_mid_stream_loses_no_event(worker, stack_settings):
    """SIGTERM (a rolling restart): in-flight batches must not be acked without being published."""
    p = unique_prefix("term")
    uploads = [Upload(p + f"{i:03d}.jpg", jpeg(i % 4, seed=3000 + i)) for i in range(48)]
    upload_all(stack_settings, uploads, rate=24)
    await wait_mid_stream(stack_settings, uploads, attempt_s=0.5)
    assert worker.stop() is not None
    worker.start()
    await assert_all_settled(stack_settings, uploads, "after a SIGTERM restart")
