"""The MET client's rate limiter: never more than `rate` starts in any window of `period`, FIFO, and near
the rate when saturated (so a harvest does not crawl)."""
from __future__ import annotations

import asyncio
import bisect
import time

import pytest

from trainer.metapi.ratelimit import RateLimiter


async def starts_of(limiter: RateLimiter, n: int, concurrency: int) -> tuple[list[float], list[int]]:
    times: list[float] = []
    order: list[int] = []
    queue = iter(range(n))

    async def run() -> None:
        for i in queue:
            await limiter.acquire()
            times.append(time.monotonic())
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(run() for _ in range(concurrency)))
    return times, order


def most_in_window(times: list[float], period: float) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + period) - i for i, t in enumerate(times))


@pytest.mark.parametrize("rate,margin", [(20, 0.04), (50, 0.0)])
async def test_no_window_holds_more_than_the_rate(rate, margin):
    limiter = RateLimiter(rate, margin=margin)
    times, order = await starts_of(limiter, n=3 * rate, concurrency=8)
    assert len(times) == 3 * rate and limiter.acquired == 3 * rate
    assert most_in_window(times, 1.0) <= rate
    assert order == sorted(order)                       # first come, first served
    elapsed = times[-1] - times[0]
    assert elapsed >= (len(times) - rate) / rate        # the bound, from the other side
    assert elapsed <= 2 * len(times) / rate             # and no crawl


async def test_a_late_wakeup_does_not_become_a_burst():
    limiter = RateLimiter(10, margin=0.04)
    first, _ = await starts_of(limiter, n=10, concurrency=1)
    await asyncio.sleep(0.5)                            # idle: the schedule must not bank these slots
    later, _ = await starts_of(limiter, n=10, concurrency=4)
    assert most_in_window(first + later, 1.0) <= 10


def test_a_rate_below_one_is_refused():
    with pytest.raises(ValueError, match="rate must be >= 1"):
        RateLimiter(0)
