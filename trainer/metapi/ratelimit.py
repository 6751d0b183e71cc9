"""A global async rate limiter: at most ``rate`` request starts in any window of ``period`` seconds.

Two rules together: a log of the last ``rate`` start times guarantees the window bound outright, and a
minimum spacing of ``(period + margin) / rate`` between starts keeps requests evenly spread instead of
bursting (a burst arriving late at the server could share a server-side window with the next burst).
``margin`` absorbs network jitter between the client's clock and the server's, so a server measuring a
sliding 1 s window never sees more than ``rate``; it costs ``margin / period`` of throughput (2.5 %).
"""
from __future__ import annotations

import asyncio
import time
from collections import deque


class RateLimiter:
    def __init__(self, rate: int, period: float = 1.0, margin: float = 0.025):
        if rate < 1:
            raise ValueError(f"rate must be >= 1 request per {period}s, got {rate}")
        self.rate, self.period, self.margin = int(rate), period, margin
        self.spacing = (period + margin) / rate
        self._starts: deque[float] = deque(maxlen=self.rate)
        self._lock = asyncio.Lock()
        self.acquired = 0

    async def acquire(self) -> None:
        """Wait (FIFO) until one more request may start now."""
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = 0.0
                if self._starts:
                    wait = self._starts[-1] + self.spacing - now
                    if len(self._starts) == self.rate:
                        wait = max(wait, self._starts[0] + self.period + self.margin - now)
                if wait <= 0:
                    self._starts.append(now)
                    self.acquired += 1
                    return
                await asyncio.sleep(wait)

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        return None
