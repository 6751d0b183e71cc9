"""Verdicts, live accuracy and export on a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from streams.contract.curation import Verdict
from streams.ledger.errors import Conflict, Invalid, NotFound
from streams.ledger.export import export
from streams.ledger.ingest import Ingestor
from streams.ledger.labels import store_labels
from streams.ledger.service import Ledger
from tests.ledger.helpers import LABELS, T0, decision, items


def outbox(ledger) -> list[Verdict]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM outbox ORDER BY id")).scalars()
        return [Verdict.model_validate_json(p) for p in rows]


def test_verdict_kinds_latest_wins_and_history_is_kept(ledger):
    d = decision("v/1.jpg", top=0, confidence=0.5)
    ledger.ingestor.ingest(items(d))
    v1 = ledger.record_verdict(d.decision_id, "confirm", curator="amy")
    assert (v1.kind, v1.department, v1.department_id, v1.model.version) == ("confirm", "Egyptian Art", 10, "1")
    v2 = ledger.record_verdict(d.decision_id, "correct", curator="bob", department="Asian Art", note="a bowl",
                               at=v1.recorded_at + timedelta(seconds=1))
    assert (v2.kind, v2.department, v2.department_id) == ("correct", "Asian Art", 6)
    h = ledger.history(bucket="artworks", key="v/1.jpg")
    assert [v.curator for v in h.verdicts] == ["amy", "bob"]
    assert (h.object.status, h.object.verdict_department, h.object.curator) == ("reviewed", "Asian Art", "bob")
    assert ledger.queue() == []
    assert [v.verdict_id for v in outbox(ledger)] == [v1.verdict_id, v2.verdict_id]  # one message per verdict
    v3 = ledger.record_verdict(d.decision_id, "not_routable", curator="cy", at=v2.recorded_at + timedelta(seconds=1))
    assert v3.department is None
    assert ledger.history(bucket="artworks", key="v/1.jpg").object.verdict_kind == "not_routable"


def test_bad_verdicts_are_refused_with_one_line(ledger):
    d = decision("v/2.jpg")
    ledger.ingestor.ingest(items(d))
    with pytest.raises(Invalid, match="no department of model"):
        ledger.record_verdict(d.decision_id, "correct", "amy", department="Costume Institute")
    with pytest.raises(Invalid, match="names no department"):
        ledger.record_verdict(d.decision_id, "not_routable", "amy", department="Asian Art")
    with pytest.raises(Invalid, match="curator"):
        ledger.record_verdict(d.decision_id, "confirm", " ")
    with pytest.raises(NotFound):
        ledger.record_verdict("no-such-decision", "confirm", "amy")
    assert outbox(ledger) == [] and ledger.counts().verdicts == 0
    # "correct" naming the model's own department is a confirmation
    assert ledger.record_verdict(d.decision_id, "correct", "amy", department="Egyptian Art").kind == "confirm"


def test_a_verdict_may_name_any_label_the_model_outputs(ledger_settings, ledger):
    d = decision("v/5.jpg", confidence=0.5)
    ledger.ingestor.ingest(items(d))
    with pytest.raises(Invalid):
        ledger.record_verdict(d.decision_id, "correct", "amy", department="Arms and Armor")  # never seen yet
    store_labels(ledger.engine, "artroute", {label: None for label in LABELS})          # what Triton serves
    assert ledger.record_verdict(d.decision_id, "correct", "amy", department="Arms and Armor").department_id == 4
    with_taxonomy = Ledger(ledger.engine, ledger_settings.model_copy(update={"ledger_taxonomy": "met-19"}))
    v = with_taxonomy.record_verdict(d.decision_id, "correct", "amy", department="Photographs")
    assert v.department_id == 19
    assert "Photographs" in {x.label for x in with_taxonomy.departments("artroute")}


def test_a_verdict_id_makes_a_retry_idempotent(ledger):
    d = decision("v/3.jpg", confidence=0.5)
    ledger.ingestor.ingest(items(d))
    a = ledger.record_verdict(d.decision_id, "correct", "amy", department="Asian Art", verdict_id="fixed-id-1")
    b = ledger.record_verdict(d.decision_id, "correct", "amy", department="Asian Art", verdict_id="fixed-id-1")
    assert a == b and len(outbox(ledger)) == 1 and ledger.counts().verdicts == 1
    with pytest.raises(Conflict):
        ledger.record_verdict(d.decision_id, "confirm", "eve", verdict_id="fixed-id-1")


def test_retract_undoes_the_last_verdict(ledger):
    d = decision("v/4.jpg", confidence=0.5)
    ledger.ingestor.ingest(items(d))
    first = ledger.record_verdict(d.decision_id, "confirm", "amy")
    second = ledger.record_verdict(d.decision_id, "not_routable", "amy", at=first.recorded_at + timedelta(seconds=1))
    undo = ledger.retract(second.verdict_id, "amy", at=second.recorded_at + timedelta(seconds=1))
    assert (undo.kind, undo.retracts) == ("retract", second.verdict_id)
    obj = ledger.history(bucket="artworks", key="v/4.jpg").object
    assert (obj.verdict_id, obj.status) == (first.verdict_id, "reviewed")
    ledger.retract(first.verdict_id, "amy", at=undo.recorded_at + timedelta(seconds=1))
    assert [q.key for q in ledger.queue()] == ["v/4.jpg"]       # back in the queue
    with pytest.raises(Conflict):
        ledger.retract(first.verdict_id, "amy")
    assert [v.kind for v in outbox(ledger)] == ["confirm", "not_routable", "retract", "retract"]


def test_bulk_confirm_is_one_transaction(ledger):
    ds = [decision(f"g/{i}.jpg", top=i % 4, confidence=0.6) for i in range(24)]
    ledger.ingestor.ingest(items(*ds))
    with pytest.raises(NotFound):
        ledger.bulk_confirm([d.decision_id for d in ds] + ["missing"], "amy")
    assert ledger.counts().verdicts == 0                        # all or none
    vs = ledger.bulk_confirm([d.decision_id for d in ds], "amy")
    assert [v.department for v in vs] == [d.department for d in ds]
    assert ledger.counts().reviewed == 24 and ledger.queue() == []


def test_live_accuracy_per_version_and_department(ledger_settings, ledger):
    """20 auto-routed decisions of v1 (2 sampled for audit), 10 reviewed; verdicts with known answers."""
    ingestor = Ingestor(ledger.engine, 0.1)
    auto = [decision(f"acc/a{i:02d}.jpg", top=i % 2, confidence=0.95) for i in range(40)]
    review = [decision(f"acc/r{i:02d}.jpg", top=0, confidence=0.5) for i in range(10)]
    ingestor.ingest(items(*auto, *review))
    audited = [q for q in ledger.queue(limit=100) if q.reason == "audit"]
    assert audited, "the fixed ids above put some decisions into the audit sample"
    for q in audited:                                           # the model was right on the audit sample
        ledger.record_verdict(q.decision_id, "confirm", "amy")
    for i, d in enumerate(review):                              # 6 right, 2 in top 3 (rank 2), 2 not routable
        kind, dep = ("confirm", None) if i < 6 else ("correct", "Asian Art") if i < 8 else ("not_routable", None)
        ledger.record_verdict(d.decision_id, kind, "bob", department=dep)
    # v2 re-decides one reviewed photo (same content): the curator's verdict is its truth too
    ingestor.ingest(items(decision("acc/r07.jpg", top=1, version="2", confidence=0.9,
                                   decided_at=T0 + timedelta(hours=1))))
    s = ledger.stats()
    v1 = next(m for m in s.models if m.model_version == "1")
    assert (v1.decisions, v1.auto_routed, v1.coverage) == (50, 40, 0.8)
    assert (v1.reviewed, v1.reviewed_agreement) == (10, 0.6)
    assert (v1.audited, v1.audit_agreement) == (len(audited), 1.0)
    assert v1.with_verdict == 10 + len(audited) and v1.not_routable == 2
    assert v1.top3_hit_rate == round((len(audited) + 8) / (10 + len(audited)), 4)
    assert v1.backlog == 0
    v2 = next(m for m in s.models if m.model_version == "2")
    assert (v2.decisions, v2.with_verdict, v2.agreement) == (1, 1, 1.0)
    egypt = next(g for g in s.departments if g.model_version == "1" and g.department == "Egyptian Art")
    assert egypt.reviewed == 10 and egypt.reviewed_agreement == 0.6
    cells = {(c.predicted, c.curator): c.n for c in ledger.confusion("artroute", "1")}
    assert cells[("Egyptian Art", "Asian Art")] == 2 and cells[("Egyptian Art", "not routable")] == 2


def test_backlog_and_age(ledger):
    ledger.ingestor.ingest(items(decision("age/1.jpg", confidence=0.4, event_time=T0)))
    [m] = ledger.stats().models
    assert m.backlog == 1 and m.oldest_pending_age_s > 3600


def test_export_csv_and_parquet(ledger, tmp_path):
    ds = [decision(f"x/{i}.jpg", top=i % 2, confidence=0.5) for i in range(4)]
    ledger.ingestor.ingest(items(*ds))
    ledger.record_verdict(ds[0].decision_id, "correct", "amy", department="European Paintings")
    ledger.record_verdict(ds[1].decision_id, "not_routable", "amy")
    buf = io.StringIO()
    assert export(ledger.engine, "csv", buf) == 4
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(buf.getvalue()))}
    assert (rows["x/0.jpg"]["department"], rows["x/0.jpg"]["department_id"], rows["x/0.jpg"]["source"]) == \
        ("European Paintings", "11", "curator")
    assert (rows["x/1.jpg"]["department"], rows["x/1.jpg"]["routable"]) == ("", "False")
    assert (rows["x/2.jpg"]["department"], rows["x/2.jpg"]["source"], rows["x/2.jpg"]["status"]) == \
        ("Egyptian Art", "model", "pending")
    path = tmp_path / "x.parquet"
    assert export(ledger.engine, "parquet", path, department="Asian Art") == 1
    [row] = pq.read_table(path).to_pylist()
    assert (row["key"], row["department_id"], row["decided_at"].tzinfo is not None) == ("x/3.jpg", 6, True)
    assert export(ledger.engine, "csv", io.StringIO(), department="11") == 1
    assert export(ledger.engine, "csv", io.StringIO(), since=T0 + timedelta(days=3650)) == 0


def test_curated_pages_hold_the_current_verdicts(ledger):
    ds = [decision(f"c/{i}.jpg", confidence=0.5) for i in range(5)]
    ledger.ingestor.ingest(items(*ds))
    vs = ledger.bulk_confirm([d.decision_id for d in ds], "amy")
    ledger.retract(vs[4].verdict_id, "amy", at=vs[4].recorded_at + timedelta(seconds=1))
    p1 = ledger.curated(limit=3)
    p2 = ledger.curated(cursor=p1.next_cursor, limit=3)
    assert [i.key for i in p1.items + p2.items] == [f"c/{i}.jpg" for i in range(4)] and p2.next_cursor is None
    assert json.loads(p1.model_dump_json())["items"][0]["department"] == "Egyptian Art"


def test_the_committed_verdict_schema_matches_the_model(repo_root):
    from streams.ledger.verdicts import VERDICT_SCHEMA, render_schema

    committed = (repo_root / "docs" / "schemas" / VERDICT_SCHEMA).read_text(encoding="utf-8")
    assert committed == render_schema(VERDICT_SCHEMA, Verdict), "stale: run streams.ledger.verdicts.write_verdict_schema()"
