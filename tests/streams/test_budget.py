"""Byte budgets (streams.contract.budget): never over capacity, first come first served, an oversize request
runs alone."""
from __future__ import annotations

import asyncio
import threading
import time

from streams.contract.budget import AsyncByteBudget, ByteBudget


def test_thread_budget_serialises_what_does_not_fit_and_lets_an_oversize_request_run_alone():
    budget, log, peak = ByteBudget(100), [], [0]

    def work(name: str, n: int) -> None:
        with budget.hold(n):
            peak[0] = max(peak[0], budget.used)
            log.append(name)
            time.sleep(0.05)

    threads = [threading.Thread(target=work, args=a) for a in [("a", 60), ("b", 60), ("huge", 500), ("c", 10)]]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    assert log == ["a", "b", "huge", "c"] and peak[0] <= 100 and budget.used == 0


async def test_async_budget_is_first_come_first_served():
    budget, order = AsyncByteBudget(100), []

    async def work(name: str, n: int, seconds: float) -> None:
        async with budget.hold(n):
            assert budget.used <= 100
            order.append(name)
            await asyncio.sleep(seconds)

    await asyncio.gather(work("a", 60, 0.05), work("b", 60, 0.01), work("c", 30, 0.01))
    assert order == ["a", "b", "c"] and budget.used == 0  # c would fit beside a, but b came first
