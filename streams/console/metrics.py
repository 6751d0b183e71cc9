"""The console's Prometheus metrics (GET /metrics): page latency per route, verdicts recorded (a counter,
and a gauge of the last minute's), failed logins. One registry per app (tests start several apps)."""
from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class VerdictRate:
    """artroute_console_verdicts_last_minute: verdicts recorded by this console in the last 60 s."""

    def __init__(self):
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self._times.extend([now] * n)

    def last_minute(self) -> int:
        cutoff = time.monotonic() - 60
        with self._lock:
            while self._times and self._times[0] < cutoff:
                self._times.popleft()
            return len(self._times)

    def collect(self):
        g = GaugeMetricFamily("artroute_console_verdicts_last_minute", "Verdicts recorded in the last 60 seconds")
        g.add_metric([], self.last_minute())
        yield g


class ConsoleMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram("artroute_console_request_seconds", "Console request latency (server time), by "
                                 "route", ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.verdicts = Counter("artroute_console_verdicts_total", "Verdicts recorded through the console, by kind",
                                ["kind"], registry=self.registry)
        self.login_failures = Counter("artroute_console_login_failures_total", "Failed or refused logins",
                                      ["reason"], registry=self.registry)
        self.rate = VerdictRate()
        self.registry.register(self.rate)

    def recorded(self, kind: str, n: int = 1) -> None:
        self.verdicts.labels(kind).inc(n)
        if kind != "retract":
            self.rate.add(n)
