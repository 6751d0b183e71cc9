"""The ledger's tables (SQLAlchemy 2 typed ORM). Alembic migrations (streams/ledger/migrations) create them;
a test checks that the migrated schema equals these definitions on SQLite and PostgreSQL.

* `decisions`    every routing decision ever seen, one row per decision id (history: every model version);
                 the raw message beside the columns; `truth_*` = the effective verdict on its content.
* `objects`      one row per (bucket, key): its current outcome (the newest decision or dead letter),
                 review status and latest verdict, denormalised so that the review queue, search and
                 export read one indexed table.
* `dead_letters` every dead letter, one row per deterministic dead-letter id.
* `verdicts`     every verdict (and retraction) ever recorded.
* `outbox`       verdict messages to publish (transactional outbox), marked when the broker acked them.
* `model_labels` the departments each model is known to output (from decisions, or the taxonomy).

Object status: ``pending`` (in the review queue: needs review or audit sample, no verdict on this
content), ``reviewed`` (a verdict on the current content), ``auto`` (auto-routed, not sampled),
``dead_letter`` (the current outcome is a dead letter).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("pending", "reviewed", "auto", "dead_letter")
# Object keys compare byte-wise on PostgreSQL too (prefix search uses the index; same order as SQLite).
KeyString = String().with_variant(String(collation="C"), "postgresql")
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (no time zones) as on PostgreSQL."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: Json, list[Any]: Json}


class ObjectRow(Base):
    __tablename__ = "objects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(KeyString)
    key: Mapped[str] = mapped_column(KeyString)
    etag: Mapped[str | None]
    version_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    outcome_at: Mapped[datetime]                       # decided_at / failed_at of the current outcome
    event_time: Mapped[datetime]                       # upload time of the current outcome (queue order)
    # current decision (null when the object only ever had dead letters)
    decision_id: Mapped[str | None] = mapped_column(String(36))
    model_name: Mapped[str | None]
    model_version: Mapped[str | None]
    department: Mapped[str | None]
    department_id: Mapped[int | None]
    confidence: Mapped[float | None] = mapped_column(Float)
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    queue_reason: Mapped[str | None]                   # review reason, or "audit"
    # current dead letter (when the newest outcome is one)
    dead_letter_id: Mapped[str | None] = mapped_column(String(36))
    error_kind: Mapped[str | None]
    # latest effective verdict (any content of this key)
    verdict_id: Mapped[str | None] = mapped_column(String(36))
    verdict_kind: Mapped[str | None] = mapped_column(String(16))
    verdict_department: Mapped[str | None]
    verdict_department_id: Mapped[int | None]
    verdict_etag: Mapped[str | None]
    curator: Mapped[str | None]
    verdict_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_objects_bucket_key", "bucket", "key", unique=True),
        Index("ix_objects_key", "key"),
        Index("ix_objects_queue", "status", "event_time", "id"),
        Index("ix_objects_queue_department", "status", "department", "event_time", "id"),
        Index("ix_objects_queue_reason", "status", "queue_reason", "event_time", "id"),
        Index("ix_objects_queue_model", "status", "model_version", "event_time", "id"),
        Index("ix_objects_updated_at", "updated_at"),
    )


class DecisionRow(Base):
    __tablename__ = "decisions"
    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id"))
    etag: Mapped[str]
    version_id: Mapped[str | None]
    model_name: Mapped[str]
    model_version: Mapped[str]
    department: Mapped[str]
    department_id: Mapped[int | None]
    confidence: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    top3: Mapped[list[Any]]
    needs_review: Mapped[bool] = mapped_column(Boolean)
    review_reason: Mapped[str | None]
    audit: Mapped[bool] = mapped_column(Boolean)       # auto-routed, picked for the audit sample
    event_time: Mapped[datetime]
    decided_at: Mapped[datetime]
    ingested_at: Mapped[datetime]
    raw: Mapped[dict[str, Any]]
    # the effective verdict on this content (same object and etag), for accuracy
    truth_kind: Mapped[str | None] = mapped_column(String(16))
    truth_department: Mapped[str | None]
    truth_rank: Mapped[int | None]                     # 1..3: rank of the curator's department in top3; 0: not there

    __table_args__ = (
        Index("ix_decisions_object", "object_id", "etag"),
        Index("ix_decisions_model", "model_name", "model_version"),
    )


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    object_id: Mapped[int | None] = mapped_column(ForeignKey("objects.id"))
    bucket: Mapped[str | None] = mapped_column(KeyString)
    key: Mapped[str | None] = mapped_column(KeyString)
    etag: Mapped[str | None]
    error_kind: Mapped[str]
    stage: Mapped[str]
    message: Mapped[str] = mapped_column(Text)
    source_topic: Mapped[str | None]
    source_partition: Mapped[int | None]
    source_offset: Mapped[int | None]
    failed_at: Mapped[datetime]
    ingested_at: Mapped[datetime]
    raw: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_dead_letters_failed_at", "failed_at"), Index("ix_dead_letters_object", "object_id"))


class VerdictRow(Base):
    __tablename__ = "verdicts"
    verdict_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("objects.id"))
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.decision_id"))
    etag: Mapped[str]
    model_name: Mapped[str]
    model_version: Mapped[str]
    kind: Mapped[str] = mapped_column(String(16))
    department: Mapped[str | None]
    department_id: Mapped[int | None]
    retracts: Mapped[str | None] = mapped_column(String(36))
    curator: Mapped[str]
    recorded_at: Mapped[datetime]
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_verdicts_object", "object_id", "recorded_at"),)


class OutboxRow(Base):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str]
    key: Mapped[str] = mapped_column(KeyString)
    payload: Mapped[str] = mapped_column(Text)         # the exact message bytes (UTF-8 JSON), written once
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)


class ModelLabelRow(Base):
    __tablename__ = "model_labels"
    model_name: Mapped[str] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(primary_key=True)
    department_id: Mapped[int | None]
    first_seen_at: Mapped[datetime]
