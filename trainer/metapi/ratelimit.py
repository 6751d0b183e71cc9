"""A global async rate limiter: at most ``rate`` request starts in any window of ``period`` seconds.

Two rules together: a log of the last ``rate`` start times guarantees the window bound outright, and a
pacing schedule (one start per ``(period + margin) / rate`` seconds on a virtual timeline, GCRA-style)
keeps requests evenly spread instead of bursting, while letting a start that woke up late be made up by
the next ones so sleep overshoot does not lower the sustained rate. ``margin`` absorbs jitter between the
client's clock and the server's (event-loop lag on either side), so a server measuring a sliding 1 s
window never sees more than ``rate``; it costs ``margin / period`` of throughput.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque


class RateLimiter:
    def __init__(self, rate: int, period: float = 1.0, margin: float = 0.04):
        if rate < 1:
            raise ValueError(f"rate must be >= 1 request per {period}s, got {rate}")
        self.rate, self.period, self.margin = int(rate), period, margin
        self.spacing = (period + margin) / rate
        self._starts: deque[float] = deque(maxlen=self.rate)
        self._lock = asyncio.Lock()
        self._next = 0.0                     # virtual time of the next paced start
        self._tolerance = 2 * self.spacing   # how far behind schedule a start may catch up
        self.acquired = 0

    async def acquire(self) -> None:
        """Wait (FIFO) until one more request may start now."""
        async with self._lock:
            while True:
                now = time.monotonic()
                wait = self._next - self._tolerance - now
                if len(self._starts) == self.rate:
                    wait = max(wait, self._starts[0] + self.period + self.margin - now)
                if wait <= 0:
                    self._starts.append(now)
                    self._next = max(self._next, now - self._tolerance) + self.spacing
                    self.acquired += 1
                    return
                await asyncio.sleep(wait)

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        return None
