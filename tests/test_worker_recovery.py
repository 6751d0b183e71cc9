"""Killing the worker (SIGKILL, no clean shutdown) mid-stream and restarting it loses no event."""
from __future__ import annotations

import asyncio
import threading

import pytest

from streams.harness import Upload, upload_all
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack


async def test_killing_the_worker_mid_stream_loses_no_event(worker, stack_settings):
    p = unique_prefix("kill")
    first = [Upload(p + f"a{i:03d}.jpg", jpeg(i % 4, seed=1000 + i)) for i in range(40)]
    second = [Upload(p + f"b{i:03d}.jpg", jpeg(i % 4, seed=2000 + i)) for i in range(20)]
    upload_all(stack_settings, first, rate=20)
    # Wait until the worker is mid-stream: some, but not all, of the first uploads decided.
    for _ in range(60):
        out = await outcomes_for(stack_settings, [u.key for u in first], timeout=1.0, linger=0)
        if out.decisions:
            break
    assert out.decisions, "the worker decided nothing before the kill"
    worker.kill()
    thread = threading.Thread(target=upload_all, args=(stack_settings, second))
    thread.start()           # uploads keep landing while no worker runs
    await asyncio.sleep(2)
    worker.start()
    thread.join()
    keys = [u.key for u in first + second]
    out = await outcomes_for(stack_settings, keys, timeout=240)
    lost = [k for k in keys if not out.settled(k)]
    assert not lost, f"{len(lost)} uploads never decided: {lost[:5]}"
    assert not out.dead_letters
    # Redelivered events are decided again with the same id: at-least-once, never two different answers.
    for k, docs in out.decisions.items():
        assert len({d["decision_id"] for d in docs}) == 1


async def test_stopping_the_worker_mid_stream_loses_no_event(worker, stack_settings):
    """SIGTERM (a rolling restart): in-flight batches must not be acked without being published."""
    p = unique_prefix("term")
    uploads = [Upload(p + f"{i:03d}.jpg", jpeg(i % 4, seed=3000 + i)) for i in range(48)]
    upload_all(stack_settings, uploads, rate=24)
    for _ in range(60):
        out = await outcomes_for(stack_settings, [u.key for u in uploads], timeout=0.5, linger=0)
        if out.decisions:
            break
    assert worker.stop() is not None
    worker.start()
    keys = [u.key for u in uploads]
    out = await outcomes_for(stack_settings, keys, timeout=240)
    lost = [k for k in keys if not out.settled(k)]
    assert not lost, f"{len(lost)} uploads never decided after a SIGTERM restart: {lost[:5]}"
