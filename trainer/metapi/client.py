"""Async client of the MET Collection API (aiohttp). The same code talks to the real API and to the fake;
only ``base_url`` differs.

Every HTTP attempt, retries included, first takes a slot from a global `RateLimiter` (API calls and image
downloads have one limiter each; the museum asks for at most 80 requests/s). Timeouts, connection errors,
truncated or unparsable bodies, 403 (the API's rate limit), 408, 429 and 5xx are retried under the
project's one retry policy (`streams.contract.retry`: exponential backoff with jitter, honouring
``Retry-After``); a 404 returns None (withdrawn object, missing image) and is counted.
"""
from __future__ import annotations

import asyncio
import email.utils
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, Field, ValidationError

from streams.contract.cli import UserError
from streams.contract.retry import RetryPolicy, call_with_retries
from trainer.metapi.models import Department, DepartmentsResponse, MetObject, ObjectIdsResponse
from trainer.metapi.ratelimit import RateLimiter

DEFAULT_BASE_URL = "https://collectionapi.metmuseum.org/public/collection/v1"
MAX_RPS = 80
RETRY_STATUSES = frozenset({403, 408, 429, 500, 502, 503, 504})
T = TypeVar("T")


class ClientConfig(BaseModel):
    base_url: str = Field(DEFAULT_BASE_URL, description="API root, up to and including /v1.")
    rps: int = Field(MAX_RPS, ge=1, le=MAX_RPS, description="API requests per second, at most 80.")
    image_rps: int = Field(MAX_RPS, ge=1, le=MAX_RPS, description="Image downloads per second.")
    margin_s: float = Field(0.04, ge=0, description="Extra seconds per rate window against jitter.")
    timeout_s: float = Field(30.0, gt=0, description="Total timeout of one HTTP attempt.")
    retries: int = Field(6, ge=0, description="Retries after the first attempt.")
    backoff_s: float = Field(0.5, gt=0, description="First backoff; doubles per retry, with jitter.")
    backoff_cap_s: float = Field(30.0, gt=0, description="Longest backoff and longest Retry-After honoured.")
    connections: int = Field(64, ge=1, description="Open connections at most.")


class FetchError(UserError):
    """A request that still failed after all retries (or with a status that is never retried)."""


class TransientFailure(Exception):
    """One attempt that failed in a way worth retrying; `retry_after`: the server's requested wait (s)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class MetClient:
    def __init__(self, config: ClientConfig | None = None):
        self.config = config or ClientConfig()
        self.base_url = self.config.base_url.rstrip("/")
        self.api_limiter = RateLimiter(self.config.rps, margin=self.config.margin_s)
        self.image_limiter = RateLimiter(self.config.image_rps, margin=self.config.margin_s)
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MetClient:
        connector = aiohttp.TCPConnector(limit=self.config.connections)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={"User-Agent": "artroute-corpus/0.1"})
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- endpoints ---------------------------------------------------------------------------------
    async def departments(self) -> list[Department]:
        resp = await self._get(f"{self.base_url}/departments", DepartmentsResponse.model_validate_json)
        if resp is None:
            raise FetchError(f"{self.base_url}/departments: 404")
        return resp.departments

    async def object_ids(self, department_ids: Iterable[int]) -> list[int]:
        ids = "|".join(str(i) for i in department_ids)
        resp = await self._get(f"{self.base_url}/objects", ObjectIdsResponse.model_validate_json,
                               params={"departmentIds": ids})
        return [] if resp is None else resp.ids

    async def object(self, object_id: int) -> MetObject | None:
        """One object's record, or None when the API says 404 (withdrawn ids appear in lists)."""
        return await self._get(f"{self.base_url}/objects/{object_id}", MetObject.model_validate_json)

    async def image(self, url: str, check: Callable[[bytes], T] | None = None) -> T | bytes | None:
        """Download an image; ``check`` (run in a thread) parses it and raises on a bad body, which is
        retried like a truncated download. None when the image is 404."""
        def parse(body: bytes) -> Any:
            return asyncio.to_thread(check, body) if check else body
        return await self._get(url, parse, limiter=self.image_limiter, kind="image")

    # --- the one request path ----------------------------------------------------------------------
    async def _get(self, url: str, parse: Callable[[bytes], T | Awaitable[T]], params: dict | None = None,
                   limiter: RateLimiter | None = None, kind: str = "api") -> T | None:
        """One GET under the project's retry policy (streams.contract.retry): transient failures are
        retried up to `retries` times, a status that is never retried raises at once."""
        assert self._session is not None, "use `async with MetClient(...)`"
        limiter = limiter or self.api_limiter
        attempts = 0

        async def attempt() -> T | None:
            nonlocal attempts
            attempts += 1
            await limiter.acquire()
            self.stats[f"{kind}_requests"] += 1
            try:
                async with self._session.get(url, params=params) as resp:
                    if resp.status == 404:
                        self.stats[f"{kind}_404"] += 1
                        return None
                    if resp.status == 200:
                        result = parse(await resp.read())
                        return await result if inspect.isawaitable(result) else result
                    self.stats[f"{kind}_http_{resp.status}"] += 1
                    if resp.status not in RETRY_STATUSES:
                        raise FetchError(f"GET {url}: HTTP {resp.status}")
                    wait = min(_retry_after(resp.headers.get("Retry-After")), self.config.backoff_cap_s)
                    raise TransientFailure(f"HTTP {resp.status}", wait or None)
            except asyncio.TimeoutError:
                self.stats[f"{kind}_timeouts"] += 1
                raise TransientFailure("timeout") from None
            except aiohttp.ClientError as e:
                self.stats[f"{kind}_connection_errors"] += 1
                raise TransientFailure(f"{type(e).__name__}: {e}".strip()) from None
            except (ValidationError, ValueError, OSError) as e:
                self.stats[f"{kind}_bad_bodies"] += 1
                raise TransientFailure(f"bad body: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
                    from None

        def retried(*_) -> None:
            self.stats[f"{kind}_retries"] += 1

        policy = RetryPolicy(what=f"GET {url}", initial_s=self.config.backoff_s, max_s=self.config.backoff_cap_s,
                             attempts=self.config.retries + 1, log_level=logging.DEBUG)  # counted in stats instead
        try:
            return await call_with_retries(attempt, transient=lambda e: isinstance(e, TransientFailure),
                                           policy=policy, on_retry=retried)
        except TransientFailure as e:
            self.stats[f"{kind}_failures"] += 1
            raise FetchError(f"GET {url}: {e} (after {attempts} attempts)") from None
        except FetchError:
            self.stats[f"{kind}_failures"] += 1
            raise


def _retry_after(value: str | None) -> float:
    """Retry-After as seconds: an integer, or an HTTP date."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
