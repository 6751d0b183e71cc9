"""Reading the ledger: the review queue, search, an object's history, dead letters, counts, curated items.

The review queue and search read the `objects` table only (one row per object, indexed by status and
upload time per filter), so they stay fast at millions of rows; see docs/ledger.md for the indexes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from streams.contract.curation import CuratedItem, CuratedPage, ModelRef
from streams.ledger.errors import Invalid, NotFound
from streams.ledger.ingest import OBJECTS
from streams.ledger.models import DeadLetterRow, DecisionRow, VerdictRow
from streams.ledger.schemas import (Counts, DeadLetterOut, DeadLetterPage, DecisionOut, ObjectHistory, ObjectSummary,
                                    Page, QueueItem, SearchQuery, VerdictOut)

DECISIONS, DEAD, VERDICTS = DecisionRow.__table__, DeadLetterRow.__table__, VerdictRow.__table__
MAX_CHAR = "\U0010ffff"


def count_if(cond):
    """SUM(CASE WHEN cond THEN 1 ELSE 0 END), 0 over no rows."""
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def prefix_filter(column, prefix: str):
    """key LIKE 'prefix%', written so that a byte-ordered index (SQLite, PostgreSQL "C") serves it."""
    return and_(column >= prefix, column < prefix + MAX_CHAR, column.startswith(prefix, autoescape=True))


def queue(conn: Connection, limit: int = 20, department: str | None = None, reason: str | None = None,
          model_version: str | None = None, exclude: Sequence[int] = ()) -> list[QueueItem]:
    """Objects waiting for a verdict, oldest upload first."""
    o = OBJECTS
    stmt = (select(o.c.id, o.c.bucket, o.c.key, o.c.queue_reason, DECISIONS)
            .join(DECISIONS, DECISIONS.c.decision_id == o.c.decision_id)
            .where(o.c.status == "pending").order_by(o.c.event_time, o.c.id).limit(limit))
    for column, value in ((o.c.department, department), (o.c.queue_reason, reason), (o.c.model_version, model_version)):
        if value is not None:
            stmt = stmt.where(column == value)
    if exclude:
        stmt = stmt.where(o.c.id.not_in(list(exclude)))
    return [QueueItem(object_id=r["id"], bucket=r["bucket"], key=r["key"], etag=r["etag"], decision_id=r["decision_id"],
                      model_name=r["model_name"], model_version=r["model_version"], department=r["department"],
                      department_id=r["department_id"], confidence=r["confidence"], margin=r["margin"],
                      top3=r["top3"], reason=r["queue_reason"], event_time=r["event_time"],
                      decided_at=r["decided_at"], decision=r["raw"])
            for r in conn.execute(stmt).mappings()]


def _summary(r: Any) -> ObjectSummary:
    return ObjectSummary(reason=r["queue_reason"], **{k: r[k] for k in ObjectSummary.model_fields if k != "reason"})


def search(conn: Connection, q: SearchQuery) -> Page:
    o = OBJECTS
    where = []
    if q.key is not None:
        where.append(o.c.key == q.key)
    if q.prefix:
        where.append(prefix_filter(o.c.key, q.prefix))
    for column, value in ((o.c.bucket, q.bucket), (o.c.department, q.department),
                          (o.c.verdict_department, q.verdict_department), (o.c.status, q.status),
                          (o.c.model_version, q.model_version)):
        if value is not None:
            where.append(column == value)
    if q.since is not None:
        where.append(o.c.event_time >= q.since)
    if q.until is not None:
        where.append(o.c.event_time < q.until)
    total = conn.execute(select(func.count()).select_from(o).where(*where)).scalar_one()
    stmt = select(o).where(*where).order_by(o.c.id.desc()).limit(q.limit + 1)
    if q.cursor:
        stmt = stmt.where(o.c.id < _cursor(q.cursor))
    rows = list(conn.execute(stmt).mappings())
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    return Page(items=[_summary(r) for r in rows], total=total, next_cursor=str(rows[-1]["id"]) if more else None)


def _cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise Invalid(f"bad cursor {cursor!r}") from None


def find_object(conn: Connection, object_id: int | None = None, bucket: str | None = None,
                key: str | None = None) -> dict[str, Any]:
    o = OBJECTS
    where = o.c.id == object_id if object_id is not None else and_(o.c.bucket == bucket, o.c.key == key)
    row = conn.execute(select(o).where(where)).mappings().first()
    if row is None:
        raise NotFound(f"no object {object_id if object_id is not None else f's3://{bucket}/{key}'} in the ledger")
    return dict(row)


def _dead_letter(r: Any, redecided_at=None) -> DeadLetterOut:
    return DeadLetterOut(redecided_at=redecided_at, **{k: r[k] for k in DeadLetterOut.model_fields if k != "redecided_at"})


def history(conn: Connection, object_id: int | None = None, bucket: str | None = None,
            key: str | None = None) -> ObjectHistory:
    obj = find_object(conn, object_id, bucket, key)
    oid = obj["id"]
    decisions = conn.execute(select(DECISIONS).where(DECISIONS.c.object_id == oid).order_by(DECISIONS.c.decided_at))
    verdicts = conn.execute(select(VERDICTS).where(VERDICTS.c.object_id == oid).order_by(VERDICTS.c.recorded_at))
    dls = conn.execute(select(DEAD).where(DEAD.c.object_id == oid).order_by(DEAD.c.failed_at))
    return ObjectHistory(object=_summary(obj),
                         decisions=[DecisionOut.model_validate(dict(r)) for r in decisions.mappings()],
                         verdicts=[VerdictOut.model_validate(dict(r)) for r in verdicts.mappings()],
                         dead_letters=[_dead_letter(r) for r in dls.mappings()])


def dead_letters(conn: Connection, limit: int = 50, cursor: str | None = None, kind: str | None = None) -> DeadLetterPage:
    """Newest first; `redecided_at`: the object's later decision, if any (a fixed file re-published)."""
    redecided = (select(func.max(DECISIONS.c.decided_at)).where(DECISIONS.c.object_id == DEAD.c.object_id,
                                                                DECISIONS.c.decided_at > DEAD.c.failed_at)
                 .scalar_subquery())
    stmt = select(DEAD, redecided.label("redecided_at")).order_by(DEAD.c.failed_at.desc(), DEAD.c.id.desc())
    if kind is not None:
        stmt = stmt.where(DEAD.c.error_kind == kind)
    offset = _cursor(cursor) if cursor else 0
    rows = list(conn.execute(stmt.offset(offset).limit(limit + 1)).mappings())
    items = [_dead_letter(r, r["redecided_at"]) for r in rows[:limit]]
    return DeadLetterPage(items=items, next_cursor=str(offset + limit) if len(rows) > limit else None)


def counts(conn: Connection, prefix: str | None = None) -> Counts:
    o = OBJECTS
    where = [prefix_filter(o.c.key, prefix)] if prefix else []
    n = count_if
    r = conn.execute(select(func.count(), n(o.c.status != "dead_letter"),
                            n(and_(o.c.status != "dead_letter", o.c.needs_review)),
                            n(and_(o.c.status == "pending", o.c.queue_reason == "audit")), n(o.c.status == "pending"),
                            n(o.c.status == "reviewed"), n(o.c.status == "dead_letter")).where(*where)).one()
    dl_where = [prefix_filter(DEAD.c.key, prefix)] if prefix else []
    dl = conn.execute(select(func.count()).select_from(DEAD).where(*dl_where)).scalar_one()

    def rows_of(table) -> int:  # decision / verdict rows, of the prefix's objects
        source = table.join(o, o.c.id == table.c.object_id) if prefix else table
        return conn.execute(select(func.count()).select_from(source).where(*where)).scalar_one()

    dec, ver = rows_of(DECISIONS), rows_of(VERDICTS)
    return Counts(objects=r[0], decided=r[1], in_review=r[2], audit=r[3], pending=r[4], reviewed=r[5],
                  dead_letters=r[6], dead_letter_messages=dl, decisions=dec, verdicts=ver)


def curated(conn: Connection, cursor: str | None = None, limit: int = 500) -> CuratedPage:
    """Every object's current verdict (retractions applied), by object id."""
    o, v = OBJECTS, VERDICTS
    stmt = (select(o.c.id, o.c.bucket, o.c.key, o.c.version_id, v).join(v, v.c.verdict_id == o.c.verdict_id)
            .order_by(o.c.id).limit(limit + 1))
    if cursor:
        stmt = stmt.where(o.c.id > _cursor(cursor))
    rows = list(conn.execute(stmt).mappings())
    items = [CuratedItem(bucket=r["bucket"], key=r["key"], etag=r["etag"], version_id=r["version_id"], kind=r["kind"],
                         department=r["department"], department_id=r["department_id"], verdict_id=r["verdict_id"],
                         decision_id=r["decision_id"], model=ModelRef(name=r["model_name"], version=r["model_version"]),
                         curator=r["curator"], recorded_at=r["recorded_at"]) for r in rows[:limit]]
    return CuratedPage(items=items, next_cursor=str(rows[limit - 1]["id"]) if len(rows) > limit else None)


def known_object(conn: Connection, bucket: str, key: str, etag: str) -> bool:
    """Whether the ledger holds a decision on exactly this content (the image endpoint serves only those)."""
    stmt = (select(DECISIONS.c.decision_id).join(OBJECTS, OBJECTS.c.id == DECISIONS.c.object_id)
            .where(OBJECTS.c.bucket == bucket, OBJECTS.c.key == key, DECISIONS.c.etag == etag).limit(1))
    return conn.execute(stmt).first() is not None
