"""Readiness of the worker: is every dependency answering, and is no call stuck?

The router reports what happens on each dependency (`store`, `triton`, `kafka`): `failing(dep, exc)` from
the retry policy's `on_retry` hook, `ok(dep)` from `on_success`, and `call(dep)` around each call so that
one that hangs (a stopped server accepts the connection but never answers) is noticed too. `/healthz`
(streams.worker.metrics) answers 503 with the reasons while

* the worker has not started (no model yet),
* a dependency has been failing for longer than ARTROUTE_HEALTH_STUCK_S (retries in progress), or
* one call to a dependency has been waiting for longer than ARTROUTE_HEALTH_STUCK_S.

Nothing is dropped meanwhile: the batch is held and retried; readiness only tells the operator (and
Kubernetes) that this worker is stuck. `/livez` stays 200 while the event loop answers.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import Gauge

DEPENDENCY_UP = Gauge("artroute_dependency_up", "1 while a dependency answers, 0 while calls to it fail or hang",
                      ["dependency"])


@dataclass
class _State:
    failing_since: float | None = None
    last_error: str = ""
    calls: dict[int, float] = field(default_factory=dict)  # call id -> monotonic start
    up: bool = True                  # what DEPENDENCY_UP says now (set only when it changes: once per call)


class Health:
    def __init__(self, stuck_s: float = 5.0, clock=time.monotonic):
        self.stuck_s, self.clock = stuck_s, clock
        self.started = False
        self._deps: dict[str, _State] = {}
        self._ids = itertools.count()

    def _dep(self, name: str) -> _State:
        if name not in self._deps:
            self._deps[name] = _State()
            DEPENDENCY_UP.labels(name).set(1)
        return self._deps[name]

    def failing(self, dep: str, exc: BaseException | None = None) -> None:
        """A call to `dep` failed for a transient reason and will be retried."""
        state = self._dep(dep)
        if state.failing_since is None:
            state.failing_since = self.clock()
        state.last_error = f"{type(exc).__name__}: {exc}"[:300] if exc is not None else "failing"
        state.up = False
        DEPENDENCY_UP.labels(dep).set(0)

    def ok(self, dep: str) -> None:
        """A call to `dep` succeeded."""
        state = self._dep(dep)
        if state.failing_since is not None or not state.up:
            state.failing_since, state.last_error, state.up = None, "", True
            DEPENDENCY_UP.labels(dep).set(1)

    @contextmanager
    def call(self, dep: str) -> Iterator[None]:
        """Time one call to `dep`, so that a call hanging longer than `stuck_s` makes the worker not ready."""
        state, call_id = self._dep(dep), next(self._ids)
        state.calls[call_id] = self.clock()
        try:
            yield
        finally:
            state.calls.pop(call_id, None)

    def problems(self) -> list[str]:
        """Why the worker is not ready; empty when it is."""
        if not self.started:
            return ["starting"]
        now, out = self.clock(), []
        for name, state in sorted(self._deps.items()):
            if state.failing_since is not None and now - state.failing_since >= self.stuck_s:
                out.append(f"{name}: failing for {now - state.failing_since:.0f}s ({state.last_error})")
            oldest = min(state.calls.values(), default=None)
            if oldest is not None and now - oldest >= self.stuck_s:
                out.append(f"{name}: a call has been waiting for {now - oldest:.0f}s")
                state.up = False
                DEPENDENCY_UP.labels(name).set(0)
        return out

    @property
    def ready(self) -> bool:
        return not self.problems()
