"""call_with_retries awaits what `fn` returns, whether fn is a coroutine function or a lambda returning an
awaitable (failed before the fix: tenacity treated the lambda as synchronous, so the failing coroutine was
returned un-awaited, never retried, and the caller got a coroutine instead of the result)."""
from __future__ import annotations

import asyncio

from streams.contract.retry import RetryPolicy, call_with_retries


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried():
    calls = []

    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError("away")
        return x * 2

    result = await call_with_retries(lambda: flaky(21), transient=lambda e: isinstance(e, ConnectionError),
                                     policy=RetryPolicy("test", initial_s=0.01, max_s=0.02))
    assert result == 42 and calls == [21, 21, 21]
    assert await call_with_retries(lambda: asyncio.to_thread(sum, [1, 2]), transient=lambda e: False,
                                   policy=RetryPolicy("test")) == 3
