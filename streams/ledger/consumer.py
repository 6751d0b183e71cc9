"""The ledger's ingest: its own consumer group on the decision, review and dead-letter topics.

Each poll (at most ARTROUTE_LEDGER_BATCH messages) is written in one database transaction, and only
after that transaction committed are the Kafka offsets committed. Killed anywhere, the ledger restarts
from the last committed offsets: what was written but not committed comes again and is recognised by
its id (no double), nothing after the committed offsets was acknowledged (no gap).

A database that is away is retried (the batch is held, nothing committed); a batch that fails for
another reason is written one message at a time so that one bad message is skipped (counted in
`artroute_ledger_rejected_total`) instead of stalling its partition.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import DBAPIError, OperationalError

from streams.contract.retry import RetryPolicy, call_with_retries
from streams.ledger.ingest import IngestResult, Ingestor
from streams.ledger.messages import Rejected, parse
from streams.ledger.outbox import kafka_transient
from streams.worker.settings import Settings

log = logging.getLogger(__name__)
INGESTED = Counter("artroute_ledger_ingested_total", "Messages written into the ledger, by kind and result",
                   ["kind", "result"])
REJECTED = Counter("artroute_ledger_rejected_total", "Messages the ledger could not read, by topic and reason",
                   ["topic", "reason"])
BATCH_SECONDS = Histogram("artroute_ledger_batch_seconds", "Time to write one batch into the database",
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


def db_transient(e: BaseException) -> bool:
    """The database is away (connection refused or lost, server shutting down, SQLite locked)."""
    return isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated)


def count(result: IngestResult) -> None:
    INGESTED.labels("decision", "new").inc(result.decisions)
    INGESTED.labels("decision", "duplicate").inc(result.duplicate_decisions)
    INGESTED.labels("dead_letter", "new").inc(result.dead_letters)
    INGESTED.labels("dead_letter", "duplicate").inc(result.duplicate_dead_letters)


class LedgerConsumer:
    def __init__(self, settings: Settings, ingestor: Ingestor, group: str | None = None):
        self.settings, self.ingestor = settings, ingestor
        self.group = group or settings.ledger_consumer_group
        self.kinds = {settings.decisions_topic: "decision", settings.review_topic: "decision",
                      settings.deadletter_topic: "dead_letter"}
        self.totals = IngestResult()
        self.ready = asyncio.Event()

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        timeout_ms = int(s.kafka_session_timeout_s * 1000)
        return AIOKafkaConsumer(*self.kinds, group_id=self.group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=timeout_ms,
                                heartbeat_interval_ms=max(100, timeout_ms // 3), max_poll_records=s.ledger_batch,
                                **s.kafka_client_kwargs())

    async def _start(self) -> AIOKafkaConsumer:
        consumer = self._consumer()
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    def _write(self, batch: list) -> IngestResult:
        """Write a batch; on a permanent error, message by message (a bad one is rejected, not retried)."""
        t0 = time.perf_counter()
        try:
            return self.ingestor.ingest(batch)
        except Exception as e:  # noqa: BLE001
            if db_transient(e):
                raise
            log.warning("batch of %d failed (%s: %s); writing one by one", len(batch), type(e).__name__, e)
            result = IngestResult()
            for item in batch:
                result.add(self._write_one(item))
            return result
        finally:
            BATCH_SECONDS.observe(time.perf_counter() - t0)

    def _write_one(self, item) -> IngestResult:
        """One message; if the database refuses its raw JSON (e.g. a \\u0000 PostgreSQL's jsonb rejects), its
        columns are still stored, with a note instead of the raw message."""
        try:
            return self.ingestor.ingest([item])
        except Exception as e:  # noqa: BLE001
            if db_transient(e):
                raise
            error = e
        try:
            return self.ingestor.ingest([item.without_raw(f"{type(error).__name__}: {error}")])
        except Exception as e:  # noqa: BLE001
            if db_transient(e):
                raise
            error = e
        log.error("ledger rejected a message: %s: %s", type(error).__name__, error)
        REJECTED.labels("-", "database").inc()
        return IngestResult()

    async def run(self, stop: asyncio.Event) -> None:
        policy = RetryPolicy("ledger: kafka", initial_s=0.5, max_s=10.0)
        consumer = await call_with_retries(self._start, transient=kafka_transient, policy=policy, stop=stop)
        db_policy = RetryPolicy("ledger: writing to the database", initial_s=0.5, max_s=30.0)
        log.info("ledger consuming %s as group %s", ", ".join(self.kinds), self.group)
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self.settings.ledger_batch)
                self.ready.set()
                if not batches:
                    continue
                items, offsets, rejected = [], {}, Tally()
                for tp, msgs in batches.items():
                    for m in msgs:
                        item = parse(m.value, self.kinds[tp.topic])
                        if isinstance(item, Rejected):
                            rejected[(tp.topic, item.reason)] += 1
                            log.warning("skipping %s[%d]@%d: %s", tp.topic, tp.partition, m.offset, item.reason)
                        else:
                            items.append(item)
                    offsets[tp] = msgs[-1].offset + 1
                result = await call_with_retries(lambda: asyncio.to_thread(self._write, items), transient=db_transient,
                                                 policy=db_policy, stop=stop)
                count(result)
                self.totals.add(result)
                for (topic, reason), n in rejected.items():
                    REJECTED.labels(topic, reason).inc(n)
                await self._commit(consumer, offsets)
        finally:
            await consumer.stop()

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # A rebalance took the partitions: their new owner re-reads from the last commit (ids dedupe).
            log.warning("ledger offset commit failed (%s); the batch will be seen again", e)
