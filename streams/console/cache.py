"""Figures that are expensive at a million rows (the ledger's `stats` takes ~1.3 s on PostgreSQL and ~9 s
on SQLite there), computed in the background and served from memory.

`Cached.get(key, compute)`: the first call for a key computes it (once, however many requests wait);
later calls return the stored value at once, and a value older than `ttl_s` is recomputed by one
background thread while readers keep getting the previous one (stale-while-revalidate). No request
after the first ever waits for a recomputation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Entry:
    value: Any
    computed_at: float          # time.time() when the computation started
    seconds: float              # how long it took


class Cached:
    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, Entry] = {}
        self._refreshing: set[Hashable] = set()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            with self._lock:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:  # one computation; the others wait for it
                entry = self._entries.get(key) or self._compute(key, compute)
            return entry
        if time.time() - entry.computed_at > self.ttl_s:
            with self._lock:
                start = key not in self._refreshing
                self._refreshing.add(key)
            if start:
                threading.Thread(target=self._refresh, args=(key, compute), daemon=True,
                                 name=f"console-cache-{key}").start()
        return entry

    def peek(self, key: Hashable) -> Entry | None:
        """The stored value, however old, or None; never computes."""
        return self._entries.get(key)

    def warm(self, key: Hashable, compute: Callable[[], Any]) -> None:
        """Compute in the background now (at start-up), so the first page view finds it."""
        threading.Thread(target=self.get, args=(key, compute), daemon=True, name=f"console-warm-{key}").start()

    def _compute(self, key: Hashable, compute: Callable[[], Any]) -> Entry:
        t0, w0 = time.time(), time.perf_counter()
        entry = Entry(compute(), t0, time.perf_counter() - w0)
        self._entries[key] = entry
        return entry

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._compute(key, compute)
        except Exception:  # noqa: BLE001 - the previous value stays; the next reader retries
            log.exception("recomputing %s failed", key)
        finally:
            with self._lock:
                self._refreshing.discard(key)
