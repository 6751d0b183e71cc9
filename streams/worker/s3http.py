"""A lean S3 client for the worker's hot path: GET and HEAD of one object, in the event loop.

Through the minio SDK the fetch stage cost 1.3-1.7 ms of worker CPU per image (urllib3 and http.client per
request, the SigV4 signing key derived again each time, a thread hop each way); here 0.6-0.8 ms, socket reads
included (`streams bench --profile`, docs/benchmarks.md): HTTP/1.1 on asyncio keep-alive connections, the body read straight into one buffer of the announced size, SigV4 with the
signing key cached per day. Requests are signed as the SDK signs them (path style, or virtual-host style
for AWS endpoints; region from the settings, else the bucket's location, asked once).

This module only speaks HTTP: it returns every answer (`Answer`: status, headers, body) and raises
`OSError` when there is none (refused, reset, closed early, timed out, not HTTP) or `BodyTooLarge`.
What an answer means (transient or permanent, which dead-letter kind) is decided in streams.worker.store.
Listing, uploads and the rest still use the SDK.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from minio.helpers import BaseURL

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HEAD_LIMIT = 64 * 1024
"""Largest response head (status line and headers) accepted."""


class BodyTooLarge(Exception):
    def __init__(self, limit: int, length: int | None):
        super().__init__(f"body over {limit} bytes")
        self.limit, self.length = limit, length


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]   # lower-case names
    body: bytes


def s3_quote(text: str, safe: str = "/") -> str:
    """URI-encode as S3 and the SDK do ('~' kept)."""
    return quote(text, safe=safe).replace("%7E", "~")


class SigV4:
    """AWS Signature Version 4 headers for a request without a body."""

    def __init__(self, access_key: str, secret_key: str, payload_hash: str = EMPTY_SHA256):
        self.access_key, self.secret_key, self.payload_hash = access_key, secret_key, payload_hash
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, day: str, region: str) -> bytes:
        key = self._keys.get((day, region))
        if key is None:
            key = ("AWS4" + self.secret_key).encode()
            for part in (day, region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(day, region): key}  # one day at a time
        return key

    def headers(self, method: str, host: str, path: str, query: str, region: str,
                now: datetime | None = None) -> str:
        """The request's header lines (Host, x-amz-*, Authorization), CRLF-terminated."""
        amz = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = amz[:8]
        scope = f"{day}/{region}/s3/aws4_request"
        canonical = (f"{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{self.payload_hash}\n"
                     f"x-amz-date:{amz}\n\nhost;x-amz-content-sha256;x-amz-date\n{self.payload_hash}")
        to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(day, region), to_sign.encode(), hashlib.sha256).hexdigest()
        return (f"Host: {host}\r\nx-amz-content-sha256: {self.payload_hash}\r\nx-amz-date: {amz}\r\n"
                f"Authorization: AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}\r\n")


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection, one exchange at a time: the head is read into a scratch buffer, a body of
    known length straight into its own buffer; chunked bodies and bodies up to the close are collected."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open, self.reusable = False, False
        self._scratch = bytearray(HEAD_LIMIT)
        self._waiter: asyncio.Future | None = None
        self._mode, self._body, self._filled = "", bytearray(), 0  # a TLS transport may ask for a buffer early

    def connection_made(self, transport) -> None:
        self.transport, self.open = transport, True

    async def exchange(self, request: bytes, head_only: bool, max_bytes: int, read_timeout: float) -> Answer:
        loop = asyncio.get_running_loop()
        self._waiter, self._head_only, self._max = loop.create_future(), head_only, max_bytes
        self._head, self._status, self._headers, self._mode = bytearray(), 0, {}, ""
        self._body, self._filled, self._received, self._keep = bytearray(), 0, False, False
        self._state, self._chunk_left, self._raw = "", 0, bytearray()
        self.reusable, self._last = False, loop.time()
        timer = loop.call_later(read_timeout, self._check_idle, read_timeout)
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            timer.cancel()

    def _check_idle(self, timeout: float) -> None:
        if self._waiter is None or self._waiter.done():
            return
        idle = asyncio.get_running_loop().time() - self._last
        if idle >= timeout:
            self._fail(TimeoutError(f"no answer for {timeout:.0f}s"))
        else:
            asyncio.get_running_loop().call_later(timeout - idle, self._check_idle, timeout)

    # --- asyncio callbacks ---
    def get_buffer(self, sizehint: int) -> memoryview:
        if self._mode == "length" and self._filled < len(self._body):
            return memoryview(self._body)[self._filled:]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        self._received, self._last = True, asyncio.get_running_loop().time()
        if self._waiter is None or self._waiter.done():
            self._fail(OSError("unexpected bytes between exchanges"))
        elif self._mode == "length" and self._filled < len(self._body):
            self._filled += nbytes
            if self._filled == len(self._body):
                self._finish(bytes(self._body), reusable=True)
        else:
            try:
                self._feed(bytes(self._scratch[:nbytes]))
            except (OSError, BodyTooLarge) as e:
                self._fail(e)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost ends the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._waiter is None or self._waiter.done():
            return
        if self._mode == "close":
            self._finish(bytes(self._body), reusable=False)
        elif self._mode == "length":
            self._fail(OSError(f"connection closed after {self._filled} of {len(self._body)} bytes"))
        else:
            self._fail(ConnectionResetError(f"connection closed {'during' if self._received else 'before'} "
                                            f"the answer{f': {exc}' if exc else ''}"))

    # --- parsing (the head, and bodies that are chunked or end at the close: rare, so kept simple) ---
    def _feed(self, data: bytes) -> None:
        if not self._status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > HEAD_LIMIT:
                    raise OSError("answer head too long (not an S3 store?)")
                return
            data = bytes(self._head[end + 4:])
            self._parse_head(bytes(self._head[:end]))
            if self._waiter.done():
                return
        if self._mode == "chunked":
            self._feed_chunked(data)
        elif self._mode == "length":
            n = min(len(data), len(self._body) - self._filled)
            self._body[self._filled:self._filled + n] = data[:n]
            self._filled += n
            if self._filled == len(self._body):
                self._finish(bytes(self._body), reusable=n == len(data))
        else:
            self._collect(data)

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise OSError(f"not an HTTP answer: {lines[0][:80]!r}")
        self._status = int(parts[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self._headers[name.strip().lower()] = value.strip()
        self._keep = parts[0] == "HTTP/1.1" and self._headers.get("connection", "").lower() != "close"
        length = self._headers.get("content-length")
        if self._head_only or self._status in (204, 304) or 100 <= self._status < 200:
            self._finish(b"", reusable=self._keep)
        elif "chunked" in self._headers.get("transfer-encoding", "").lower():
            self._mode, self._state = "chunked", "size"
        elif length is not None:
            if not length.isdigit():
                raise OSError(f"bad Content-Length {length[:40]!r}")
            if int(length) > self._max:
                raise BodyTooLarge(self._max, int(length))
            self._mode, self._body = "length", bytearray(int(length))
            if not self._body:
                self._finish(b"", reusable=self._keep)
        else:
            self._mode = "close"

    def _collect(self, data: bytes) -> None:
        if len(self._body) + len(data) > self._max:
            raise BodyTooLarge(self._max, None)
        self._body += data

    def _feed_chunked(self, data: bytes) -> None:
        raw = self._raw
        raw += data
        while True:
            if self._state == "data":
                n = min(self._chunk_left, len(raw))
                self._collect(bytes(raw[:n]))
                del raw[:n]
                self._chunk_left -= n
                if self._chunk_left:
                    return
                self._state = "data_end"
            end = raw.find(b"\r\n")
            if end < 0:
                if len(raw) > HEAD_LIMIT:
                    raise OSError("bad chunked answer")
                return
            line = bytes(raw[:end])
            del raw[:end + 2]
            if self._state == "data_end":
                if line:
                    raise OSError("bad chunked answer: no CRLF after a chunk")
                self._state = "size"
            elif self._state == "size":
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise OSError("bad chunk size in a chunked answer") from None
                self._state, self._chunk_left = ("data", size) if size else ("trailer", 0)
            elif not line:  # the empty line after the trailers
                self._finish(bytes(self._body), reusable=self._keep and not raw)
                return

    def _finish(self, body: bytes, reusable: bool) -> None:
        self.reusable = reusable and self.open
        self._release()
        if not self._waiter.done():
            self._waiter.set_result(Answer(self._status, self._headers, body))

    def _release(self) -> None:
        """Drop the exchange's buffers: an idle connection in the pool holds no object's bytes."""
        self._body, self._filled, self._head, self._raw = bytearray(), 0, bytearray(), bytearray()

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        self._release()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class S3Http:
    """GET / HEAD of objects on one S3 endpoint over at most `pool_size` idle keep-alive connections."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, *, secure: bool = False,
                 region: str | None = None, ssl_context: ssl.SSLContext | None = None, pool_size: int = 16,
                 connect_timeout: float = 10.0, read_timeout: float = 30.0):
        self.netloc = endpoint
        host, _, port = endpoint.rpartition(":") if endpoint.rsplit(":", 1)[-1].isdigit() else (endpoint, "", "")
        self.host, self.port = host.strip("[]"), int(port) if port else (443 if secure else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if secure else None
        self.signer = SigV4(access_key, secret_key, "UNSIGNED-PAYLOAD" if secure else EMPTY_SHA256)
        self.region, self._regions = region, {}
        # AWS endpoints (and other virtual-host style ones) are addressed by the SDK's own rules (regional hosts,
        # virtual-host style but path style for dotted buckets over HTTPS and for GetBucketLocation)
        self._sdk_url = BaseURL(("https://" if secure else "http://") + endpoint, region)
        self.virtual_host = self._sdk_url.is_aws_host or self._sdk_url.virtual_style_flag
        self.pool_size, self.connect_timeout, self.read_timeout = pool_size, connect_timeout, read_timeout
        self._idle: list[_Connection] = []

    async def request(self, method: str, bucket: str, key: str = "", query: dict[str, str] | None = None,
                      max_bytes: int = 2**31) -> Answer:
        """One request (GET or HEAD); a stale keep-alive connection is replaced once, transparently."""
        region = self.region or await self._region(bucket)
        if isinstance(region, Answer):  # the bucket's location was refused: that is the store's answer (as the SDK)
            return region
        return await self._send(method, bucket, key, query, max_bytes, region)

    async def _send(self, method: str, bucket: str, key: str, query: dict[str, str] | None, max_bytes: int,
                    region: str) -> Answer:
        host, path = self._target(bucket, key, query, region)
        canonical_query = "&".join(f"{s3_quote(k, '')}={s3_quote(v, '')}" for k, v in sorted((query or {}).items()))
        target = path + (f"?{canonical_query}" if query else "")
        for attempt in range(2):
            conn, reused = await self._connection()
            request = (f"{method} {target} HTTP/1.1\r\n{self.signer.headers(method, host, path, canonical_query, region)}"
                       "User-Agent: artroute-worker\r\n\r\n").encode()
            try:
                answer = await conn.exchange(request, method == "HEAD", max_bytes, self.read_timeout)
            except ConnectionResetError:
                conn.transport.abort()
                if reused and attempt == 0:
                    continue  # the server closed the idle connection meanwhile
                raise
            except BaseException:
                conn.transport.abort()
                raise
            if conn.reusable and len(self._idle) < self.pool_size:
                self._idle.append(conn)
            else:
                conn.transport.close()
            return answer
        raise AssertionError("unreachable")

    def _target(self, bucket: str, key: str, query: dict | None, region: str) -> tuple[str, str]:
        """(Host header, request path) as the SDK addresses them: path style here, the SDK's rules for AWS."""
        if self.virtual_host:
            url = self._sdk_url.build(method="GET", region=region, bucket_name=bucket, object_name=key or None,
                                      query_params=query)
            return url.netloc, url.path
        return self.netloc, f"/{bucket}" + (f"/{s3_quote(key)}" if key else "")

    async def _region(self, bucket: str) -> str | Answer:
        """The bucket's region as the SDK finds it (GetBucketLocation signed for us-east-1, remembered per
        bucket), or the store's error answer to that request."""
        if bucket not in self._regions:
            import xml.etree.ElementTree as ET

            answer = await self._send("GET", bucket, "", {"location": ""}, HEAD_LIMIT, "us-east-1")
            if answer.status != 200:
                return answer
            try:
                text = ET.fromstring(answer.body).text
            except ET.ParseError:
                text = None
            self._regions[bucket] = "eu-west-1" if text == "EU" and self.virtual_host else text or "us-east-1"
        return self._regions[bucket]

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.open:
                return conn, True
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl,
                                   server_hostname=self.host if self.ssl else None), self.connect_timeout)
        return conn, False

    def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()
