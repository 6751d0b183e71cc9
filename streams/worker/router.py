"""The routing pipeline for one batch of intake messages, independent of faust (the app, replay tests
and the benchmark all drive it).

parse (one boundary for S3 JSON and SeaweedFS protobuf) -> fetch from S3 (concurrent, bounded) ->
decode + letterbox (thread pool) -> one Triton request per `max_batch` images (retried while Triton is
down; a failing image is isolated, streams.worker.scoring) -> each decided with the contract of the
model version that answered it -> decisions / review / dead letters published, and awaited, before
`handle` returns. Bad input never raises out of here: every event ends as a decision or a dead letter.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from aiokafka.errors import KafkaError, KafkaTimeoutError, KafkaUnavailableError

from streams.contract.imaging import ImageRejected, decode_image
from streams.contract.retry import RetryPolicy, call_with_retries
from streams.worker import metrics
from streams.worker.contracts import ContractBook
from streams.worker.decisions import DeadLetter, RoutingDecision, decide
from streams.worker.events import IntakeEvent, parse_intake
from streams.worker.inference import ServedModel, TritonModel, check_served
from streams.worker.publisher import Publisher, Record
from streams.worker.settings import Settings
from streams.worker.scoring import Scored, score
from streams.worker.store import FetchError, ObjectStore

log = logging.getLogger(__name__)


@dataclass
class Incoming:
    """One Kafka message as the router sees it (faust events and plain records both map to this)."""
    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @classmethod
    def from_faust(cls, event) -> "Incoming":
        m = event.message
        return cls(value=m.value, key=m.key, topic=m.topic, partition=m.partition, offset=m.offset)


@dataclass
class BatchOutcome:
    decisions: list[RoutingDecision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    ignored: int = 0


class Router:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.model = TritonModel(settings.triton_url, settings.model_name, settings.model_version,
                                 settings.triton_timeout_s, settings.triton_retry_max_s)
        self.store: ObjectStore | None = None
        self.publisher = Publisher(settings)
        self.decoder = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.served: ServedModel | None = None
        self.contracts: ContractBook | None = None
        self.ready = asyncio.Event()
        self.fatal: Exception | None = None  # why the worker must stop (set by the app when start fails)
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        self.store = ObjectStore(self.settings)
        await self.publisher.start()
        self.served = await self.model.wait_ready(self.stopping)
        check_served(self.served, self.settings.max_batch)  # ModelMismatch: the worker exits 2
        self.contracts = ContractBook(self.model, self.served, self.stopping)
        log.info("serving model %s (versions %s, input %s, max batch %d)", self.served.name, self.served.versions,
                 self.served.input_shape, self.served.max_batch_size)
        self.ready.set()

    async def stop(self) -> None:
        self.stopping.set()
        await self.publisher.stop()
        await self.model.close()
        if self.store:
            self.store.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    async def handle(self, events) -> BatchOutcome:
        """faust entry point: a list of faust events."""
        return await self.process([Incoming.from_faust(e) for e in events])

    async def process(self, messages: list[Incoming]) -> BatchOutcome:
        await self.ready.wait()
        out = BatchOutcome()
        work: list[tuple[Incoming, IntakeEvent]] = []
        for msg in messages:
            result = parse_intake(msg.value, msg.key)
            if result.malformed:
                message = "; ".join(f"{r.reason}: {r.message}" for r in result.malformed)
                out.dead_letters.append(self._dead_letter(msg, None, "bad_event", message, "parse"))
                metrics.EVENTS.labels("malformed").inc()
            out.ignored += len(result.ignored)
            metrics.EVENTS.labels("ignored").inc(len(result.ignored))
            work.extend((msg, ev) for ev in result.events)
        metrics.EVENTS.labels("accepted").inc(len(work))

        images = await asyncio.gather(*(self._load(ev) for _, ev in work))
        good = [(msg, ev, img) for (msg, ev), img in zip(work, images) if isinstance(img, np.ndarray)]
        for (msg, ev), img in zip(work, images):
            if not isinstance(img, np.ndarray):
                out.dead_letters.append(self._dead_letter(msg, ev, *img))

        size = self.settings.max_batch
        for start in range(0, len(good), size):
            chunk = good[start:start + size]
            outcomes = await score(self.model, self.contracts, np.stack([img for _, _, img in chunk]), self.stopping)
            now = datetime.now(timezone.utc)
            for (msg, ev, _), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, Scored):
                    self._decide(out, msg, ev, outcome, now)
                else:
                    out.dead_letters.append(self._dead_letter(msg, ev, outcome.kind, outcome.message, outcome.stage))
        await self._publish(out)
        return out

    def _decide(self, out: BatchOutcome, msg: Incoming, ev: IntakeEvent, scored: Scored, now: datetime) -> None:
        """Decide with the labels of the version that answered (its contract), never another's."""
        s = self.settings
        try:
            out.decisions.append(decide(ev, scored.probs, scored.contract.labels, self.served.name, scored.version,
                                        s.review_min_confidence, s.review_min_margin, now))
        except ValueError as e:  # decide's check: the answer is no probability vector over these labels
            out.dead_letters.append(self._dead_letter(msg, ev, "bad_model_output", str(e), "decide"))

    async def _load(self, ev: IntakeEvent) -> np.ndarray | tuple[str, str, str]:
        """Fetch and decode one object; (error kind, message, stage) instead of raising."""
        stage = "fetch"
        try:
            data = await self.store.fetch(ev.bucket, ev.key, ev.version_id, ev.size)
            stage = "decode"
            return await asyncio.get_running_loop().run_in_executor(
                self.decoder, decode_image, data, self.settings.max_image_pixels, self.served.input_size)
        except (FetchError, ImageRejected) as e:
            return e.kind, e.message, stage
        except Exception as e:  # noqa: BLE001 - the worker never dies on bad input
            log.exception("unexpected error loading s3://%s/%s", ev.bucket, ev.key)
            return "internal", f"{type(e).__name__}: {e}", stage

    def _dead_letter(self, msg: Incoming, ev: IntakeEvent | None, kind: str, message: str, stage: str) -> DeadLetter:
        return DeadLetter.from_message(msg.value, error_kind=kind, message=message, stage=stage,
                                       failed_at=datetime.now(timezone.utc), key=msg.key, event=ev,
                                       topic=msg.topic, partition=msg.partition, offset=msg.offset)

    async def _publish(self, out: BatchOutcome) -> None:
        s = self.settings
        records: list[Record] = []
        for d in out.decisions:
            body = d.model_dump_json().encode()
            records.append((s.decisions_topic, d.key.encode(), body))
            metrics.DECISIONS.labels(d.department).inc()
            if d.needs_review:
                records.append((s.review_topic, d.key.encode(), body))
                metrics.REVIEW.labels(d.review_reason or "").inc()
            if d.event_time:
                metrics.END_TO_END_SECONDS.observe(max(0.0, (d.decided_at - d.event_time).total_seconds()))
        for dl in out.dead_letters:
            records.append((s.deadletter_topic, (dl.key or "").encode() or None, dl.model_dump_json().encode()))
            metrics.DEAD_LETTERS.labels(dl.error_kind).inc()
        # faust acks the batch's events once this returns (or raises): so never return before every record is
        # acknowledged. While the broker is away, send the whole batch again (duplicates carry the same ids);
        # shutting down with the broker away ends the retrying (its commits fail too).
        await call_with_retries(lambda: self.publisher.send_all(records), transient=broker_transient,
                                policy=RetryPolicy(what=f"publishing {len(records)} records", initial_s=0.5),
                                stop=self.stopping)


def broker_transient(e: BaseException) -> bool:
    """Kafka errors worth retrying: the broker or a partition leader away, a request timed out."""
    return isinstance(e, KafkaError) and (e.retriable or isinstance(e, (KafkaTimeoutError, KafkaUnavailableError)))
