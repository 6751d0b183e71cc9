"""The routing pipeline for one batch of intake messages, independent of faust (the app, replay tests
and the benchmark all drive it).

parse (one boundary for S3 JSON and SeaweedFS protobuf) -> fetch from S3 (concurrent, bounded) ->
decode + letterbox (thread pool) -> one Triton request per `max_batch` images (retried while Triton is
down; a failing image is isolated, streams.worker.scoring) -> each decided with the contract of the
model version that answered it (its routing rule: unfamiliar photos and what the rule cannot guarantee go
to review, docs/trust.md) -> decisions / review / dead letters published, and awaited, before
`handle` returns. Bad input never raises out of here: every event ends as a decision or a dead letter.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from aiokafka.errors import KafkaError, KafkaTimeoutError, KafkaUnavailableError

from streams.contract.model import ModelContract
from streams.contract.retry import RetryPolicy, call_with_retries
from streams.contract.routing import RoutingRule
from streams.worker import metrics
from streams.worker.contracts import ContractBook
from streams.worker.deadletters import DeadLetter, build_dead_letter, encode_dead_letter
from streams.worker.decisions import RoutingDecision, decide
from streams.worker.drift import Drift
from streams.worker.events import IntakeEvent, parse_intake
from streams.worker.health import Health
from streams.worker.inference import ServedModel, TritonModel, check_served
from streams.worker.loader import Failed, Loaded, ObjectLoader
from streams.worker.publisher import Publisher, Record
from streams.worker.scoring import Scored, score
from streams.worker.settings import Settings
from streams.worker.store import ObjectStore

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
        self.health = Health(settings.health_stuck_s)
        self.drift = Drift(settings.drift_window)
        self._rules: dict[tuple[int, bool], tuple[ModelContract, RoutingRule | None]] = {}  # see _rule
        self.loader: ObjectLoader | None = None
        self.served: ServedModel | None = None
        self.contracts: ContractBook | None = None
        self.ready = asyncio.Event()
        self.fatal: Exception | None = None  # why the worker must stop (set by the app when start fails)
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        self.store = ObjectStore(self.settings)
        self.loader = ObjectLoader(self.settings, self.store, self.decoder, self.health, self.stopping)
        await self.publisher.start()
        self.served = await self.model.wait_ready(self.stopping)
        check_served(self.served, self.settings.max_batch)  # ModelMismatch: the worker exits 2
        self.contracts = ContractBook(self.model, self.served, self.stopping)
        log.info("serving model %s (versions %s, input %s, max batch %d)", self.served.name, self.served.versions,
                 self.served.input_shape, self.served.max_batch_size)
        if not self.served.unfamiliarity and any(c.unfamiliarity for c in self.served.contracts.values()):
            log.warning("model %s: some versions compute an unfamiliarity score but not all, so its config does not "
                        "serve it: no photo goes to review as unfamiliar (export them under a new model name)",
                        self.served.name)
        self.ready.set()
        self.health.started = True

    async def stop(self) -> None:
        self.stopping.set()
        await self.publisher.stop()
        await self.model.close()
        if self.store:
            self.store.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    async def handle(self, events) -> BatchOutcome:
        """faust entry point: a list of faust events. faust acks them once this returns or raises, so
        it raises only while shutting down; any other failure, however unforeseen, still publishes an
        outcome for every message (a dead letter `internal`) before returning."""
        messages = [Incoming.from_faust(e) for e in events]
        try:
            return await self.process(messages)
        except Exception as e:
            if self.stopping.is_set():
                raise
            log.exception("routing a batch of %d messages failed; dead-lettering them", len(messages))
            out = BatchOutcome(dead_letters=[self._dead_letter(m, None, "internal", f"{type(e).__name__}: {e}",
                                                               "publish") for m in messages])
            await self._publish(out)
            return out

    async def process(self, messages: list[Incoming]) -> BatchOutcome:
        """Route a batch. Every message ends as decisions and/or dead letters, whatever its bytes: nothing
        raises out of here but a shutdown (then nothing of the batch is published, and it is redelivered)."""
        await self.ready.wait()
        out = BatchOutcome()
        work: list[tuple[Incoming, IntakeEvent]] = []
        for msg in messages:
            try:
                work.extend((msg, ev) for ev in self._parse(msg, out))
            except Exception as e:  # noqa: BLE001 - no message may take its batch-mates with it
                log.exception("unexpected error parsing an intake message")
                out.dead_letters.append(self._dead_letter(msg, None, "internal", f"{type(e).__name__}: {e}", "parse"))
        metrics.EVENTS.labels("accepted").inc(len(work))

        loaded = await asyncio.gather(*(self.loader.load(ev, self.served.input_size) for _, ev in work))
        good = [(msg, item) for (msg, _), item in zip(work, loaded) if isinstance(item, Loaded)]
        for (msg, ev), item in zip(work, loaded):
            if isinstance(item, Failed):
                out.dead_letters.append(self._dead_letter(msg, ev, item.kind, item.message, item.stage,
                                                          event_etag=item.event_etag, uploaded_key=item.uploaded_key))

        size = self.settings.max_batch
        for start in range(0, len(good), size):
            chunk = good[start:start + size]
            outcomes = await score(self.model, self.contracts, np.stack([item.image for _, item in chunk]),
                                   self.stopping, self.health)
            now = datetime.now(timezone.utc)
            for (msg, item), outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, Scored):
                    self._decide(out, msg, item, outcome, now)
                else:
                    out.dead_letters.append(self._dead_letter(msg, item.event, outcome.kind, outcome.message,
                                                              outcome.stage))
        with self.health.call("kafka"):
            await self._publish(out)
        return out

    def _decide(self, out: BatchOutcome, msg: Incoming, item: Loaded, scored: Scored, now: datetime) -> None:
        """Decide with the labels of the version that answered (its contract), never another's."""
        s = self.settings
        try:
            d = decide(item.event, scored.probs, scored.contract.labels, self.served.name, scored.version,
                       s.review_min_confidence, s.review_min_margin, now,
                       self._rule(scored.contract, scored.unfamiliarity is not None), scored.unfamiliarity)
        except ValueError as e:  # decide's check: the answer is no probability vector over these labels
            out.dead_letters.append(self._dead_letter(msg, item.event, "bad_model_output", str(e), "decide"))
            return
        if item.event_etag or item.uploaded_key:
            d = d.model_copy(update={"event_etag": item.event_etag, "uploaded_key": item.uploaded_key})
        self.drift.observe(d, scored.contract)
        out.decisions.append(d)

    def _rule(self, contract: ModelContract, scored: bool) -> RoutingRule | None:
        """The version's rule as this worker applies it, made once per contract (`scored`: its answer carried
        an unfamiliarity score): with ARTROUTE_ROUTING=global the global thresholds, keeping its unfamiliarity
        gate; without the gate when the model's config does not serve UNFAMILIAR__2 (some versions lack it).
        Cached by the contract object, which the entry keeps alive so its id is not reused."""
        key = (id(contract), scored)
        entry = self._rules.get(key)
        if entry is not None and entry[0] is contract:
            return entry[1]
        rule = contract.routing
        if rule is not None and self.settings.routing == "global":
            rule = RoutingRule.global_thresholds(contract.label_names, self.settings.review_min_confidence,
                                                 self.settings.review_min_margin, base=rule)
        if rule is not None and not scored and rule.unfamiliar_threshold is not None:
            rule = rule.model_copy(update={"unfamiliar_threshold": None})
        if len(self._rules) >= 64:   # versions come and go with rollouts: keep only recent contracts
            self._rules.clear()
        self._rules[key] = (contract, rule)
        return rule

    def _parse(self, msg: Incoming, out: BatchOutcome) -> list[IntakeEvent]:
        result = parse_intake(msg.value, msg.key)
        by_record = [r for r in result.malformed if r.record is not None]
        whole = [r for r in result.malformed if r.record is None]
        if whole:
            message = "; ".join(f"{r.reason}: {r.message}" for r in whole)
            out.dead_letters.append(self._dead_letter(msg, None, "bad_event", message, "parse"))
        for r in by_record:  # one dead letter per bad record, carrying that record
            out.dead_letters.append(self._dead_letter(msg, None, "bad_event", f"{r.reason}: {r.message}", "parse",
                                                      record_index=r.record, bucket=r.bucket, key=r.key))
        if result.malformed:
            metrics.EVENTS.labels("malformed").inc()
        out.ignored += len(result.ignored)
        metrics.EVENTS.labels("ignored").inc(len(result.ignored))
        return result.events

    def _dead_letter(self, msg: Incoming, ev: IntakeEvent | None, kind: str, message: str, stage: str, *,
                     record_index: int | None = None, bucket: str | None = None, key: str | None = None,
                     event_etag: str | None = None, uploaded_key: str | None = None) -> DeadLetter:
        index = record_index if record_index is not None else (ev.record if ev is not None else None)
        dl = build_dead_letter(msg, error_kind=kind, message=message, stage=stage, event=ev, record_index=index,
                               records=_records(msg.value) if index is not None else None,
                               max_bytes=self.settings.deadletter_max_bytes, event_etag=event_etag,
                               uploaded_key=uploaded_key)
        if ev is None and (bucket or key):  # a bad record that still names its object
            dl = dl.model_copy(update={"bucket": bucket, "key": key})
        return dl

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
            records.append((s.deadletter_topic, (dl.key or "").encode() or None,
                            encode_dead_letter(dl, s.deadletter_max_bytes)))
            metrics.DEAD_LETTERS.labels(dl.error_kind).inc()
        # faust acks the batch's events once this returns (or raises): so never return before every record is
        # acknowledged. While the broker is away, send the whole batch again (duplicates carry the same ids);
        # shutting down with the broker away ends the retrying (its commits fail too).
        await call_with_retries(lambda: self.publisher.send_all(records), transient=broker_transient,
                                policy=RetryPolicy(what=f"publishing {len(records)} records", initial_s=0.5),
                                stop=self.stopping, on_retry=lambda e, _a, _w: self.health.failing("kafka", e),
                                on_success=lambda: self.health.ok("kafka"))


def broker_transient(e: BaseException) -> bool:
    """Kafka errors worth retrying: the broker or a partition leader away, a request timed out. Never a
    record the broker refuses (MessageSizeTooLargeError is not retriable)."""
    return isinstance(e, KafkaError) and (e.retriable or isinstance(e, (KafkaTimeoutError, KafkaUnavailableError)))


def _records(value: bytes) -> list | None:
    """The Records list of an S3 JSON message (to attach one record to its dead letter), else None."""
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return None
    records = doc.get("Records") if isinstance(doc, dict) else None
    return records if isinstance(records, list) else None
