"""Fetch and decode one object, within memory budgets: what the router infers on, or why not.

The fetch is retried while the store is unavailable (streams.worker.store sorts transient from permanent
failures) and reported to the worker's health; the bytes of fetched objects waiting to be decoded are
bounded by ARTROUTE_FETCH_MEMORY_BYTES, the memory of concurrent decodes by ARTROUTE_DECODE_MEMORY_BYTES.
The object is decided as the store holds it: under the eTag the store answered with (the event's is kept
in `event_etag` when it differs: a newer upload replaced the content) and, for a key with '//' that the
store normalised, under the normalised key (the event's in `uploaded_key`).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from streams.contract.budget import AsyncByteBudget, ByteBudget
from streams.contract.imaging import ImageRejected, decode_image
from streams.contract.retry import call_with_retries
from streams.worker.events import IntakeEvent, canonical_key, undecodable_format
from streams.worker.health import Health
from streams.worker.settings import Settings
from streams.worker.store import FetchError, ObjectStore, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    """A fetched and decoded object, and what it was decided as: `event` carries the store's key and eTag."""
    image: np.ndarray
    event: IntakeEvent
    event_etag: str | None = None     # the event's eTag, when the store held other content
    uploaded_key: str | None = None   # the event's key, when the store holds it under a normalised one


@dataclass
class Failed:
    kind: str
    message: str
    stage: str
    event_etag: str | None = None
    uploaded_key: str | None = None


class ObjectLoader:
    def __init__(self, settings: Settings, store: ObjectStore, decoder: Executor, health: Health,
                 stopping: asyncio.Event):
        self.settings, self.store, self.decoder, self.health, self.stopping = settings, store, decoder, health, stopping
        self.decode_budget = ByteBudget(settings.decode_memory_bytes)
        self.fetch_budget = AsyncByteBudget(settings.fetch_memory_bytes)

    async def load(self, ev: IntakeEvent, image_size: tuple[int, int]) -> Loaded | Failed:
        """Fetch (retrying while the store is away) and decode one object; a `Failed` instead of raising."""
        stage, event_etag, uploaded_key = "fetch", None, None
        try:
            async with self.fetch_budget.hold(min(ev.size, self.settings.max_object_bytes)):
                with self.health.call("store"):
                    obj = await self.store.fetch_with_retries(
                        ev.bucket, ev.key, ev.version_id, ev.size, stop=self.stopping,
                        on_retry=lambda e, *_: self.health.failing("store", e),
                        on_success=lambda: self.health.ok("store"))
                    stored_key = await self._stored_key(ev, obj.etag)
                if obj.etag and obj.etag != ev.etag:  # the store holds other content than the event named
                    event_etag = ev.etag
                if stored_key != ev.key:
                    uploaded_key = ev.key
                if event_etag or uploaded_key:
                    ev = ev.model_copy(update={"etag": obj.etag or ev.etag, "key": stored_key})
                stage = "decode"
                if fmt := undecodable_format(ev.key, ev.content_type):
                    return Failed("unsupported", f"{fmt} images are not decoded (HEIF, camera raw, JPEG XL, "
                                                 "vector, HDR and layered formats)", stage, event_etag, uploaded_key)
                image = await asyncio.get_running_loop().run_in_executor(
                    self.decoder, decode_image, obj.data, self.settings.max_image_pixels, image_size, self.decode_budget)
                return Loaded(image, ev, event_etag, uploaded_key)
        except (FetchError, ImageRejected) as e:
            return Failed(e.kind, e.message, stage, event_etag, uploaded_key)
        except StoreUnavailable:
            raise  # only when shutting down: the batch is not published, so it is redelivered
        except Exception as e:  # noqa: BLE001 - the worker never dies on bad input
            log.exception("unexpected error loading s3://%s/%s", ev.bucket, ev.key)
            return Failed("internal", f"{type(e).__name__}: {e}", stage, event_etag, uploaded_key)

    async def _stored_key(self, ev: IntakeEvent, etag: str) -> str:
        """The key the store holds the object under: a key with '//' (or a leading '/') that the store
        normalises is decided under the normalised key when that key holds the same content."""
        key = canonical_key(ev.key)
        if key == ev.key or not key:
            return ev.key
        same = await call_with_retries(lambda: self.store.stat_etag(ev.bucket, key),
                                       transient=lambda e: isinstance(e, StoreUnavailable),
                                       policy=self.store.policy, stop=self.stopping)
        return key if same is not None and same == etag else ev.key
