"""Draining the verdict outbox to Kafka.

Rows are sent in outbox order (one object's verdicts keep their order: same key, same partition), the
loop waits for the broker's acks (acks=all), and only then marks them published. While the broker is
away the send is retried under the one retry policy (streams/contract/retry.py) and nothing is marked;
rows saved meanwhile simply wait. A crash between the broker's ack and the mark sends the same rows
again: the same verdict ids and the same bytes (the payload was written once, with the verdict), so a
consumer that keeps the latest verdict per object is unaffected. Run one drainer per ledger database
(`python -m streams ledger run`); a second one is safe but may send such identical duplicates.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, func, select, update

from streams.contract.retry import RetryPolicy, call_with_retries
from streams.ledger.db import read, write
from streams.ledger.models import OutboxRow
from streams.worker.publisher import Publisher
from streams.worker.settings import Settings

log = logging.getLogger(__name__)
OUTBOX = OutboxRow.__table__
PUBLISHED = Counter("artroute_ledger_verdicts_published_total", "Verdict messages acknowledged by the broker")
PENDING = Gauge("artroute_ledger_outbox_pending", "Verdict messages saved but not yet acknowledged by the broker")


def kafka_transient(e: BaseException) -> bool:
    """The broker is away or busy: connection errors, timeouts, retriable broker answers."""
    return isinstance(e, (KafkaTimeoutError, OSError, asyncio.TimeoutError)) or (
        isinstance(e, KafkaError) and bool(getattr(e, "retriable", False)))


def pending(engine: Engine) -> int:
    with read(engine) as conn:
        return conn.execute(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))).scalar_one()


class OutboxDrainer:
    def __init__(self, engine: Engine, settings: Settings, batch: int = 500, idle_s: float = 0.5):
        self.engine, self.settings, self.batch, self.idle_s = engine, settings, batch, idle_s
        self.publisher: Publisher | None = None
        self.policy = RetryPolicy("publishing verdicts", initial_s=0.2, max_s=10.0)

    async def _ensure_topic(self) -> None:
        """Create the verdicts topic when the broker has none (as the worker's app does for its topics);
        a broker that refuses (no permission) is left to its operator."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        s = self.settings
        admin = AIOKafkaAdminClient(**s.kafka_client_kwargs(), request_timeout_ms=10000)
        await admin.start()
        try:
            if s.verdicts_topic not in set(await admin.list_topics()):
                await admin.create_topics([NewTopic(s.verdicts_topic, s.topic_partitions, 1)])
                log.info("created topic %s (%d partitions)", s.verdicts_topic, s.topic_partitions)
        except KafkaError as e:
            if not isinstance(e, TopicAlreadyExistsError):
                log.warning("could not create topic %s: %s", s.verdicts_topic, e)
        finally:
            await admin.close()

    async def _send(self, records) -> None:
        # Checked before every send: a broker that lost the topic (tansu's memory storage, restarted) acks
        # records for an unknown topic and drops them (docs/stack.md).
        await self._ensure_topic()
        if self.publisher is None:
            publisher = Publisher(self.settings)
            await publisher.start()
            self.publisher = publisher
        try:
            await self.publisher.send_all(records)
        except KafkaError:
            # A fresh producer for the next attempt: a restarted broker may have a new cluster and topics.
            publisher, self.publisher = self.publisher, None
            await publisher.stop()
            raise

    def _take(self) -> list[tuple[int, str, str, str]]:
        with read(self.engine) as conn:
            stmt = select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload).where(
                OUTBOX.c.published_at.is_(None)).order_by(OUTBOX.c.id).limit(self.batch)
            return [tuple(r) for r in conn.execute(stmt)]

    def _mark(self, ids: list[int]) -> None:
        with write(self.engine) as conn:
            conn.execute(update(OUTBOX).where(OUTBOX.c.id.in_(ids)).values(published_at=datetime.now(UTC)))

    def _count_attempt(self, ids: list[int]) -> None:
        with write(self.engine) as conn:
            conn.execute(update(OUTBOX).where(OUTBOX.c.id.in_(ids)).values(attempts=OUTBOX.c.attempts + 1))

    async def drain_once(self, stop: asyncio.Event | None = None) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        rows = await asyncio.to_thread(self._take)
        if not rows:
            return 0
        ids = [r[0] for r in rows]
        records = [(topic, key.encode(), payload.encode()) for _, topic, key, payload in rows]
        await asyncio.to_thread(self._count_attempt, ids)

        def on_retry(exc: BaseException, attempt: int, wait: float) -> None:
            self._count_attempt(ids)  # every try shows, so an operator sees a message that keeps failing

        await call_with_retries(lambda: self._send(records), transient=kafka_transient, policy=self.policy,
                                stop=stop, on_retry=on_retry)
        await asyncio.to_thread(self._mark, ids)
        PUBLISHED.inc(len(ids))
        return len(ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until `stop` is set; a permanent error is logged and retried after a pause."""
        try:
            while not stop.is_set():
                try:
                    sent = await self.drain_once(stop)
                    PENDING.set(await asyncio.to_thread(pending, self.engine))
                except Exception as e:  # noqa: BLE001 - nothing is marked: the rows are sent again later
                    if stop.is_set():
                        break
                    log.error("verdict outbox: %s: %s (retrying in 5 s)", type(e).__name__, e)
                    sent = 0
                    await _wait(stop, 5.0)
                if not sent:
                    await _wait(stop, self.idle_s)
        finally:
            if self.publisher is not None:
                await self.publisher.stop()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
