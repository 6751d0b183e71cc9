"""initial ledger: objects, decisions, dead letters, verdicts, outbox

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEY = sa.String().with_variant(sa.String(collation="C"), "postgresql")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("id", sa.Integer(), autoincrement=True, primary_key=True),
        sa.Column("bucket", KEY, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        ts("first_seen_at"), ts("updated_at"), ts("outcome_at"), ts("event_time"),
        sa.Column("decision_id", sa.String(length=36), nullable=True),
        sa.Column("model_name", sa.String(), nullable=True),
        sa.Column("model_version", sa.String(), nullable=True),
        sa.Column("department", sa.String(), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("queue_reason", sa.String(), nullable=True),
        sa.Column("dead_letter_id", sa.String(length=36), nullable=True),
        sa.Column("error_kind", sa.String(), nullable=True),
        sa.Column("verdict_id", sa.String(length=36), nullable=True),
        sa.Column("verdict_kind", sa.String(length=16), nullable=True),
        sa.Column("verdict_department", sa.String(), nullable=True),
        sa.Column("verdict_department_id", sa.Integer(), nullable=True),
        sa.Column("verdict_etag", sa.String(), nullable=True),
        sa.Column("curator", sa.String(), nullable=True),
        ts("verdict_at", nullable=True),
    )
    op.create_index("ix_objects_bucket_key", "objects", ["bucket", "key"], unique=True)
    op.create_index("ix_objects_key", "objects", ["key"])
    op.create_index("ix_objects_queue", "objects", ["status", "event_time", "id"])
    op.create_index("ix_objects_queue_department", "objects", ["status", "department", "event_time", "id"])
    op.create_index("ix_objects_queue_model", "objects", ["status", "model_version", "event_time", "id"])
    op.create_index("ix_objects_queue_reason", "objects", ["status", "queue_reason", "event_time", "id"])

    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(length=36), primary_key=True),
        sa.Column("object_id", sa.Integer(), sa.ForeignKey("objects.id"), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("department", sa.String(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("top3", JSON, nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("review_reason", sa.String(), nullable=True),
        sa.Column("audit", sa.Boolean(), nullable=False),
        ts("event_time"), ts("decided_at"), ts("ingested_at"),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("truth_kind", sa.String(length=16), nullable=True),
        sa.Column("truth_department", sa.String(), nullable=True),
        sa.Column("truth_rank", sa.Integer(), nullable=True),
    )
    op.create_index("ix_decisions_model", "decisions", ["model_name", "model_version"])
    op.create_index("ix_decisions_object", "decisions", ["object_id", "etag"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column("object_id", sa.Integer(), sa.ForeignKey("objects.id"), nullable=True),
        sa.Column("bucket", KEY, nullable=True),
        sa.Column("key", KEY, nullable=True),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column("error_kind", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("source_topic", sa.String(), nullable=True),
        sa.Column("source_partition", sa.Integer(), nullable=True),
        sa.Column("source_offset", sa.Integer(), nullable=True),
        ts("failed_at"), ts("ingested_at"),
        sa.Column("raw", JSON, nullable=False),
    )
    op.create_index("ix_dead_letters_failed_at", "dead_letters", ["failed_at"])
    op.create_index("ix_dead_letters_object", "dead_letters", ["object_id"])

    op.create_table(
        "verdicts",
        sa.Column("verdict_id", sa.String(length=36), primary_key=True),
        sa.Column("object_id", sa.Integer(), sa.ForeignKey("objects.id"), nullable=False),
        sa.Column("decision_id", sa.String(length=36), sa.ForeignKey("decisions.decision_id"), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("department", sa.String(), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("curator", sa.String(), nullable=False),
        ts("recorded_at"),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_index("ix_verdicts_object", "verdicts", ["object_id", "recorded_at"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, primary_key=True),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        ts("created_at"), ts("published_at", nullable=True),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])


def downgrade() -> None:
    for table in ("outbox", "verdicts", "dead_letters", "decisions", "objects"):
        op.drop_table(table)
