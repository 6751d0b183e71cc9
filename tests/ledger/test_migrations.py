"""Alembic: the schema from an empty database and from the previous revision, on SQLite and PostgreSQL."""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from streams.ledger.db import current_revision, head_revision, make_engine, migrate
from streams.ledger.models import Base


def schema_diff(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_upgrade_from_an_empty_database_gives_exactly_the_models(ledger_url):
    engine = make_engine(ledger_url)
    assert current_revision(engine) is None
    assert migrate(engine) == head_revision() == "0002"
    assert schema_diff(engine) == []
    assert migrate(engine) == "0002"  # a second start is a no-op
    engine.dispose()


def test_upgrade_from_the_previous_revision_keeps_the_data(ledger_url):
    engine = make_engine(ledger_url)
    assert migrate(engine, "0001") == "0001"
    assert not sa.inspect(engine).has_table("model_labels")
    t = "2026-03-01 09:00:00+00:00"
    top3 = json.dumps([{"label": "Egyptian Art", "score": 0.8}, {"label": "Asian Art", "score": 0.1}])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO objects (bucket, key, etag, status, first_seen_at, updated_at, outcome_at, event_time, "
            "decision_id, department, needs_review) VALUES ('b', 'k.jpg', 'e', 'auto', :t, :t, :t, :t, 'd1', "
            "'Egyptian Art', false)"), {"t": t})
        conn.execute(sa.text(
            "INSERT INTO decisions (decision_id, object_id, etag, model_name, model_version, department, "
            "department_id, confidence, margin, top3, needs_review, audit, event_time, decided_at, ingested_at, raw) "
            "VALUES ('d1', 1, 'e', 'artroute', '1', 'Egyptian Art', 10, 0.8, 0.7, :top3, false, false, :t, :t, :t, "
            "'{}')"), {"t": t, "top3": top3})
        conn.execute(sa.text("INSERT INTO outbox (topic, key, payload, created_at) VALUES ('v', 'k.jpg', '{}', :t)"),
                     {"t": t})
    assert migrate(engine) == "0002"
    assert schema_diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar() == 1
        assert conn.execute(sa.text("SELECT attempts FROM outbox")).scalar() == 0
        labels = dict(conn.execute(sa.text("SELECT label, department_id FROM model_labels")).all())
    assert labels == {"Egyptian Art": 10, "Asian Art": None}  # backfilled from the decisions' top-3
    engine.dispose()
