"""Publishing to Kafka: decisions, review, dead letters, and replayed intake events.

A plain aiokafka producer (not faust's) so that the producer's delivery guarantees are ours to set:
acks=all, and idempotence when ARTROUTE_KAFKA_ENABLE_IDEMPOTENCE is true (Apache Kafka). It stays off by
default because the embedded tansu broker rejects idempotent producers. `send_all` returns only once every
record is acknowledged by the broker, so the caller can ack the input events after it and not before.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from streams.worker.settings import Settings

Record = tuple[str, bytes | None, bytes]  # (topic, key, value)


class Publisher:
    def __init__(self, settings: Settings, linger_ms: int = 5):
        self.settings, self.linger_ms = settings, linger_ms
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running event loop.
        s = self.settings
        producer = AIOKafkaProducer(
            **s.kafka_client_kwargs(), acks="all", enable_idempotence=s.kafka_enable_idempotence,
            linger_ms=self.linger_ms, max_request_size=s.kafka_max_message_bytes, request_timeout_ms=30000)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()   # a failed start leaves its client and connections open
            raise
        self.producer = producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send_all(self, records: Iterable[Record]) -> None:
        """Send records and wait until the broker acknowledged all of them (raises on failure)."""
        futures = [await self.producer.send(topic, value=value, key=key) for topic, key, value in records]
        if futures:
            await asyncio.gather(*futures)

    async def __aenter__(self) -> "Publisher":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()
