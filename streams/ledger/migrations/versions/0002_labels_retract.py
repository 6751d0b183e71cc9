"""model labels, verdict retraction (undo), outbox attempts, export index

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

* `model_labels`: the departments each model outputs, so a verdict can only name one of them;
  filled from the decisions already in the ledger (their top-3 labels).
* `verdicts.retracts`: a verdict of kind "retract" undoes another (the console's undo).
* `outbox.attempts`: publish attempts per message (operators see a message that keeps failing).
* `ix_objects_updated_at`: `ledger export --since` reads objects changed since a time.
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_labels",
        sa.Column("model_name", sa.String(), primary_key=True),
        sa.Column("label", sa.String(), primary_key=True),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("retracts", sa.String(length=36), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_objects_updated_at", "objects", ["updated_at"])
    backfill_labels()


def backfill_labels() -> None:
    """Every (model, label) in the decisions' top-3, with the department id of top-1 decisions."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT model_name, department, department_id, top3, decided_at FROM decisions"))
    labels: dict[tuple[str, str], tuple[int | None, object]] = {}
    for model, department, department_id, top3, decided_at in rows:
        entries = json.loads(top3) if isinstance(top3, str) else top3
        for entry in entries:
            labels.setdefault((model, entry["label"]), (None, decided_at))
        if department_id is not None:
            labels[(model, department)] = (department_id, labels.get((model, department), (None, decided_at))[1])
    table = sa.table("model_labels", sa.column("model_name"), sa.column("label"), sa.column("department_id"),
                     sa.column("first_seen_at"))
    if labels:
        op.bulk_insert(table, [{"model_name": m, "label": lb, "department_id": d, "first_seen_at": t}
                               for (m, lb), (d, t) in labels.items()])


def downgrade() -> None:
    op.drop_index("ix_objects_updated_at", "objects")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("attempts")
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("retracts")
    op.drop_table("model_labels")
