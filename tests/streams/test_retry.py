"""The one retry policy (streams.contract.retry): what is retried, for how long, and how it ends."""
from __future__ import annotations

import asyncio
import time

import pytest

from streams.contract.retry import RETRY_AFTER_MAX_S, RetryPolicy, call_with_retries, retry_after


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None):
        super().__init__("flaky")
        self.retry_after = retry_after


def failing(times: int, exc=Flaky):
    calls = []

    async def fn():
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise exc() if isinstance(exc, type) else exc
        return "ok"
    return fn, calls


def transient(e: BaseException) -> bool:
    return isinstance(e, Flaky)


FAST = RetryPolicy(what="test", initial_s=0.01, max_s=0.02)


async def test_transient_failures_are_retried_until_success():
    fn, calls = failing(5)
    retried = []
    assert await call_with_retries(fn, transient=transient, policy=FAST,
                                   on_retry=lambda e, n, wait: retried.append(n)) == "ok"
    assert len(calls) == 6 and retried == [1, 2, 3, 4, 5]


async def test_a_permanent_failure_is_raised_at_once():
    fn, calls = failing(5, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await call_with_retries(fn, transient=transient, policy=FAST)
    assert len(calls) == 1


async def test_attempts_and_deadline_bound_the_retrying():
    fn, calls = failing(100)
    with pytest.raises(Flaky):
        await call_with_retries(fn, transient=transient, policy=RetryPolicy("test", 0.01, 0.02, attempts=3))
    assert len(calls) == 3
    fn, calls = failing(10_000)
    t0 = time.monotonic()
    with pytest.raises(Flaky):
        await call_with_retries(fn, transient=transient, policy=RetryPolicy("test", 0.01, 0.02, deadline_s=0.3))
    assert 0.25 < time.monotonic() - t0 < 2.0


async def test_retry_after_is_honoured_and_capped():
    fn, calls = failing(1, Flaky(retry_after=0.5))
    await call_with_retries(fn, transient=transient, policy=FAST)
    assert calls[1] - calls[0] >= 0.5
    assert retry_after(Flaky(retry_after=10_000)) == RETRY_AFTER_MAX_S and retry_after(ValueError()) is None


async def test_the_stop_event_ends_the_wait_and_the_retrying():
    stop = asyncio.Event()
    fn, calls = failing(10_000)
    task = asyncio.create_task(call_with_retries(fn, transient=transient, stop=stop,
                                                 policy=RetryPolicy("test", initial_s=5.0, max_s=5.0)))
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    stop.set()
    with pytest.raises(Flaky):
        await asyncio.wait_for(task, 2.0)
    assert time.monotonic() - t0 < 1.0 and len(calls) == 1


async def test_a_lambda_returning_a_coroutine_is_awaited():
    """call_with_retries(lambda: client.infer(x)): tenacity awaits only coroutine functions."""
    fn, calls = failing(2)
    assert await call_with_retries(lambda: fn(), transient=transient, policy=FAST) == "ok"
    assert len(calls) == 3
