"""The S3 store (MinIO in production, SeaweedFS locally), through the `minio` SDK.

The SDK is synchronous; every call runs in a thread pool so the event loop never blocks, with a
semaphore bounding concurrent downloads (ARTROUTE_FETCH_CONCURRENCY).
"""
from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import urllib3
from minio import Minio
from minio.error import S3Error

from streams.worker.settings import Settings


class FetchError(Exception):
    """An object that cannot be fetched; kind is a dead-letter error kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


def make_client(settings: Settings, pool_size: int | None = None) -> Minio:
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": str(settings.s3_cafile)} if settings.s3_cafile else {}
    http = urllib3.PoolManager(maxsize=pool_size or settings.fetch_concurrency, timeout=urllib3.Timeout(30, 60),
                               retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
                               **tls)
    return Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                 secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
                 region=settings.s3_region, http_client=http)


class ObjectStore:
    def __init__(self, settings: Settings):
        self.client = make_client(settings)
        self.max_bytes = settings.max_object_bytes
        self.executor = ThreadPoolExecutor(settings.fetch_concurrency, thread_name_prefix="s3")
        self.semaphore = asyncio.Semaphore(settings.fetch_concurrency)

    def _get(self, bucket: str, key: str, version_id: str | None) -> bytes:
        try:
            resp = self.client.get_object(bucket, key, version_id=version_id or None)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion"):
                raise FetchError("object_missing", f"s3://{bucket}/{key}: {e.code}") from e
            raise FetchError("fetch_failed", f"s3://{bucket}/{key}: {e.code}: {e.message}") from e
        try:
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) > self.max_bytes:
                raise FetchError("too_large", f"s3://{bucket}/{key}: {int(length)} bytes > limit {self.max_bytes}")
            buf = io.BytesIO()
            for chunk in resp.stream(256 * 1024):
                buf.write(chunk)
                if buf.tell() > self.max_bytes:
                    raise FetchError("too_large", f"s3://{bucket}/{key}: more than {self.max_bytes} bytes")
            return buf.getvalue()
        finally:
            resp.close()
            resp.release_conn()

    async def fetch(self, bucket: str, key: str, version_id: str | None = None, size_hint: int | None = None) -> bytes:
        """Object bytes; FetchError(object_missing | too_large | fetch_failed) otherwise."""
        if size_hint is not None and size_hint > self.max_bytes:
            raise FetchError("too_large", f"s3://{bucket}/{key}: {size_hint} bytes > limit {self.max_bytes}")
        async with self.semaphore:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._get, bucket, key, version_id)

    def iter_objects(self, bucket: str, prefix: str = "", start_after: str | None = None) -> Iterator:
        """All objects under a prefix, in key order (minio Object items); synchronous."""
        return self.client.list_objects(bucket, prefix=prefix or None, recursive=True, start_after=start_after)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
