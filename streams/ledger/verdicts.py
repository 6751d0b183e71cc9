"""Recording curators' verdicts: the verdict row, its outbox message and the object's new state, in one
transaction (the transactional outbox: a verdict is published if and only if it was saved).

The latest verdict per object wins (by recording time); every verdict stays in `verdicts`. A verdict
names the decision it answers; "confirm" takes that decision's department, "correct" must name a
department the model outputs (`model_labels`, or ARTROUTE_LEDGER_TAXONOMY's classes), "not_routable"
names none. A "retract" undoes an earlier verdict (the console's undo): the object falls back to the
verdict before it, or back into the review queue. Decisions on the same content (same object and etag,
any model version) get the effective verdict as their truth, which is what accuracy is computed from.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from streams.contract.curation import ModelRef, Verdict, new_verdict_id
from streams.contract.taxonomy import load_taxonomy
from streams.ledger.db import write
from streams.ledger.errors import Conflict, Invalid, NotFound
from streams.ledger.ingest import OBJECTS, status_of
from streams.ledger.messages import top3_rank
from streams.ledger.models import DecisionRow, ModelLabelRow, OutboxRow, VerdictRow
from streams.worker.schemas import SCHEMA_DIR, render_schema

DECISIONS = DecisionRow.__table__
VERDICTS = VerdictRow.__table__
VERDICT_SCHEMA = "verdict.schema.json"


def write_verdict_schema(directory: Path = SCHEMA_DIR) -> Path:
    """docs/schemas/verdict.schema.json from `streams.contract.curation.Verdict` (a test keeps it in sync):
    python -c "from streams.ledger.verdicts import write_verdict_schema; write_verdict_schema()" """
    path = directory / VERDICT_SCHEMA
    path.write_text(render_schema(VERDICT_SCHEMA, Verdict), encoding="utf-8")
    return path


@dataclass(frozen=True)
class VerdictRequest:
    decision_id: str
    kind: str                       # confirm | correct | not_routable
    curator: str
    department: str | None = None
    note: str = ""
    verdict_id: str | None = None   # an idempotency key: the same id recorded twice is one verdict


class Recorder:
    """`taxonomy`: class name -> department id a verdict may also name (ARTROUTE_LEDGER_TAXONOMY);
    `known_ids`: department ids of labels whose decisions never carried one (default: the MET's)."""

    def __init__(self, engine: Engine, topic: str, taxonomy: dict[str, int | None] | None = None,
                 known_ids: dict[str, int] | None = None):
        self.engine, self.topic, self.taxonomy = engine, topic, taxonomy or {}
        self.known_ids = met_department_ids() if known_ids is None else known_ids

    def record(self, requests: Sequence[VerdictRequest], at: datetime | None = None) -> list[Verdict]:
        """Record verdicts (all or none); returns the published messages, in order."""
        at = at or datetime.now(UTC)
        with write(self.engine) as conn:
            # One microsecond apart: verdicts of one request keep their order (the latest wins).
            return [self._record(conn, r, at + timedelta(microseconds=i)) for i, r in enumerate(requests)]

    def retract(self, verdict_id: str, curator: str, at: datetime | None = None) -> Verdict:
        at = at or datetime.now(UTC)
        with write(self.engine) as conn:
            target = conn.execute(select(VERDICTS).where(VERDICTS.c.verdict_id == verdict_id)).mappings().first()
            if target is None:
                raise NotFound(f"no verdict {verdict_id}")
            if target["kind"] == "retract":
                raise Invalid(f"verdict {verdict_id} is a retraction; record a new verdict instead")
            if conn.execute(select(VERDICTS.c.verdict_id).where(VERDICTS.c.retracts == verdict_id)).first():
                raise Conflict(f"verdict {verdict_id} is already retracted")
            decision = self._decision(conn, target["decision_id"])
            v = self._verdict(decision, new_verdict_id(), "retract", None, None, curator, at, "",
                              retracts=verdict_id)
            self._store(conn, decision, v)
            return v

    # --- one verdict ---------------------------------------------------------------------------------
    def _record(self, conn: Connection, r: VerdictRequest, at: datetime) -> Verdict:
        if not r.curator.strip():
            raise Invalid("a verdict needs the curator's id")
        if r.verdict_id:
            existing = conn.execute(select(VERDICTS).where(VERDICTS.c.verdict_id == r.verdict_id)).mappings().first()
            if existing is not None:
                if (existing["decision_id"], existing["curator"]) != (r.decision_id, r.curator):
                    raise Conflict(f"verdict id {r.verdict_id} was recorded for another decision or curator")
                return self._verdict(self._decision(conn, r.decision_id), r.verdict_id, existing["kind"],
                                     existing["department"], existing["department_id"], existing["curator"],
                                     existing["recorded_at"], existing["note"], existing["retracts"])
        decision = self._decision(conn, r.decision_id)
        kind, department, department_id = self._resolve(conn, decision, r)
        v = self._verdict(decision, r.verdict_id or new_verdict_id(), kind, department, department_id,
                          r.curator.strip(), at, r.note)
        self._store(conn, decision, v)
        return v

    def _decision(self, conn: Connection, decision_id: str) -> dict[str, Any]:
        stmt = select(DECISIONS, OBJECTS.c.bucket, OBJECTS.c.key).join(OBJECTS, OBJECTS.c.id == DECISIONS.c.object_id)
        row = conn.execute(stmt.where(DECISIONS.c.decision_id == decision_id)).mappings().first()
        if row is None:
            raise NotFound(f"no decision {decision_id} in the ledger")
        return dict(row)

    def _resolve(self, conn: Connection, d: dict[str, Any], r: VerdictRequest) -> tuple[str, str | None, int | None]:
        if r.kind == "not_routable":
            if r.department:
                raise Invalid("a not_routable verdict names no department")
            return "not_routable", None, None
        if r.kind == "confirm" or (r.kind == "correct" and r.department == d["department"]):
            if r.department not in (None, d["department"]):
                raise Invalid(f"confirm names the model's department {d['department']!r}, not {r.department!r}")
            return "confirm", d["department"], d["department_id"]
        if r.kind != "correct":
            raise Invalid(f"verdict kind {r.kind!r}: confirm, correct or not_routable")
        if not r.department:
            raise Invalid("a correct verdict names the right department")
        labels = self.departments(conn, d["model_name"])
        if r.department not in labels:
            raise Invalid(f"{r.department!r} is no department of model {d['model_name']!r} "
                          f"(known: {', '.join(sorted(labels)) or 'none yet'})")
        return "correct", r.department, labels[r.department]

    def departments(self, conn: Connection, model_name: str) -> dict[str, int | None]:
        """Label -> department id of everything the model outputs (and the taxonomy's classes)."""
        t = ModelLabelRow.__table__
        rows = conn.execute(select(t.c.label, t.c.department_id).where(t.c.model_name == model_name))
        out = dict(self.taxonomy)
        for label, dep in rows:
            out[label] = dep if dep is not None else out.get(label)
        return {label: dep if dep is not None else self.known_ids.get(label) for label, dep in out.items()}

    @staticmethod
    def _verdict(d: dict[str, Any], verdict_id: str, kind: str, department: str | None, department_id: int | None,
                 curator: str, at: datetime, note: str, retracts: str | None = None) -> Verdict:
        return Verdict(verdict_id=verdict_id, bucket=d["bucket"], key=d["key"], etag=d["etag"],
                       decision_id=d["decision_id"], model=ModelRef(name=d["model_name"], version=d["model_version"]),
                       predicted_department=d["department"], kind=kind, department=department,
                       department_id=department_id, retracts=retracts, curator=curator, recorded_at=at, note=note)

    def _store(self, conn: Connection, d: dict[str, Any], v: Verdict) -> None:
        conn.execute(VERDICTS.insert().values(
            verdict_id=v.verdict_id, object_id=d["object_id"], decision_id=v.decision_id, etag=v.etag,
            model_name=v.model.name, model_version=v.model.version, kind=v.kind, department=v.department,
            department_id=v.department_id, retracts=v.retracts, curator=v.curator, recorded_at=v.recorded_at,
            note=v.note))
        conn.execute(OutboxRow.__table__.insert().values(topic=self.topic, key=v.key, payload=v.model_dump_json(),
                                                         created_at=v.recorded_at, attempts=0))
        refresh(conn, d["object_id"], {v.etag}, v.recorded_at)


def met_department_ids() -> dict[str, int]:
    """Every name of a MET department (met-19 taxonomy: class names and labels) -> its department id."""
    out = {}
    for c in load_taxonomy("met-19").classes:
        if len(c.department_ids) == 1:
            out.update({name: c.department_ids[0] for name in (c.name, *c.labels)})
    return out


def effective(verdicts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest verdict not retracted (verdicts of one object, any order)."""
    retracted = {v["retracts"] for v in verdicts if v["kind"] == "retract"}
    live = [v for v in verdicts if v["kind"] != "retract" and v["verdict_id"] not in retracted]
    return max(live, key=lambda v: (v["recorded_at"], v["verdict_id"]), default=None)


def refresh(conn: Connection, object_id: int, etags: set[str], now: datetime) -> None:
    """Recompute the object's verdict columns and status, and the truth of its decisions on `etags`."""
    verdicts = [dict(r) for r in conn.execute(select(VERDICTS).where(VERDICTS.c.object_id == object_id)).mappings()]
    latest = effective(verdicts)
    row = dict(conn.execute(select(OBJECTS).where(OBJECTS.c.id == object_id)).mappings().one())
    row.update(verdict_id=latest and latest["verdict_id"], verdict_kind=latest and latest["kind"],
               verdict_department=latest and latest["department"],
               verdict_department_id=latest and latest["department_id"], verdict_etag=latest and latest["etag"],
               curator=latest and latest["curator"], verdict_at=latest and latest["recorded_at"], updated_at=now)
    row["status"] = status_of(row)
    conn.execute(update(OBJECTS).where(OBJECTS.c.id == object_id).values(
        {k: row[k] for k in ("verdict_id", "verdict_kind", "verdict_department", "verdict_department_id",
                             "verdict_etag", "curator", "verdict_at", "updated_at", "status")}))
    for etag in etags:
        truth = effective([v for v in verdicts if v["etag"] == etag])
        decisions = conn.execute(select(DECISIONS.c.decision_id, DECISIONS.c.top3).where(
            DECISIONS.c.object_id == object_id, DECISIONS.c.etag == etag)).all()
        if not decisions:
            continue
        stmt = update(DECISIONS).where(DECISIONS.c.decision_id == bindparam("_id")).values(
            truth_kind=bindparam("truth_kind"), truth_department=bindparam("truth_department"),
            truth_rank=bindparam("truth_rank"))
        conn.execute(stmt, [{"_id": did, "truth_kind": truth and truth["kind"],
                             "truth_department": truth and truth["department"],
                             "truth_rank": top3_rank(top3, truth["department"]) if truth else None}
                            for did, top3 in decisions])
