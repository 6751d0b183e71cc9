"""Hostile intake messages: whatever the bytes, each ends as a dead letter that fits the broker, and none takes
its batch-mates with it (a worker of its own reads a topic of its own, one batch holding everything)."""
from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer

from streams.orchestration.harness import collect_outcomes
from streams.worker.events import to_s3_event_json
from tests.fault_fixtures import log_tail_on_failure, publish_events, publish_raw, upload_quietly
from tests.worker_fixtures import jpeg, unique_prefix

pytestmark = pytest.mark.stack

DEADLETTER_MAX = 64 * 1024  # the workers here run with a small limit, to see it hold


async def dead_letters_by_original_key(settings, keys: set[str], timeout: float = 60) -> dict[str, list[tuple[int, dict]]]:
    """original_key -> [(encoded size, dead letter)] for dead letters of messages with those Kafka keys."""
    c = AIOKafkaConsumer(settings.deadletter_topic, group_id=None, auto_offset_reset="earliest",
                         **settings.kafka_client_kwargs())
    await c.start()
    found: dict[str, list[tuple[int, dict]]] = {}
    try:
        deadline, idle_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    doc = json.loads(m.value)
                    if doc.get("original_key") in keys:
                        found.setdefault(doc["original_key"], []).append((len(m.value), doc))
            if set(found) >= keys:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 1.0:
                    break
    finally:
        await c.stop()
    return found


def s3_message(records: list[dict]) -> bytes:
    return json.dumps({"EventName": "s3:ObjectCreated:Put", "Records": records}).encode()


def record(bucket: str, key: str, etag: str = "0" * 32) -> dict:
    return json.loads(to_s3_event_json(bucket, key, 1000, etag))["Records"][0]


async def test_poison_messages_become_dead_letters_and_take_no_batch_mate_with_them(own_worker, stack_settings):
    p = unique_prefix("poison")
    good = list(upload_quietly(stack_settings, {p + f"{i:02d}.bin": jpeg(i % 4, seed=500 + i)
                                                for i in range(30)}).values())
    surrogate = s3_message([record(stack_settings.bucket, p + "x.jpg")]).replace(b'x.jpg', b'\\ud800.jpg')
    poison = {
        b"deep": b"[" * 5000,                                                   # RecursionError in json
        b"deep-object": b'{"Records": [' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"]}",
        b"surrogate": surrogate,                                                # a lone \ud800 escape
        b"surrogate-value": b'{"Records": "\\udfff", "x": "\\ud800"}',
        b"nan": b'{"Records": [{"eventName": NaN}]}',
        b"binary": bytes(range(256)) * 4,
        b"zero": b"\x00" * 100,
        b"\xff\xfe bad key": b'{"Records": [null]}',
    }
    worker, topic = await own_worker("poison", ARTROUTE_MAX_BATCH="32", ARTROUTE_BATCH_WINDOW_S="1.0",
                                     ARTROUTE_DEADLETTER_MAX_BYTES=str(DEADLETTER_MAX))
    with log_tail_on_failure(worker.log_path):
        await publish_events(stack_settings, topic, good[:15], content_type="image/jpeg")
        await publish_raw(stack_settings, topic, list(poison.items()))
        await publish_events(stack_settings, topic, good[15:], content_type="image/jpeg")
        out = await collect_outcomes(stack_settings, [u.key for u in good], timeout=180, linger=0)
        lost = [u.key for u in good if u.key not in out.decisions]
        assert not lost, f"{len(lost)} of {len(good)} batch-mates of poison messages lost"
        wanted = {k.decode("utf-8", "replace") for k in poison}
        dls = await dead_letters_by_original_key(stack_settings, wanted)
    assert set(dls) == wanted
    for k, docs in dls.items():
        size, dl = docs[0]
        assert dl["error_kind"] == "bad_event" and dl["stage"] == "parse" and size <= DEADLETTER_MAX, (k, dl)
        original = poison[next(p for p in poison if p.decode("utf-8", "replace") == k)]
        assert dl["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert base64.b64decode(dl["original_b64"]) == original  # small messages travel whole


async def test_oversized_and_many_record_messages_give_bounded_dead_letters(own_worker, stack_settings):
    p = unique_prefix("bounded")
    after = list(upload_quietly(stack_settings, {p + f"after{i}.bin": jpeg(i % 4, seed=600 + i)
                                                 for i in range(4)}).values())
    big = b'{"Records": [{"junk": "' + b"x" * (4 * 2**20) + b'"}'  # 4 MB, malformed (unterminated)
    missing = [p + f"missing/{i:03d}.jpg" for i in range(500)]
    many = s3_message([record(stack_settings.bucket, k) for k in missing])  # ~350 KB, 500 missing objects
    worker, topic = await own_worker("bounded", ARTROUTE_DEADLETTER_MAX_BYTES=str(DEADLETTER_MAX))
    big_settings = stack_settings.model_copy(update={"kafka_max_message_bytes": 8 * 2**20})
    with log_tail_on_failure(worker.log_path):
        await publish_raw(big_settings, topic, [(b"four-megabytes", big), (b"five-hundred", many)])
        await publish_events(stack_settings, topic, after, content_type="image/jpeg")
        out = await collect_outcomes(stack_settings, missing + [u.key for u in after], timeout=240, linger=1.0)
        dls = await dead_letters_by_original_key(stack_settings, {"four-megabytes"})
    assert all(u.key in out.decisions for u in after), "events after the oversized message were not decided"
    [(size, dl)] = dls["four-megabytes"]
    assert size <= DEADLETTER_MAX and dl["original_truncated"] and dl["original_size"] == len(big)
    assert dl["original_sha256"] == hashlib.sha256(big).hexdigest() and dl["source_offset"] is not None
    assert base64.b64decode(dl["original_b64"]) == big[:1024]
    assert set(out.dead_letters) == set(missing)
    sizes = []
    for i, k in enumerate(missing):
        [d] = out.dead_letters[k]
        assert d["error_kind"] == "object_missing" and d["record_index"] == i and d["record_json"]["s3"]["object"]
        assert d["original_truncated"] and d["original_size"] == len(many) and not d["original_b64"]
        sizes.append(len(json.dumps(d)))
    assert max(sizes) < 4096, f"{max(sizes)} bytes in one dead letter"  # its record and a reference, no copy
