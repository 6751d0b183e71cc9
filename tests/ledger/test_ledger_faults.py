"""Faults: the ledger process SIGKILLed mid-ingest (no gap, no double), and verdicts recorded while the
broker is down (all published once it is back, none twice). Each on SQLite and PostgreSQL.

Both use their own topics or their own broker, so the session's stack and worker are never disturbed.
"""
from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.ledger.outbox import OutboxDrainer, pending
from streams.ledger.service import Ledger
from streams.orchestration.harness import LedgerProcess
from streams.stack.processes import free_port
from streams.stack.servers import KafkaServer, create_topics
from tests.ledger.helpers import dead_letter, decision, items
from tests.ledger.test_ledger_stack import read_verdicts, wait_until

pytestmark = pytest.mark.stack
N = 3000


async def produce(settings, topic_of, messages) -> dict[TopicPartition, int]:
    """Publish (kind, message) pairs; returns the number of messages per partition."""
    producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic_of[kind], m.model_dump_json().encode(), key=(m.key or "").encode())
                   for kind, m in messages]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    per: dict[TopicPartition, int] = {}
    for md in sent:
        tp = TopicPartition(md.topic, md.partition)
        per[tp] = max(per.get(tp, 0), md.offset + 1)
    return per


async def committed(settings, group: str, partitions) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


async def test_killing_the_ledger_mid_ingest_loses_and_doubles_nothing(stack, stack_settings, ledger_url, tmp_path):
    run = uuid.uuid4().hex[:6]
    topics = {"decision": f"kill-{run}.decisions", "review": f"kill-{run}.review", "dead_letter": f"kill-{run}.dead"}
    await create_topics(stack_settings.kafka_brokers, {t: 4 for t in topics.values()})
    decisions = [decision(f"kill/{i:05d}.jpg", top=i % 4, confidence=0.5 + (i % 50) / 100) for i in range(N)]
    messages = [("decision", d) for d in decisions] + [("review", d) for d in decisions if d.needs_review]
    messages += [("dead_letter", dead_letter(f"kill/bad{i}.jpg", offset=i)) for i in range(50)]
    end = await produce(stack_settings, topics, messages)
    group = f"ledger-kill-{run}"
    env = {"ARTROUTE_STACK_FILE": str(stack.run_dir / "endpoints.json"), "ARTROUTE_LEDGER_URL": ledger_url,
           "ARTROUTE_LEDGER_CONSUMER_GROUP": group, "ARTROUTE_LEDGER_BATCH": "40", "ARTROUTE_AUDIT_RATE": "0.1",
           "ARTROUTE_DECISIONS_TOPIC": topics["decision"], "ARTROUTE_REVIEW_TOPIC": topics["review"],
           "ARTROUTE_DEADLETTER_TOPIC": topics["dead_letter"], "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4",
           "ARTROUTE_LEDGER_API_PORT": str(free_port()), "ARTROUTE_TRITON_URL": "127.0.0.1:1"}
    proc = LedgerProcess(env, log_path=tmp_path / "ledger.log")
    settings = stack_settings.model_copy(update={"ledger_url": ledger_url})
    engine = sa.create_engine(ledger_url)

    def stored() -> int:
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar()
        except sa.exc.DBAPIError:
            return 0

    kills = 0
    try:
        for target in (N // 5, N // 2, 4 * N // 5):   # three SIGKILLs, each part-way through
            proc.start()
            await wait_until(lambda: stored() >= target, 180, f"{target} decisions stored", interval=0.05)
            proc.kill()
            kills += 1
            assert stored() < N, "ingest finished before the kill: make N larger"
        proc.start()
        await wait_until(lambda: stored() == N, 180, "every decision stored")
        await asyncio.sleep(3)                        # anything extra would arrive now
    finally:
        proc.stop()
        engine.dispose()
    ledger = Ledger.open(settings)
    c = ledger.counts("kill/")
    assert kills == 3
    assert (c.decisions, c.objects, c.decided, c.dead_letters, c.dead_letter_messages) == (N, N + 50, N, 50, 50)
    assert c.in_review == sum(d.needs_review for d in decisions)
    with ledger.engine.connect() as conn:           # one row per id, every id there: no gap, no double
        ids = set(conn.execute(sa.text("SELECT decision_id FROM decisions")).scalars())
    assert ids == {d.decision_id for d in decisions}
    ledger.close()
    # The last run committed everything it stored.
    assert await committed(stack_settings, group, list(end)) == end


@pytest.fixture
def own_broker(tmp_path):
    """A tansu broker of this test's own (memory storage), stopped and restarted by the test."""
    port = free_port()
    server = KafkaServer(tmp_path / "broker", port)
    server.start(60, {})
    yield server
    server.process.stop()


async def test_verdicts_recorded_while_the_broker_is_down_are_published_once_it_is_back(own_broker, ledger_url,
                                                                                          ledger_settings, tmp_path):
    settings = ledger_settings.model_copy(update={"kafka_brokers": own_broker.bootstrap, "topic_partitions": 2})
    ledger = Ledger.open(settings)
    ds = [decision(f"outage/{i:02d}.jpg", top=i % 4, confidence=0.5) for i in range(25)]
    ledger.ingestor.ingest(items(*ds))
    stop = asyncio.Event()
    drainer = OutboxDrainer(ledger.engine, settings, batch=7, idle_s=0.1)
    task = asyncio.create_task(drainer.run(stop))
    try:
        before = [ledger.record_verdict(d.decision_id, "confirm", "amy") for d in ds[:5]]
        await wait_until(lambda: pending(ledger.engine) == 0, 60, "the first verdicts published")
        assert set(await read_verdicts(settings, {v.verdict_id for v in before}, timeout=30)) == \
            {v.verdict_id for v in before}

        own_broker.process.stop()                                   # the broker goes away
        during = [ledger.record_verdict(d.decision_id, "correct", "bob", department="Asian Art"
                                        if d.department != "Asian Art" else "Egyptian Art") for d in ds[5:]]
        await asyncio.sleep(4)                                      # the drainer keeps trying meanwhile
        assert pending(ledger.engine) == 20
        with ledger.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT max(attempts) FROM outbox WHERE published_at IS NULL")).scalar() >= 1

        await asyncio.to_thread(own_broker.start, 60, {})           # back (memory storage: an empty broker)
        await wait_until(lambda: pending(ledger.engine) == 0, 120, "the outbox drained after the outage")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    found = await read_verdicts(settings, {v.verdict_id for v in during}, timeout=30)
    assert set(found) == {v.verdict_id for v in during}
    assert all(len(msgs) == 1 for msgs in found.values()), "a verdict was published twice"
    assert all(found[v.verdict_id][0] == v for v in during)          # the very content that was saved
    ledger.close()
