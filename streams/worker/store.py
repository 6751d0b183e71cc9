"""The S3 store (MinIO in production, SeaweedFS locally): fetching objects for the worker.

Objects are fetched and their eTags asked in the event loop by `streams.worker.s3http` (HTTP/1.1 keep-alive,
SigV4; half the CPU per object of the minio SDK in threads: docs/benchmarks.md), with a semaphore
bounding concurrent downloads (ARTROUTE_FETCH_CONCURRENCY). Listing and uploads use the minio SDK
(`make_client`).

Failures are sorted once, here: a transient one (connection refused or reset, timeouts, HTTP 5xx and
429, SlowDown and other "try again" codes, credentials the store rejects for now) raises
`StoreUnavailable`, which `fetch_with_retries` retries under the project's retry policy while the
worker reports not ready; a permanent answer about the object itself raises `FetchError` with the
dead-letter kind: `object_missing` (no such key or version), `bucket_missing`, `access_denied`,
`too_large`, or `fetch_failed` (any other definite refusal). The S3 error codes and HTTP statuses are
read as the minio SDK reads them (an answer without an S3 error document: 403 AccessDenied, 404 NoSuchKey).
"""
from __future__ import annotations

import asyncio
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from minio import Minio

from streams.contract.retry import RetryPolicy, call_with_retries
from streams.worker.s3http import Answer, BodyTooLarge, S3Http
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


def classify_answer(answer: Answer, where: str, head: bool = False) -> Exception:
    """An S3 error answer -> StoreUnavailable (transient) or FetchError (permanent), read as the minio SDK
    reads it: the error document's code; for HEAD without a body the status (403 AccessDenied, 404 NoSuchKey);
    any other answer without an S3 error document is a proxy's or load balancer's ("non-S3 answer")."""
    status, code, message = answer.status, None, None
    if head and not answer.body:
        code = {403: "AccessDenied", 404: "NoSuchKey"}.get(status)
    else:
        try:
            if "application/xml" not in answer.headers.get("content-type", "").split(";") or not answer.body:
                raise ET.ParseError("not an S3 error document")
            doc = ET.fromstring(answer.body)
            code, message = doc.findtext("Code"), doc.findtext("Message")
        except ET.ParseError:
            if status >= 500 or status == 429:
                return StoreUnavailable(f"{where}: non-S3 answer HTTP {status}")
            return FetchError("fetch_failed", f"{where}: non-S3 answer HTTP {status}")
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return StoreUnavailable(f"{where}: {code} (HTTP {status})" if code else f"{where}: HTTP {status}")
    if not code:
        return FetchError("fetch_failed", f"{where}: HTTP {status}")
    kind = PERMANENT_KINDS.get(code, "fetch_failed")
    return FetchError(kind, f"{where}: {code}" + (f": {message}" if kind == "fetch_failed" else ""))


def _unavailable(e: OSError, where: str) -> StoreUnavailable:
    return StoreUnavailable(f"{where}: {type(e).__name__}: {e}")


class ObjectStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        tls = (ssl.create_default_context(cafile=str(settings.s3_cafile) if settings.s3_cafile else None)
               if settings.s3_secure else None)
        self.http = S3Http(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key.get_secret_value(),
                           secure=settings.s3_secure, region=settings.s3_region, ssl_context=tls,
                           pool_size=settings.fetch_concurrency)
        self.max_bytes = settings.max_object_bytes
        self.semaphore = asyncio.Semaphore(settings.fetch_concurrency)
        self.policy = RetryPolicy("s3 fetch", initial_s=0.2, max_s=settings.s3_retry_max_s)

    async def fetch(self, bucket: str, key: str, version_id: str | None = None,
                    size_hint: int | None = None) -> StoredObject:
        """One attempt: the object, or FetchError (permanent) / StoreUnavailable (transient)."""
        where = f"s3://{bucket}/{key}"
        if size_hint is not None and size_hint > self.max_bytes:
            raise FetchError("too_large", f"{where}: {size_hint} bytes > limit {self.max_bytes}")
        async with self.semaphore:
            try:
                answer = await self.http.request("GET", bucket, key, {"versionId": version_id} if version_id else None,
                                                 max_bytes=self.max_bytes)
            except BodyTooLarge as e:
                detail = f"{e.length} bytes > limit {e.limit}" if e.length is not None else f"more than {e.limit} bytes"
                raise FetchError("too_large", f"{where}: {detail}") from None
            except OSError as e:
                raise _unavailable(e, where) from e
        if answer.status not in (200, 206):
            raise classify_answer(answer, where)
        return StoredObject(answer.body, answer.headers.get("etag", "").strip('"'),
                            answer.headers.get("x-amz-version-id") or None)

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

    async def stat_etag(self, bucket: str, key: str) -> str | None:
        """The ETag of `key`, or None when the store has no such object (StoreUnavailable when it is away)."""
        where = f"s3://{bucket}/{key}"
        async with self.semaphore:
            try:
                answer = await self.http.request("HEAD", bucket, key)
            except OSError as e:
                raise _unavailable(e, where) from e
        if answer.status == 200:
            return answer.headers.get("etag", "").strip('"')
        err = classify_answer(answer, where, head=True)
        if isinstance(err, FetchError):
            return None
        raise err

    def close(self) -> None:
        self.http.close()
