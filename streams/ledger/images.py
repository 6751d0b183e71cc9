"""Object photos for the ledger's readers (the HTTP API's image route, the curator console): fetched from
S3 by key and etag, and only for content the ledger holds a decision on.

Nothing hands out bucket URLs: a reader asks for (bucket, key, etag); the ledger must know a decision on
exactly that content (else NotFound), and the object must still be that content (else Conflict: the file
was replaced since). A key with "." or ".." path segments is refused outright: a store that normalises
paths could otherwise resolve it to another object, or another bucket.
"""
from __future__ import annotations

from streams.ledger.errors import Conflict, Invalid, NotFound
from streams.ledger.service import Ledger


def safe_key(key: str) -> bool:
    """No '.'/'..' segment, no backslash, no control character: the key names itself and nothing else."""
    return bool(key) and not any(seg in (".", "..") for seg in key.split("/")) and "\\" not in key \
        and not any(ord(ch) < 32 for ch in key)


def fetch_image(client, bucket: str, key: str) -> tuple[bytes, str | None, str]:
    """(bytes, content type, etag without quotes); NotFound when the object is gone."""
    from minio.error import S3Error

    try:
        resp = client.get_object(bucket, key)
    except S3Error as e:
        if e.code in ("NoSuchKey", "NoSuchBucket"):
            raise NotFound(f"s3://{bucket}/{key}: {e.code}") from None
        raise
    try:
        return resp.read(), resp.headers.get("Content-Type"), (resp.headers.get("ETag") or "").strip('"')
    finally:
        resp.close()
        resp.release_conn()


class ObjectImages:
    """`get(bucket, key, etag)`: the photo the ledger decided, from S3 (`client`: a minio client; default
    one from the ledger's settings, made on first use)."""

    def __init__(self, ledger: Ledger, client=None):
        self.ledger, self._client = ledger, client

    @property
    def client(self):
        if self._client is None:
            from streams.worker.store import make_client

            self._client = make_client(self.ledger.settings, pool_size=8)
        return self._client

    def get(self, bucket: str, key: str, etag: str) -> tuple[bytes, str | None]:
        if not safe_key(key):
            raise Invalid(f"object key {key!r} has '.' or '..' segments or control characters")
        if not self.ledger.known_object(bucket, key, etag):
            raise NotFound(f"the ledger holds no decision on s3://{bucket}/{key} with etag {etag}")
        data, content_type, current = fetch_image(self.client, bucket, key)
        if current != etag:
            raise Conflict(f"s3://{bucket}/{key} changed since (etag {current}, asked {etag})")
        return data, content_type
