"""One retry policy for every call that crosses the network: Triton inference, Kafka publishing, the S3
store, the MET Collection API. Built on tenacity; each caller says only what counts as transient.

Rules (docs/streams.md, "Retries"):

* Only transient failures are retried: the server is away or overloaded (connection refused or reset,
  timeouts, gRPC UNAVAILABLE / DEADLINE_EXCEEDED, broker not available, HTTP 429 and 5xx). Anything else
  is permanent and raised at once, so the caller can dead-letter the one input at fault instead of
  stalling a partition on it.
* Waits grow exponentially with jitter from `initial_s` up to `max_s`; a server's own Retry-After
  (an exception attribute `retry_after`, seconds) is honoured when it asks for longer.
* By default a transient failure is retried until it succeeds (nothing is dropped because a server was
  down for a while); `attempts` / `deadline_s` bound it where giving up is right (the MET harvest counts a
  failure and moves on). A set `stop` event ends the retrying at once (the worker is shutting down).
* `on_retry` / `on_success` let the caller report health (the worker's /healthz says not ready while a
  dependency is failing).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_after_delay,
                      stop_never, wait_exponential_jitter)

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_MAX_S = 300.0
"""A Retry-After longer than this is capped (a misconfigured server must not park a worker for hours)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying one kind of call; `what` names it in logs."""
    what: str
    initial_s: float = 0.2
    max_s: float = 30.0
    attempts: int | None = None      # None: no limit on attempts
    deadline_s: float | None = None  # None: no limit on total time
    log_level: int = logging.WARNING  # of the line logged before each retry (DEBUG where the caller counts them)


def retry_after(exc: BaseException | None) -> float | None:
    """The server's requested wait (seconds) carried by an exception, if any."""
    value = getattr(exc, "retry_after", None)
    try:
        return min(float(value), RETRY_AFTER_MAX_S) if value is not None else None
    except (TypeError, ValueError):
        return None


class _Wait:
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, policy: RetryPolicy):
        self.base = wait_exponential_jitter(multiplier=policy.initial_s, max=policy.max_s, jitter=policy.initial_s)

    def __call__(self, state: RetryCallState) -> float:
        wait = self.base(state)
        asked = retry_after(state.outcome.exception() if state.outcome else None)
        return max(wait, asked) if asked is not None else wait


def _stop(policy: RetryPolicy, stop: asyncio.Event | None):
    rule = stop_never
    if policy.attempts is not None:
        rule = rule | stop_after_attempt(policy.attempts)
    if policy.deadline_s is not None:
        rule = rule | stop_after_delay(policy.deadline_s)
    if stop is not None:
        rule = rule | (lambda _state: stop.is_set())
    return rule


async def call_with_retries(fn: Callable[[], Awaitable[T]], *, transient: Callable[[BaseException], bool],
                            policy: RetryPolicy, stop: asyncio.Event | None = None,
                            on_retry: Callable[[BaseException, int, float], None] | None = None,
                            on_success: Callable[[], None] | None = None) -> T:
    """`await fn()`, retrying transient failures under `policy`; the last exception is re-raised.

    `on_retry(exc, attempt, wait_s)` runs before each wait, `on_success()` after the call succeeds.
    """
    last: list[BaseException] = []

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        last[:] = [exc]
        wait = state.next_action.sleep if state.next_action else 0.0
        log.log(policy.log_level, "%s failed (attempt %d), retrying in %.1fs: %s: %s", policy.what,
                state.attempt_number, wait, type(exc).__name__, exc)
        if on_retry is not None:
            on_retry(exc, state.attempt_number, wait)

    async def sleep(seconds: float) -> None:  # a shutdown cuts the wait short
        if stop is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            return
        raise last[0]  # stopped while waiting: no further attempt

    async def attempt() -> T:  # tenacity awaits only coroutine *functions*; a lambda returning one is awaited here
        return await fn()

    async def attempt() -> T:  # tenacity calls a non-`async def` fn (a lambda) without awaiting its result
        return await fn()

    retrying = AsyncRetrying(retry=retry_if_exception(transient), wait=_Wait(policy), stop=_stop(policy, stop),
                             before_sleep=before_sleep, sleep=sleep, reraise=True)
    result = await retrying(attempt)
    if on_success is not None:
        on_success()
    return result
