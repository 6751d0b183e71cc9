"""At-least-once with two batches in flight (streams.worker.acks): a slow batch overtaken by fast ones on the
same partition is not committed past, so a worker SIGKILLed while it decodes gets it again after a restart."""
from __future__ import annotations

import asyncio
import time

import pytest

from streams.orchestration.harness import Upload, collect_outcomes
from streams.worker.acks import committable_run
from tests.fault_fixtures import log_tail_on_failure, publish_events, upload_quietly
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack


def test_committable_run_stops_below_the_lowest_unfinished_offset():
    assert committable_run([5, 6, 7, 9], None) == [5, 6, 7]
    assert committable_run([6, 7, 8], 5) == []          # 5 is still in flight: nothing may be committed
    assert committable_run([5, 6, 8, 9], 7) == [5, 6]
    assert committable_run([5, 5, 6, 6, 7], 7) == [5, 6]  # duplicates (log gaps filled twice) are harmless


async def test_slow_batch_overtaken_by_fast_ones_is_redelivered_after_sigkill(own_worker, stack_settings, slow_scan):
    p = unique_prefix("acks")
    warm = Upload(p + "warm.bin", jpeg(0, seed=1))
    slow = Upload(p + "slow-scan.bin", slow_scan)
    fast = [Upload(p + f"fast{i:02d}.bin", jpeg(i % 4, seed=10 + i)) for i in range(12)]
    ups = upload_quietly(stack_settings, {u.key: u.data for u in [warm, slow, *fast]})
    warm, slow, fast = ups[warm.key], ups[slow.key], [ups[u.key] for u in fast]
    env = {"ARTROUTE_AGENT_CONCURRENCY": "2", "ARTROUTE_MAX_BATCH": "4", "ARTROUTE_BATCH_WINDOW_S": "0.1",
           "ARTROUTE_MAX_OBJECT_BYTES": str(16 * 2**20)}
    worker, topic = await own_worker("acks", **env)
    with log_tail_on_failure(worker.log_path):
        await publish_events(stack_settings, topic, [warm])          # offset 0: group joined, committed
        assert warm.key in (await outcomes_for(stack_settings, [warm.key], timeout=120)).decisions
        await asyncio.sleep(2.0)
        await publish_events(stack_settings, topic, [slow])          # offset 1: a batch of its own
        await asyncio.sleep(0.5)
        await publish_events(stack_settings, topic, fast)            # offsets 2..: the second agent, done first
        t0 = time.monotonic()
        # The busy agent may hold one fast event in its buffer until the slow batch is done; the rest overtake.
        out = await collect_outcomes(stack_settings, [u.key for u in fast], timeout=60, linger=0,
                                     at_least=len(fast) - 1)
        assert sum(out.settled(u.key) for u in fast) >= len(fast) - 1
        await asyncio.sleep(1.2)                                     # faust commits every second
        during = await outcomes_for(stack_settings, [slow.key], timeout=0.5, linger=0)
        assert not during.settled(slow.key), (f"the slow scan was decided within {time.monotonic() - t0:.1f}s: "
                                              "too fast to show the overtaking; use a slower one")
        worker.kill()                                                # while the slow scan is still decoding
        worker.start()                                               # same group: resumes from the commit
        keys = [slow.key] + [u.key for u in fast]
        out = await collect_outcomes(stack_settings, keys, timeout=180, linger=0, stall=60)
    assert out.settled(slow.key), "the slow batch was never redelivered: its offset was committed unfinished"
    assert slow.key in out.decisions, out.dead_letters.get(slow.key)
    assert all(out.settled(k) for k in keys)
