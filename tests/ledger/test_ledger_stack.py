"""The ledger on the real stack (tansu, SeaweedFS, Triton, the session's worker), as a real process
(`python -m streams ledger run --api`) on SQLite and on PostgreSQL: every upload is one ledger row, replays
change nothing, a verdict reaches the verdicts topic, object images are served by key and etag."""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from streams.contract.curation import IMAGE_PATH, Verdict
from streams.ledger.service import Ledger
from streams.orchestration.harness import LedgerProcess, Upload, upload_all
from streams.stack.processes import free_port
from streams.worker.replay import replay
from tests.worker_fixtures import jpeg, outcomes_for, unique_prefix

pytestmark = pytest.mark.stack


def ledger_env(stack, settings, url: str, **extra) -> dict[str, str]:
    return {"ARTROUTE_STACK_FILE": str(stack.run_dir / "endpoints.json"), "ARTROUTE_LEDGER_URL": url,
            "ARTROUTE_LEDGER_CONSUMER_GROUP": f"ledger-{uuid.uuid4().hex[:8]}", "ARTROUTE_AUDIT_RATE": "0",
            "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4", "ARTROUTE_LEDGER_API_PORT": str(settings.ledger_api_port),
            "ARTROUTE_TRITON_URL": settings.triton_url, "ARTROUTE_LOG_JSON": "false", **extra}


async def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def metric(port: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def ledger_proc(stack, stack_settings, ledger_url, tmp_path):
    settings = stack_settings.model_copy(update={"ledger_url": ledger_url, "ledger_api_port": free_port()})
    proc = LedgerProcess(ledger_env(stack, settings, ledger_url), log_path=tmp_path / "ledger.log").start()
    yield proc, settings
    proc.stop()


async def test_every_upload_is_one_ledger_row_and_replays_change_nothing(worker, ledger_proc, stack_settings, tmp_path):
    proc, settings = ledger_proc
    port = settings.ledger_api_port
    prefix = unique_prefix("ledger")
    images = [Upload(prefix + f"{i:02d}.jpg", jpeg(i % 4, seed=500 + i)) for i in range(16)]
    bad = [Upload(prefix + "bad/empty.jpg", b""), Upload(prefix + "bad/notes.jpg", b"not a photo\n" * 20)]
    upload_all(stack_settings, images + bad)
    kafka = await outcomes_for(stack_settings, [u.key for u in images + bad], timeout=180)
    assert len(kafka.decisions) == 16 and len(kafka.dead_letters) == 2
    ledger = await wait_until(lambda: _open(settings), 60, "the ledger's database")
    await wait_until(lambda: ledger.counts(prefix).objects == 18, 120, "18 objects in the ledger")
    first = ledger.counts(prefix)
    review = sum(1 for docs in kafka.decisions.values() if docs[0]["needs_review"])
    assert (first.decided, first.decisions, first.dead_letters, first.in_review) == (16, 16, 2, review)

    dupes = metric(port, "artroute_ledger_ingested_total", 'kind="decision",result="duplicate"')
    for attempt in range(2):  # the back catalog replayed twice: the worker decides every image again
        summary = await replay(settings, settings.bucket, prefix, rate=0, state=tmp_path / f"replay{attempt}.json",
                               progress=False)
        assert summary.published == 18
    await wait_until(lambda: metric(port, "artroute_ledger_ingested_total",
                                    'kind="decision",result="duplicate"') >= dupes + 32
                     and ledger.counts(prefix).dead_letter_messages == 6, 180, "the replayed outcomes")
    again = ledger.counts(prefix)
    assert (again.objects, again.decided, again.decisions, again.in_review) == (18, 16, 16, review)
    assert again.dead_letters == 2 and again.dead_letter_messages == 6   # each replay re-dead-letters its bad files

    # The object's photo, through the API, by key and etag: only content the ledger decided.
    item = ledger.history(bucket=settings.bucket, key=images[3].key).object
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        r = await http.get(IMAGE_PATH, params={"bucket": settings.bucket, "key": item.key, "etag": item.etag})
        assert r.status_code == 200 and r.content == images[3].data
        r = await http.get(IMAGE_PATH, params={"bucket": settings.bucket, "key": item.key, "etag": "0" * 32})
        assert r.status_code == 404
    ledger.close()


def _open(settings) -> Ledger | None:
    try:
        ledger = Ledger.open(settings, upgrade=False)
        ledger.counts()
        return ledger
    except Exception:  # noqa: BLE001 - the process has not created the schema yet
        return None


async def test_a_verdict_round_trips_to_the_verdicts_topic(worker, ledger_proc, stack_settings):
    proc, settings = ledger_proc
    prefix = unique_prefix("verdict")
    [up] = upload_all(stack_settings, [Upload(prefix + "one.jpg", jpeg(1, seed=901))])
    ledger = await wait_until(lambda: _open(settings), 60, "the ledger's database")
    await wait_until(lambda: ledger.counts(prefix).decided == 1, 120, "the decision in the ledger")
    obj = ledger.history(bucket=settings.bucket, key=up.key).object
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.ledger_api_port}") as http:
        r = await http.post("/api/v1/verdicts", json={"decision_id": obj.decision_id, "kind": "correct", "department": "Arms and Armor",
                                                      "curator": "amy", "note": "a helmet"})
        assert r.status_code == 201, r.text
    sent = Verdict.model_validate(r.json())
    found = await read_verdicts(settings, {sent.verdict_id}, timeout=60)
    assert found[sent.verdict_id] == [sent]
    assert found[sent.verdict_id][0].key == up.key
    await wait_until(lambda: ledger.counts().verdicts == 1 and _outbox_empty(ledger), 30, "the outbox drained")
    ledger.close()


def _outbox_empty(ledger: Ledger) -> bool:
    from streams.ledger.outbox import pending

    return pending(ledger.engine) == 0


async def read_verdicts(settings, wanted: set[str], timeout: float) -> dict[str, list[Verdict]]:
    """Every verdict message with one of these ids on the verdicts topic (read until all are there)."""
    consumer = AIOKafkaConsumer(settings.verdicts_topic, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, **settings.kafka_client_kwargs())
    await consumer.start()
    found: dict[str, list[Verdict]] = {}
    try:
        deadline = time.monotonic() + timeout
        done_at = None
        while time.monotonic() < deadline and (done_at is None or time.monotonic() < done_at + 2):
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    v = Verdict.model_validate(json.loads(m.value))
                    assert m.key.decode() == v.key
                    if v.verdict_id in wanted:
                        found.setdefault(v.verdict_id, []).append(v)
            if done_at is None and wanted <= set(found):
                done_at = time.monotonic()
    finally:
        await consumer.stop()
    return found
