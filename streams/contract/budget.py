"""Byte budgets: bound the memory that concurrent work may hold at once.

`ByteBudget` is for threads (the decode pool), `AsyncByteBudget` for coroutines (objects fetched and
waiting to be decoded). Both are first come, first served, so a large request is not starved by small
ones, and a request larger than the whole budget waits until it can hold all of it (it then runs alone).
"""
from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class ByteBudget:
    """`with budget.hold(n):` blocks the calling thread until n bytes (at most the capacity) are free."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("a budget needs a positive capacity")
        self.capacity, self.used = capacity, 0
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[int]:
        n = max(0, min(int(nbytes), self.capacity))
        ticket = next(self._tickets)
        with self._cond:
            self._queue.append(ticket)
            self._cond.wait_for(lambda: self._queue[0] == ticket and self.used + n <= self.capacity)
            self._queue.popleft()
            self.used += n
            self._cond.notify_all()
        try:
            yield n
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class AsyncByteBudget:
    """`async with budget.hold(n):` waits (without blocking the loop) until n bytes are free."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("a budget needs a positive capacity")
        self.capacity, self.used = capacity, 0
        self._cond: asyncio.Condition | None = None  # created on first use, inside the running loop
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[int]:
        n = max(0, min(int(nbytes), self.capacity))
        if not self._queue and self.used + n <= self.capacity:  # fast path: nobody waits and it fits
            self.used += n  # (one event loop: no other coroutine runs between the test and this)
            try:
                yield n
            finally:
                self.used -= n
                if self._queue:
                    async with self._cond:
                        self._cond.notify_all()
            return
        cond = self._cond = self._cond or asyncio.Condition()
        ticket = next(self._tickets)
        async with cond:
            self._queue.append(ticket)
            try:
                await cond.wait_for(lambda: self._queue[0] == ticket and self.used + n <= self.capacity)
            except BaseException:
                self._queue.remove(ticket)
                cond.notify_all()
                raise
            self._queue.popleft()
            self.used += n
            cond.notify_all()
        try:
            yield n
        finally:
            async with cond:
                self.used -= n
                cond.notify_all()
