"""The worker's S3 client (streams.worker.s3http through streams.worker.store) against the test stack's real
SeaweedFS: signed GET and HEAD, the answers sorted as the minio SDK's errors were (transient or the same
dead-letter kind), a bounded body, an answer cut mid-body, a silent store, keep-alive reuse, and HTTPS.

Faults are made by a TCP proxy in front of SeaweedFS (it forwards the real store's bytes and then cuts or
withholds them); nothing here is a fake store."""
from __future__ import annotations

import asyncio
import io
import ssl
import subprocess

import pytest
from minio.error import S3Error
from pydantic import SecretStr

from streams.worker.store import FetchError, ObjectStore, StoreUnavailable, make_client
from tests.worker_fixtures import jpeg, unique_prefix

pytestmark = pytest.mark.stack


class Proxy:
    """127.0.0.1:port -> SeaweedFS. `cut_after`: close each connection after that many answer bytes;
    `silent`: accept and never answer; `tls`: terminate TLS with (certfile, keyfile). Counts connections."""

    def __init__(self, target: str, cut_after: int | None = None, silent: bool = False, tls: tuple | None = None):
        host, _, port = target.rpartition(":")
        self.target, self.cut_after, self.silent, self.connections = (host, int(port)), cut_after, silent, 0
        self.tls = None
        if tls:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(*tls)

    async def __aenter__(self) -> "Proxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.silent:
            await reader.read()
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection(*self.target)

        async def pump(src, dst, limit=None):
            sent = 0
            while data := await src.read(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.write(data[:limit - sent])
                    await dst.drain()
                    dst.transport.abort() if hasattr(dst, "transport") else dst.close()
                    return
                sent += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer, self.cut_after), return_exceptions=True)
        writer.close()
        up_w.close()


@pytest.fixture
def put(stack_settings):
    client = make_client(stack_settings)

    def put(key: str, data: bytes) -> str:
        return client.put_object(stack_settings.bucket, key, io.BytesIO(data), len(data)).etag.strip('"')
    return put


def store_for(settings, **update) -> ObjectStore:
    return ObjectStore(settings.model_copy(update=update))


async def test_get_and_head_are_signed_as_the_store_expects_for_awkward_keys(stack_settings, put):
    p = unique_prefix("s3http")
    keys = [p + "plain.jpg", p + "with space+plus=eq&amp~tilde.jpg", p + "ünïcødé/深い/ключ.jpg", p + "a%2Fb!'()*.jpg"]
    data = {k: jpeg(i, seed=i) for i, k in enumerate(keys)}
    etags = {k: put(k, v) for k, v in data.items()}
    store = store_for(stack_settings)
    try:
        for k in keys:
            obj = await store.fetch(stack_settings.bucket, k)
            assert obj.data == data[k] and obj.etag == etags[k], k
            assert await store.stat_etag(stack_settings.bucket, k) == etags[k]
        # keep-alive: the sequential requests above went over one connection, which is still idle in the pool
        # and holds no object's bytes once a GET is done (only what the fetch budget counts is held)
        assert (await store.fetch(stack_settings.bucket, keys[0])).data == data[keys[0]]
        assert len(store.http._idle) == 1 and not store.http._idle[0]._body
    finally:
        store.close()


async def test_missing_objects_and_buckets_get_the_kinds_the_sdk_gave(stack_settings):
    store, sdk = store_for(stack_settings), make_client(stack_settings)
    key = unique_prefix("s3http") + "never-uploaded.jpg"
    try:
        for bucket, kind in ((stack_settings.bucket, "object_missing"), ("no-such-bucket-here", "bucket_missing")):
            with pytest.raises(FetchError) as e:
                await store.fetch(bucket, key)
            assert e.value.kind == kind
            with pytest.raises(S3Error) as sdk_error:  # the same answer, as the SDK read it
                sdk.get_object(bucket, key)
            assert sdk_error.value.code in e.value.message
            assert await store.stat_etag(bucket, key) is None
    finally:
        store.close()


async def test_rejected_credentials_are_sorted_as_the_sdk_error_was(stack_settings, put):
    """A wrong secret or an unknown key: the store's code is the SDK's, and stays transient (credentials the
    store rejects for now are retried, never a dead letter: streams.worker.store.TRANSIENT_CODES)."""
    key = unique_prefix("s3http") + "creds.jpg"
    put(key, jpeg(0, seed=1))
    for update in ({"s3_secret_key": SecretStr("not-the-secret")}, {"s3_access_key": "nobody"}):
        settings = stack_settings.model_copy(update=update)
        store = ObjectStore(settings)
        try:
            with pytest.raises(S3Error) as sdk_error:
                make_client(settings).get_object(stack_settings.bucket, key)
            with pytest.raises(StoreUnavailable) as e:
                await store.fetch(stack_settings.bucket, key)
            assert sdk_error.value.code in str(e.value), (sdk_error.value.code, str(e.value))
            with pytest.raises(StoreUnavailable):
                await store.stat_etag(stack_settings.bucket, key)
        finally:
            store.close()


async def test_a_body_over_the_limit_is_too_large_and_the_connection_is_dropped(stack_settings, put):
    key = unique_prefix("s3http") + "big.jpg"
    put(key, b"\xff\xd8\xff" + bytes(200_000))
    store = store_for(stack_settings, max_object_bytes=100_000)
    try:
        with pytest.raises(FetchError) as e:
            await store.fetch(stack_settings.bucket, key)
        assert e.value.kind == "too_large" and "200003 bytes > limit 100000" in e.value.message
        assert not store.http._idle  # its body was never read: the connection is not reused
        small = unique_prefix("s3http") + "small.jpg"
        put(small, b"x" * 1000)
        assert (await store.fetch(stack_settings.bucket, small)).data == b"x" * 1000
    finally:
        store.close()


async def test_an_answer_cut_mid_body_is_transient_and_then_fetched(stack_settings, put):
    key = unique_prefix("s3http") + "cut.jpg"
    data = jpeg(1, seed=3, size=(800, 600))
    put(key, data)
    async with Proxy(stack_settings.s3_endpoint, cut_after=len(data) // 2) as proxy:
        store = store_for(stack_settings, s3_endpoint=proxy.address)
        try:
            with pytest.raises(StoreUnavailable, match="connection closed after"):
                await store.fetch(stack_settings.bucket, key)
            proxy.cut_after = None
            assert (await store.fetch_with_retries(stack_settings.bucket, key)).data == data
        finally:
            store.close()


async def test_a_store_that_never_answers_times_out_as_transient(stack_settings):
    async with Proxy(stack_settings.s3_endpoint, silent=True) as proxy:
        store = store_for(stack_settings, s3_endpoint=proxy.address)
        store.http.read_timeout = 0.5
        try:
            with pytest.raises(StoreUnavailable, match="TimeoutError"):
                await asyncio.wait_for(store.fetch(stack_settings.bucket, "any.jpg"), 10)
        finally:
            store.close()


async def test_https_with_a_private_ca(stack_settings, put, tmp_path):
    """ARTROUTE_S3_SECURE with ARTROUTE_S3_CAFILE: the certificate is verified (a store without it is refused)
    and the signed request passes the real store behind the TLS terminator."""
    cert, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(keyfile), "-out", str(cert)],
                   check=True, capture_output=True)
    key = unique_prefix("s3http") + "tls.jpg"
    data = jpeg(2, seed=4)
    etag = put(key, data)
    async with Proxy(stack_settings.s3_endpoint, tls=(cert, keyfile)) as proxy:
        store = store_for(stack_settings, s3_endpoint=proxy.address, s3_secure=True, s3_cafile=cert)
        untrusted = store_for(stack_settings, s3_endpoint=proxy.address, s3_secure=True)
        try:
            obj = await store.fetch(stack_settings.bucket, key)
            assert obj.data == data and obj.etag == etag
            with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusted.fetch(stack_settings.bucket, key)
        finally:
            store.close()
            untrusted.close()
