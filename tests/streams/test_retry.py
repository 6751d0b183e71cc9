"""The one retry policy (streams.contract.retry): transient failures retried, permanent ones raised at once."""
from __future__ import annotations

import asyncio

import pytest

from streams.contract.retry import RetryPolicy, call_with_retries

FAST = RetryPolicy("test", initial_s=0.001, max_s=0.002)


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried():
    calls, seen = [], []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    result = await call_with_retries(lambda: flaky(), transient=lambda e: isinstance(e, ConnectionError),
                                     policy=FAST, on_retry=lambda e, attempt, wait: seen.append(attempt),
                                     on_success=lambda: seen.append("ok"))
    assert result == "ok" and len(calls) == 3 and seen == [1, 2, "ok"]


async def test_permanent_errors_are_raised_at_once_and_a_stop_ends_the_retrying():
    calls = []

    async def broken():
        calls.append(1)
        raise ValueError("no such key")

    with pytest.raises(ValueError):
        await call_with_retries(broken, transient=lambda e: isinstance(e, ConnectionError), policy=FAST)
    assert len(calls) == 1
    stop = asyncio.Event()

    async def down():
        stop.set()
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await call_with_retries(down, transient=lambda e: True, policy=FAST, stop=stop)
