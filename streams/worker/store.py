"""The S3 store (MinIO in production, SeaweedFS locally), through the `minio` SDK.

The SDK is synchronous; every call runs in a thread pool so the event loop never blocks, with a
semaphore bounding concurrent downloads (ARTROUTE_FETCH_CONCURRENCY).

Failures are sorted once, here: a transient one (connection refused or reset, timeouts, HTTP 5xx and
429, SlowDown and other "try again" codes, credentials the store rejects for now) raises
`StoreUnavailable`, which `fetch_with_retries` retries under the project's retry policy while the
worker reports not ready; a permanent answer about the object itself raises `FetchError` with the
dead-letter kind: `object_missing` (no such key or version), `bucket_missing`, `access_denied`,
`too_large`, or `fetch_failed` (any other definite refusal).
"""
from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from streams.contract.retry import RetryPolicy, call_with_retries
from streams.worker.settings import Settings

# S3 error codes that mean "not now" rather than "never" (AWS and MinIO spell them so).
TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                             "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                             "XMinioServerNotInitialized", "XMinioReadQuorum", "XMinioWriteQuorum",
                             "OperationAborted", "RequestTimeTooSkewed", "InvalidAccessKeyId",
                             "SignatureDoesNotMatch", "ExpiredToken", "TokenRefreshRequired"})
PERMANENT_KINDS = {"NoSuchKey": "object_missing", "NoSuchVersion": "object_missing",
                   "NoSuchBucket": "bucket_missing", "AccessDenied": "access_denied",
                   "AllAccessDisabled": "access_denied", "EntityTooLarge": "too_large"}


class FetchError(Exception):
    """An object that cannot be fetched, for good; kind is a dead-letter error kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class StoreUnavailable(Exception):
    """The store did not answer, or answered "try again": retried, never dead-lettered."""


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    etag: str                # as the store reports it now, without quotes
    version_id: str | None = None


def make_client(settings: Settings, pool_size: int | None = None) -> Minio:
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": str(settings.s3_cafile)} if settings.s3_cafile else {}
    http = urllib3.PoolManager(maxsize=pool_size or settings.fetch_concurrency, timeout=urllib3.Timeout(10, 30),
                               retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
                               **tls)
    return Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
                 region=settings.s3_region, http_client=http)


def classify(exc: BaseException, where: str) -> Exception:
    """Any exception from a store call -> StoreUnavailable (transient) or FetchError (permanent)."""
    if isinstance(exc, (FetchError, StoreUnavailable)):
        return exc
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        if exc.code in TRANSIENT_CODES or status >= 500 or status == 429:
            return StoreUnavailable(f"{where}: {exc.code} (HTTP {status})")
        kind = PERMANENT_KINDS.get(exc.code or "", "fetch_failed")
        return FetchError(kind, f"{where}: {exc.code}" + (f": {exc.message}" if kind == "fetch_failed" else ""))
    if isinstance(exc, ServerError):
        if exc.status_code >= 500 or exc.status_code == 429:
            return StoreUnavailable(f"{where}: HTTP {exc.status_code}")
        return FetchError("fetch_failed", f"{where}: HTTP {exc.status_code}")
    if isinstance(exc, InvalidResponseError):
        code = int(getattr(exc, "_code", 0) or 0)
        if code >= 500 or code == 429:  # a proxy or load balancer answering for an absent store
            return StoreUnavailable(f"{where}: non-S3 answer HTTP {code}")
        return FetchError("fetch_failed", f"{where}: non-S3 answer HTTP {code}")
    if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, socket.timeout)):
        return StoreUnavailable(f"{where}: {type(exc).__name__}: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


class ObjectStore:
    def __init__(self, settings: Settings):
        self.client = make_client(settings)
        self.max_bytes = settings.max_object_bytes
        self.executor = ThreadPoolExecutor(settings.fetch_concurrency, thread_name_prefix="s3")
        self.semaphore = asyncio.Semaphore(settings.fetch_concurrency)
        self.policy = RetryPolicy("s3 fetch", initial_s=0.2, max_s=settings.s3_retry_max_s)

    def _get(self, bucket: str, key: str, version_id: str | None) -> StoredObject:
        where = f"s3://{bucket}/{key}"
        try:
            resp = self.client.get_object(bucket, key, version_id=version_id or None)
        except Exception as e:  # noqa: BLE001 - sorted into transient / permanent
            raise classify(e, where) from e
        try:
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) > self.max_bytes:
                raise FetchError("too_large", f"{where}: {int(length)} bytes > limit {self.max_bytes}")
            if length is not None:
                data = resp.read(decode_content=False)  # one allocation of the announced size
                if len(data) != int(length):
                    raise StoreUnavailable(f"{where}: connection closed after {len(data)} of {length} bytes")
            else:
                chunks, total = [], 0
                for chunk in resp.stream(256 * 1024):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise FetchError("too_large", f"{where}: more than {self.max_bytes} bytes")
                    chunks.append(chunk)
                data = b"".join(chunks)
            return StoredObject(data, (resp.headers.get("ETag") or "").strip('"'),
                                resp.headers.get("x-amz-version-id") or None)
        except Exception as e:  # noqa: BLE001
            raise classify(e, where) from e
        finally:
            resp.close()
            resp.release_conn()

    async def fetch(self, bucket: str, key: str, version_id: str | None = None,
                    size_hint: int | None = None) -> StoredObject:
        """One attempt: the object, or FetchError (permanent) / StoreUnavailable (transient)."""
        if size_hint is not None and size_hint > self.max_bytes:
            raise FetchError("too_large", f"s3://{bucket}/{key}: {size_hint} bytes > limit {self.max_bytes}")
        async with self.semaphore:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._get, bucket, key, version_id)

    async def fetch_with_retries(self, bucket: str, key: str, version_id: str | None = None,
                                 size_hint: int | None = None, *, stop: asyncio.Event | None = None,
                                 on_retry: Callable[[BaseException, int, float], None] | None = None,
                                 on_success: Callable[[], None] | None = None) -> StoredObject:
        """`fetch`, retrying while the store is unavailable (until it answers or `stop` is set). The first
        attempt runs outside the retry machinery (0.1 ms per call), which takes over after a failure."""
        try:
            obj = await self.fetch(bucket, key, version_id, size_hint)
        except StoreUnavailable as e:
            if stop is not None and stop.is_set():
                raise
            if on_retry is not None:
                on_retry(e, 0, 0.0)
        else:
            if on_success is not None:
                on_success()
            return obj
        return await call_with_retries(lambda: self.fetch(bucket, key, version_id, size_hint),
                                       transient=lambda e: isinstance(e, StoreUnavailable), policy=self.policy,
                                       stop=stop, on_retry=on_retry, on_success=on_success)

    def _stat_etag(self, bucket: str, key: str) -> str | None:
        try:
            return (self.client.stat_object(bucket, key).etag or "").strip('"')
        except Exception as e:  # noqa: BLE001
            err = classify(e, f"s3://{bucket}/{key}")
            if isinstance(err, FetchError):
                return None
            raise err from e

    async def stat_etag(self, bucket: str, key: str) -> str | None:
        """The ETag of `key`, or None when the store has no such object (StoreUnavailable when it is away)."""
        async with self.semaphore:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._stat_etag, bucket, key)

    def iter_objects(self, bucket: str, prefix: str = "", start_after: str | None = None) -> Iterator:
        """All objects under a prefix, in key order (minio Object items); synchronous."""
        return self.client.list_objects(bucket, prefix=prefix or None, recursive=True, start_after=start_after)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
