"""Writing a batch of decisions and dead letters into the ledger, in one transaction, idempotently.

* A decision id already in the ledger is a duplicate (a redelivery, a replay, or the review copy of a
  decision): nothing changes. A dead letter is identified by its deterministic id (messages.py).
* Every new decision is kept (history, every model version). The object's *current* outcome is the
  newest one by outcome time (decided_at / failed_at): a newer model version's decision, or a dead
  letter for a newer upload, replaces it; an older one only joins the history.
* Auto-routed decisions whose id falls into the audit sample (ARTROUTE_AUDIT_RATE) join the review
  queue with reason "audit". A decision on content that already has a verdict inherits it as truth.

The caller commits the Kafka offsets only after `ingest` returned (the transaction committed), so a
process killed anywhere redelivers what was not yet committed and the ids make that harmless.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, Engine, any_, bindparam, select

from streams.ledger.bulk import RawJson, insert_ignore, update_by_id
from streams.ledger.db import write
from streams.ledger.labels import upsert_labels
from streams.ledger.messages import DeadLetter, Decision, ScoredLabelIn, in_sample, top3_rank
from streams.ledger.models import DeadLetterRow, DecisionRow, ObjectRow

CHUNK = 500
TOP3 = TypeAdapter(list[ScoredLabelIn])
OBJECTS = ObjectRow.__table__
STATE_COLUMNS = [c.name for c in OBJECTS.columns if c.name not in ("id", "bucket", "key", "first_seen_at")]


@dataclass
class IngestResult:
    decisions: int = 0
    duplicate_decisions: int = 0
    dead_letters: int = 0
    duplicate_dead_letters: int = 0
    objects_created: int = 0

    def add(self, other: "IngestResult") -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Outcome:
    at: datetime
    decision: Decision | None = None
    dead_letter: DeadLetter | None = None
    audit: bool = False


@dataclass
class _State:
    row: dict[str, Any]
    new: bool = False
    changed: bool = False
    outcomes: list[_Outcome] = field(default_factory=list)


def chunks(items: Sequence, n: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def status_of(row: dict[str, Any]) -> str:
    if row.get("dead_letter_id") is not None or row.get("decision_id") is None:
        return "dead_letter"
    if row.get("verdict_id") is not None and row.get("verdict_etag") == row.get("etag"):
        return "reviewed"
    return "pending" if row.get("queue_reason") is not None else "auto"


def apply(row: dict[str, Any], outcome: _Outcome, now: datetime) -> bool:
    """Make `outcome` the object's current one if it is not older; True when the row changed."""
    current = row.get("outcome_at")
    if current is not None and outcome.at < current:
        return False
    if outcome.decision is not None:
        d = outcome.decision.msg
        row.update(etag=d.etag, version_id=d.version_id, outcome_at=d.decided_at, event_time=d.event_time,
                   decision_id=d.decision_id, model_name=d.model.name, model_version=d.model.version,
                   department=d.department, department_id=d.department_id, confidence=d.confidence,
                   needs_review=d.needs_review, dead_letter_id=None, error_kind=None,
                   queue_reason=(d.review_reason or "review") if d.needs_review else "audit" if outcome.audit else None)
    else:
        dl = outcome.dead_letter
        row.update(etag=dl.msg.etag or row.get("etag"), outcome_at=dl.msg.failed_at, event_time=dl.msg.failed_at,
                   dead_letter_id=dl.id, error_kind=dl.msg.error_kind, queue_reason=None, needs_review=False)
    row["updated_at"] = now
    row["status"] = status_of(row)
    return True


def _in(conn: Connection, column, values: Sequence):
    """column IN values; on PostgreSQL one array parameter (= ANY), which psycopg converts at once."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def _existing(conn: Connection, column, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for part in chunks(ids, 5000):
        found.update(conn.execute(select(column).where(_in(conn, column, part))).scalars())
    return found


def _load_objects(conn: Connection, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The object rows of these (bucket, key) pairs (locked on PostgreSQL until the transaction ends)."""
    out = {}
    wanted = set(pairs)
    for part in chunks(pairs, 5000):
        keys = sorted({k for _, k in part})
        stmt = select(OBJECTS).where(_in(conn, OBJECTS.c.key, keys)).order_by(OBJECTS.c.id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        for r in conn.execute(stmt).mappings():
            if (r["bucket"], r["key"]) in wanted:
                out[(r["bucket"], r["key"])] = dict(r)
    return out


def _blank(bucket: str, key: str, now: datetime) -> dict[str, Any]:
    row = {c: None for c in STATE_COLUMNS}
    row.update(bucket=bucket, key=key, first_seen_at=now, needs_review=False)
    return row


class Ingestor:
    """Writes batches; remembers which (model, label) pairs are stored so it writes each once."""

    def __init__(self, engine: Engine, audit_rate: float):
        self.engine, self.audit_rate = engine, audit_rate
        self._labels: set[tuple[str, str, bool]] = set()

    def ingest(self, items: Iterable[Decision | DeadLetter], now: datetime | None = None) -> IngestResult:
        now = now or datetime.now(UTC)
        items = list(items)
        decisions = list({i.msg.decision_id: i for i in items if isinstance(i, Decision)}.values())
        dead = list({i.id: i for i in items if isinstance(i, DeadLetter)}.values())
        result = IngestResult()
        if not decisions and not dead:
            return result
        received = sum(isinstance(i, Decision) for i in items), sum(isinstance(i, DeadLetter) for i in items)
        with write(self.engine) as conn:
            known = _existing(conn, DecisionRow.decision_id, [d.msg.decision_id for d in decisions])
            known_dl = _existing(conn, DeadLetterRow.id, [d.id for d in dead])
            decisions = [d for d in decisions if d.msg.decision_id not in known]
            dead = [d for d in dead if d.id not in known_dl]
            states = self._update_objects(conn, decisions, dead, now, result)
            self._insert_decisions(conn, decisions, states, now)
            self._insert_dead_letters(conn, dead, states, now)
            self._store_labels(conn, decisions, now)
        result.decisions, result.dead_letters = len(decisions), len(dead)
        # every message that added nothing: already stored, or a repeat within this batch (a review copy)
        result.duplicate_decisions, result.duplicate_dead_letters = received[0] - len(decisions), received[1] - len(dead)
        return result

    def _update_objects(self, conn: Connection, decisions: list[Decision], dead: list[DeadLetter], now: datetime,
                        result: IngestResult) -> dict[tuple[str, str], _State]:
        outcomes: dict[tuple[str, str], list[_Outcome]] = {}
        for d in decisions:
            audit = not d.msg.needs_review and in_sample(d.msg.decision_id, self.audit_rate)
            outcomes.setdefault((d.msg.bucket, d.msg.key), []).append(_Outcome(d.msg.decided_at, d, audit=audit))
        for dl in dead:
            if dl.msg.bucket is not None and dl.msg.key is not None:
                outcomes.setdefault((dl.msg.bucket, dl.msg.key), []).append(_Outcome(dl.msg.failed_at, dead_letter=dl))
        rows = _load_objects(conn, sorted(outcomes))
        states = {p: _State(rows[p]) if p in rows else _State(_blank(*p, now), new=True) for p in outcomes}
        for pair, state in states.items():
            state.outcomes = sorted(outcomes[pair], key=lambda o: o.at)
            for o in state.outcomes:
                state.changed |= apply(state.row, o, now)
        new = [s for s in states.values() if s.new]
        if new:
            created = insert_ignore(conn, OBJECTS, [{k: v for k, v in s.row.items() if k != "id"} for s in new],
                                    ["bucket", "key"], returning=("id", "bucket", "key"))
            ids = {(b, k): i for i, b, k in created} if created is not None else None
            stored = _load_objects(conn, [(s.row["bucket"], s.row["key"]) for s in new
                                          if ids is None or (s.row["bucket"], s.row["key"]) not in ids])
            for s in new:
                pair = (s.row["bucket"], s.row["key"])
                row = stored.get(pair)
                if ids is not None and pair in ids:
                    s.row["id"] = ids[pair]
                elif all(row[c] == s.row[c] for c in STATE_COLUMNS):
                    s.row["id"] = row["id"]  # ours (SQLite reads back), or an identical one of another process
                else:
                    # Another ledger process created it meanwhile: apply our outcomes to its row instead.
                    s.row, s.new, s.changed = row, False, False
                    for o in s.outcomes:
                        s.changed |= apply(s.row, o, now)
                    continue
                result.objects_created += 1
        changed = [s.row for s in states.values() if s.changed and not s.new]
        update_by_id(conn, OBJECTS, [{"id": r["id"], **{c: r[c] for c in STATE_COLUMNS}} for r in changed])
        return states

    def _insert_decisions(self, conn: Connection, decisions: list[Decision], states: dict, now: datetime) -> None:
        if not decisions:
            return
        rows = []
        for d in decisions:
            m = d.msg
            obj = states[(m.bucket, m.key)].row
            truth = obj["verdict_id"] is not None and obj["verdict_etag"] == m.etag
            rows.append(dict(
                decision_id=m.decision_id, object_id=obj["id"], etag=m.etag, version_id=m.version_id,
                model_name=m.model.name, model_version=m.model.version, department=m.department,
                department_id=m.department_id, confidence=m.confidence, margin=m.margin,
                top3=RawJson(TOP3.dump_json(m.top3).decode()),
                needs_review=m.needs_review, review_reason=m.review_reason,
                audit=not m.needs_review and in_sample(m.decision_id, self.audit_rate),
                event_time=m.event_time, decided_at=m.decided_at, ingested_at=now, raw=RawJson(d.text),
                truth_kind=obj["verdict_kind"] if truth else None,
                truth_department=obj["verdict_department"] if truth else None,
                truth_rank=top3_rank(TOP3.dump_python(m.top3), obj["verdict_department"]) if truth else None))
        insert_ignore(conn, DecisionRow.__table__, rows, ["decision_id"])

    def _insert_dead_letters(self, conn: Connection, dead: list[DeadLetter], states: dict, now: datetime) -> None:
        if not dead:
            return
        rows = []
        for dl in dead:
            m = dl.msg
            state = states.get((m.bucket, m.key)) if m.bucket is not None and m.key is not None else None
            rows.append(dict(id=dl.id, object_id=state.row["id"] if state else None, bucket=m.bucket, key=m.key,
                             etag=m.etag, error_kind=m.error_kind, stage=m.stage, message=m.message,
                             source_topic=m.source_topic, source_partition=m.source_partition,
                             source_offset=m.source_offset, failed_at=m.failed_at, ingested_at=now, raw=RawJson(dl.text)))
        insert_ignore(conn, DeadLetterRow.__table__, rows, ["id"])

    def _store_labels(self, conn: Connection, decisions: list[Decision], now: datetime) -> None:
        labels: dict[tuple[str, str], int | None] = {}
        for d in decisions:
            for t in d.msg.top3:
                labels.setdefault((d.msg.model.name, t.label), None)
            if d.msg.department_id is not None:
                labels[(d.msg.model.name, d.msg.department)] = d.msg.department_id
        todo = [(m, lb, dep) for (m, lb), dep in labels.items() if (m, lb, dep is not None) not in self._labels
                and (m, lb, True) not in self._labels]
        upsert_labels(conn, todo, now)
        self._labels.update((m, lb, dep is not None) for m, lb, dep in todo)
