"""No silent ignores, no mismatches: image-like uploads the decoder cannot read are dead letters `unsupported`;
a stale event is decided as the content the store holds (and says so); a key the store normalised ('//') is
decided under the key the store holds, naming the one that was uploaded."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from streams.orchestration.harness import Upload, collect_outcomes, upload_all
from tests.fault_fixtures import log_tail_on_failure, publish_events, upload_quietly
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack

OCTET = "application/octet-stream"


def dng() -> bytes:
    """A TIFF carrying the DNGVersion tag: what a camera's DNG raw looks like to a TIFF reader."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 60, 30)).save(buf, "TIFF", tiffinfo={50706: b"\x01\x04\x00\x00"})
    return buf.getvalue()


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


async def test_image_like_uploads_sent_as_octet_stream_end_as_decisions_or_dead_letters(worker, stack_settings):
    p = unique_prefix("octet")
    uploads = [Upload(p + "phone.heic", HEIC, OCTET), Upload(p + "camera.dng", dng(), OCTET),
               Upload(p + "scan.jfif", jpeg(1, seed=31), OCTET), Upload(p + "raw.CR2", dng(), OCTET),
               Upload(p + "renamed.jpg", dng(), OCTET), Upload(p + "typed.heic", HEIC, "image/heic")]
    upload_all(stack_settings, uploads)
    out = await outcomes_for(stack_settings, [u.key for u in uploads], timeout=120)
    assert not [u.key for u in uploads if not out.settled(u.key)], "image-like uploads with no outcome at all"
    kinds = {k: v[0]["error_kind"] for k, v in out.dead_letters.items()}
    assert set(out.decisions) == {p + "scan.jfif"}, kinds
    assert kinds == dict.fromkeys([p + "phone.heic", p + "camera.dng", p + "raw.CR2", p + "renamed.jpg",
                                   p + "typed.heic"], "unsupported")


async def test_a_stale_event_is_decided_as_the_content_the_store_holds(own_worker, stack_settings):
    p = unique_prefix("etag")
    key = p + "replaced.bin"
    [old] = upload_quietly(stack_settings, {key: jpeg(0, seed=41)}).values()
    [new] = upload_quietly(stack_settings, {key: jpeg(2, seed=42)}).values()
    assert old.etag != new.etag
    worker, topic = await own_worker("etag")
    with log_tail_on_failure(worker.log_path):
        await publish_events(stack_settings, topic, [old], content_type="image/jpeg")  # names the old content
        out = await collect_outcomes(stack_settings, [key], timeout=120, linger=0)
    [d] = out.decisions[key]
    assert d["etag"] == new.etag and d["event_etag"] == old.etag


async def test_a_key_the_store_normalised_is_decided_under_the_stored_key(own_worker, stack_settings):
    p = unique_prefix("slashes")
    uploaded, stored = p + "box//item.bin", p + "box/item.bin"
    [up] = upload_quietly(stack_settings, {uploaded: jpeg(3, seed=51)}).values()
    worker, topic = await own_worker("slashes")
    with log_tail_on_failure(worker.log_path):
        await publish_events(stack_settings, topic, [up], content_type="image/jpeg")  # an S3 event, key as uploaded
        out = await collect_outcomes(stack_settings, [uploaded, stored], timeout=120, linger=0, at_least=1)
    assert not out.settled(uploaded), "decided under a key the store does not hold"
    [d] = out.decisions[stored]
    assert d["uploaded_key"] == uploaded and d["etag"] == up.etag
