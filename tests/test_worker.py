"""The routing worker end to end on the real stack: uploads to SeaweedFS, filer events on tansu, a real
`python -m streams worker` process, Triton inference, decisions read back from Kafka."""
from __future__ import annotations

import base64
import io
import json
import time
import zlib
import struct

import pytest
from PIL import Image

from streams.contract.model import ModelContract
from streams.worker.events import to_s3_event_json
from streams.orchestration.harness import Upload, upload_all
from streams.worker.publisher import Publisher
from tests.model_fixture import DEPARTMENTS
from trainer.metapi.models import department_id
from tests.worker_fixtures import MAX_OBJECT_BYTES, jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack


def _png_bomb() -> bytes:
    """A tiny PNG whose header declares 30000 x 30000 pixels (900 MP)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compress(b"\x00" * 1000)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _tiff16() -> bytes:
    import numpy as np
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype("<u2")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "TIFF")  # uint16 -> mode I;16
    return buf.getvalue()


async def test_one_upload_gives_exactly_one_decision_with_correct_fields(worker, stack_settings,
                                                                         served_model_repository):
    key = unique_prefix("single") + "Ägypten statue 1.jpg"
    [up] = upload_all(stack_settings, [Upload(key, jpeg(0, seed=5))])
    out = await outcomes_for(stack_settings, [key])
    assert key not in out.dead_letters
    assert len(out.decisions.get(key, [])) == 1, out.decisions.get(key)
    d = out.decisions[key][0]
    assert d["bucket"] == stack_settings.bucket and d["key"] == key and d["etag"] == up.etag
    assert d["department"] in DEPARTMENTS
    assert [t["label"] for t in d["top3"]][0] == d["department"]
    assert d["confidence"] == pytest.approx(d["top3"][0]["score"])
    assert d["top3"][0]["score"] >= d["top3"][1]["score"] >= d["top3"][2]["score"]
    assert d["model"]["name"] == "artroute" and d["model"]["version"] == "1"
    contract = ModelContract.model_validate_json(
        (served_model_repository / "artroute" / "1" / "contract.json").read_text())
    ids = {lb.name: lb.department_id for lb in contract.labels}  # from the corpus rows' MET department ids
    assert d["department_id"] == ids[d["department"]] and d["department_id"] == department_id(d["department"])
    assert (key in out.review) == d["needs_review"]


async def test_bad_inputs_are_dead_lettered_while_good_images_in_the_batch_are_decided(worker, stack_settings):
    p = unique_prefix("bad")
    good = {p + f"good{i}.jpg": jpeg(i % 4, seed=100 + i) for i in range(6)}
    hard_but_valid = {p + "scan16.tif": (_tiff16(), "image/tiff"), p + "cmyk.jpg": (jpeg(1, 7, mode="CMYK"), "image/jpeg")}
    real_jpeg = jpeg(2, seed=9, size=(400, 300))
    bad = {
        p + "corrupt.jpg": real_jpeg[:20] + b"\x00garbage" * 50 + real_jpeg[-200:],
        p + "truncated.jpg": real_jpeg[: len(real_jpeg) // 2],
        p + "empty.jpg": b"",
        p + "text.jpg": b"just some text, not a picture\n" * 20,
        p + "document.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
        p + "bomb.png": _png_bomb(),
        p + "huge.jpg": b"\xff\xd8\xff" + bytes(MAX_OBJECT_BYTES + 10),
        p + "vector.jpg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    }
    uploads = [Upload(k, v) for k, v in {**good, **bad}.items()]
    uploads += [Upload(k, data, ctype) for k, (data, ctype) in hard_but_valid.items()]
    upload_all(stack_settings, uploads)
    # Events without a usable object behind them, straight onto the intake topic.
    vanished, no_bucket = p + "deleted-before-fetch.jpg", p + "no-bucket.jpg"
    bad_json, bad_record = b'{"Records": [ {"eventName": "s3:ObjectCreated:Put", ', json.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{stack_settings.bucket}/{p}x.jpg",
         "Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": stack_settings.bucket},
                                                                 "object": {"key": p + "no-size.jpg"}}}]}).encode()
    async with Publisher(stack_settings) as pub:
        await pub.send_all([
            (stack_settings.intake_topic, vanished.encode(), to_s3_event_json(stack_settings.bucket, vanished, 1234, "abc123")),
            (stack_settings.intake_topic, no_bucket.encode(), to_s3_event_json("no-such-bucket", no_bucket, 1234, "abc124")),
            (stack_settings.intake_topic, b"bad-json", bad_json),
            (stack_settings.intake_topic, b"bad-record", bad_record),
            (stack_settings.intake_topic, b"/buckets/x/garbage.jpg", b"\x12\xff\xff\xff\xff\x0fnot protobuf at all"),
        ])
    keys = [*good, *hard_but_valid, *bad, vanished, no_bucket]
    out = await outcomes_for(stack_settings, keys, timeout=180)
    assert set(out.decisions) == set(good) | set(hard_but_valid), {k: v[0]["error_kind"] for k, v in out.dead_letters.items()}
    kinds = {k: v[0]["error_kind"] for k, v in out.dead_letters.items()}
    assert set(kinds) == set(bad) | {vanished, no_bucket}
    assert kinds[p + "empty.jpg"] == "empty" and kinds[p + "bomb.png"] == "bomb"
    assert kinds[p + "huge.jpg"] == "too_large" and kinds[vanished] == "object_missing"
    assert kinds[p + "truncated.jpg"] in ("truncated", "corrupt")
    assert kinds[p + "text.jpg"] == kinds[p + "document.jpg"] == "not_image"
    for docs in out.dead_letters.values():
        assert docs[0]["message"] and docs[0]["original_b64"]
    # The malformed events name no object: find their dead letters by the original message key.
    malformed = await _dead_letters_by_original_key(stack_settings, {"bad-json", "bad-record", "/buckets/x/garbage.jpg"})
    assert {k: d["error_kind"] for k, d in malformed.items()} == dict.fromkeys(malformed, "bad_event")
    assert len(malformed) == 3 and all(d["stage"] == "parse" and d["message"] for d in malformed.values())
    assert base64.b64decode(malformed["bad-json"]["original_b64"]) == bad_json


async def _dead_letters_by_original_key(settings, keys: set[str]) -> dict[str, dict]:
    from aiokafka import AIOKafkaConsumer
    c = AIOKafkaConsumer(settings.deadletter_topic, bootstrap_servers=settings.kafka_brokers, group_id=None,
                         auto_offset_reset="earliest")
    await c.start()
    found: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(found) < len(keys):
            for msgs in (await c.getmany(timeout_ms=500)).values():
                for m in msgs:
                    doc = json.loads(m.value)
                    if doc.get("original_key") in keys:
                        found[doc["original_key"]] = doc
    finally:
        await c.stop()
    return found


async def test_duplicate_events_give_identical_decision_ids(worker, stack_settings):
    key = unique_prefix("dup") + "twice.jpg"
    [up] = upload_all(stack_settings, [Upload(key, jpeg(3, seed=11))])
    event = to_s3_event_json(stack_settings.bucket, key, len(up.data), up.etag)
    async with Publisher(stack_settings) as pub:
        await pub.send_all([(stack_settings.intake_topic, key.encode(), event)] * 2)
    out = await outcomes_for(stack_settings, [key], linger=3.0)
    deadline = time.monotonic() + 60
    while len(out.decisions.get(key, [])) < 3 and time.monotonic() < deadline:
        out = await outcomes_for(stack_settings, [key], linger=3.0)
    ids = {d["decision_id"] for d in out.decisions[key]}
    assert len(out.decisions[key]) == 3  # the filer's event and the two replayed ones
    assert len(ids) == 1


async def test_metrics_and_health_endpoints(worker, worker_env, stack_settings):
    import urllib.request

    key = unique_prefix("metrics") + "m.jpg"
    upload_all(stack_settings, [Upload(key, jpeg(1, seed=21))])
    await outcomes_for(stack_settings, [key])
    base = f"http://127.0.0.1:{worker_env['ARTROUTE_METRICS_PORT']}"
    with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    decided = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("artroute_decisions_total{"))
    assert decided >= 1
    assert "artroute_batch_images_count" in text and "artroute_inference_seconds_bucket" in text
