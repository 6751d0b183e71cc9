"""decide(), decision ids, department ids from the model's labels, DeadLetter and the committed JSON Schemas."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from streams.contract.model import Label
from streams.contract.taxonomy import load_taxonomy
from streams.worker.decisions import DeadLetter, RoutingDecision, decide, decision_id
from streams.worker.events import IntakeEvent, parse_intake, to_s3_event_json
from streams.worker.schemas import SCHEMA_DIR, render_schemas

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
EVENT = IntakeEvent(bucket="artworks", key="Ägypten/статуя 1.jpg", size=15201, etag="a3c5e8f1", version_id="v7",
                    sequencer="182C9B77A0E0B612", event_time=datetime(2025, 3, 14, 9, 28, 41, tzinfo=UTC),
                    event_name="s3:ObjectCreated:Put", content_type="image/jpeg", source="s3")
LABELS = [Label(name="Egyptian Art", department_ids=[10]), Label(name="Asian Art", department_ids=[6]),
          Label(name="Greek and Roman Art", department_ids=[13]), Label(name="Musical Instruments", department_ids=[18])]


def run(probs, labels=LABELS, min_confidence=0.6, min_margin=0.15, event=EVENT, version="3") -> RoutingDecision:
    return decide(event, np.asarray(probs, dtype=np.float32), labels, "artroute", version,
                  min_confidence, min_margin, NOW)


def test_confident_decision():
    d = run([0.82, 0.10, 0.05, 0.03])
    assert (d.department, d.department_id, d.needs_review, d.review_reason) == ("Egyptian Art", 10, False, None)
    assert d.confidence == pytest.approx(0.82) and d.margin == pytest.approx(0.72)
    assert [(s.label, round(s.score, 2)) for s in d.top3] == [
        ("Egyptian Art", 0.82), ("Asian Art", 0.10), ("Greek and Roman Art", 0.05)]
    assert (d.bucket, d.key, d.etag, d.version_id, d.source) == ("artworks", EVENT.key, "a3c5e8f1", "v7", "s3")
    assert d.model.name == "artroute" and d.model.version == "3"
    assert d.event_time == EVENT.event_time and d.decided_at == NOW and d.schema_version == 1


@pytest.mark.parametrize(("probs", "reason"), [
    ([0.55, 0.25, 0.15, 0.05], "low_confidence"),
    ([0.30, 0.65, 0.03, 0.02], None),
    ([0.62, 0.30, 0.05, 0.03], None),
    ([0.61, 0.00, 0.00, 0.39], None),
    ([0.00, 0.00, 0.05, 0.95], None),
    ([0.40, 0.40, 0.10, 0.10], "low_confidence"),
])
def test_review_thresholds(probs, reason):
    d = run(probs)
    assert d.review_reason == reason and d.needs_review is (reason is not None)


def test_small_margin_is_checked_after_confidence():
    d = run([0.70, 0.25, 0.03, 0.02], min_margin=0.5)
    assert (d.needs_review, d.review_reason) == (True, "small_margin")
    assert run([0.70, 0.25, 0.03, 0.02], min_margin=0.4).needs_review is False


def test_ties_rank_the_lower_index_first():
    d = run([0.25, 0.25, 0.25, 0.25])
    assert [s.label for s in d.top3] == [lb.name for lb in LABELS[:3]] and d.margin == 0.0


def test_fewer_than_three_classes_and_other_taxonomies():
    d = run([0.9, 0.1], labels=[Label(name="paintings"), Label(name="sculpture")])
    assert [s.label for s in d.top3] == ["paintings", "sculpture"]
    assert (d.department, d.department_id) == ("paintings", None)
    assert run([1.0], labels=[Label(name="only")]).margin == 1.0


@pytest.mark.parametrize(("probs", "labels"), [
    ([0.5, 0.5], LABELS),                       # wrong length
    ([[0.5, 0.5, 0.0, 0.0]], LABELS),           # wrong shape
    ([0.5, 0.2, 0.1, 0.1], LABELS),             # does not sum to 1
    ([np.nan, 0.5, 0.25, 0.25], LABELS),
    ([1.5, -0.5, 0.0, 0.0], LABELS),
    ([], []),
])
def test_invalid_probabilities_raise(probs, labels):
    with pytest.raises(ValueError):
        run(probs, labels=labels)


def test_decision_id_is_deterministic_and_content_addressed():
    first, again = run([0.82, 0.10, 0.05, 0.03]), run([0.5, 0.3, 0.1, 0.1])
    assert first.decision_id == again.decision_id == decision_id("artworks", EVENT.key, "a3c5e8f1", "artroute", "3")
    other_content = EVENT.model_copy(update={"etag": "ffff"})
    assert run([0.82, 0.10, 0.05, 0.03], event=other_content).decision_id != first.decision_id
    assert run([0.82, 0.10, 0.05, 0.03], version="4").decision_id != first.decision_id
    assert decision_id("a", "b\nc", "e", "m", "1") != decision_id("a", "b", "c\ne", "m", "1")


def test_decision_json_round_trip():
    d = run([0.55, 0.25, 0.15, 0.05])
    assert RoutingDecision.model_validate_json(d.model_dump_json()) == d


def test_department_id_is_the_answering_labels_own():
    """The id comes with the label (the model's contract), whatever the label's name says."""
    labels = [Label(name="Egyptian Art", department_ids=[99]), Label(name="paintings", department_ids=[]),
              Label(name="Ancient and Classical", department_ids=[3, 10, 13])]
    assert run([0.9, 0.05, 0.05], labels).department_id == 99
    assert (run([0.05, 0.9, 0.05], labels).department_id, run([0.05, 0.9, 0.05], labels).department) == (None, "paintings")
    assert run([0.05, 0.05, 0.9], labels).department_id is None      # a merge of three departments names none


def test_met19_labels_carry_the_real_api_department_ids(shared_dir):
    api = json.loads((shared_dir / "data" / "met-api" / "departments.json").read_text())["departments"]
    labels = [Label(name=c.name, department_ids=c.department_ids) for c in load_taxonomy("met-19").classes]
    assert sorted(lb.department_id for lb in labels) == sorted(d["departmentId"] for d in api)
    for i, lb in enumerate(labels):
        probs = np.full(len(labels), 0.1 / (len(labels) - 1))
        probs[i] = 0.9
        assert run(probs, labels).department_id == lb.department_id


def test_met19_takes_every_department_name_in_object_records(shared_dir):
    objects = json.loads((shared_dir / "data" / "met-api" / "ten_per_department_190.json").read_text())
    names = {o["department"] for o in _records(objects)}
    index = load_taxonomy("met-19").label_to_index()
    assert names and names <= set(index), names - set(index)


def _records(doc) -> list[dict]:
    """ten_per_department_190.json: a list of records or a dict of lists (department -> records)."""
    if isinstance(doc, dict):
        return [r for v in doc.values() if isinstance(v, list) for r in v if isinstance(r, dict)]
    return [r for r in doc if isinstance(r, dict)]


# --- dead letters ----------------------------------------------------------------------------------

def test_dead_letter_keeps_the_original_bytes_and_where_it_came_from():
    value = b'{"Records": [{"eventName": "s3:ObjectCreated:Put"}]}'
    rejection = parse_intake(value).malformed[0]
    dl = DeadLetter.from_message(value, error_kind=rejection.reason, message=rejection.message, stage="parse",
                                 failed_at=NOW, key=b"artworks/x.jpg", topic="artroute.intake", partition=2,
                                 offset=41)
    back = DeadLetter.model_validate_json(dl.model_dump_json())
    assert back.original_bytes() == value and back.original_json == json.loads(value)
    assert (back.error_kind, back.stage, back.source_partition, back.source_offset, back.original_key) == (
        "invalid_record", "parse", 2, 41, "artworks/x.jpg")


def test_dead_letter_for_binary_and_for_a_decode_failure():
    proto = b"\x12\x05\x0a\x03ab\xff"
    dl = DeadLetter.from_message(proto, error_kind="bad_protobuf", message="truncated", stage="parse",
                                 failed_at=NOW)
    assert dl.original_json is None and dl.original_bytes() == proto
    value = to_s3_event_json("artworks", "a.jpg", 10, "e1")
    event = parse_intake(value).events[0]
    dl = DeadLetter.from_message(value, error_kind="corrupt", message="broken data stream", stage="decode",
                                 failed_at=NOW, event=event)
    assert (dl.bucket, dl.key, dl.etag) == ("artworks", "a.jpg", "e1")
    with pytest.raises(ValueError):
        DeadLetter.from_message(value, error_kind="x", message="y", stage="somewhere", failed_at=NOW)


# --- committed schemas -----------------------------------------------------------------------------

def test_committed_schemas_match_the_models():
    rendered = render_schemas()
    assert set(rendered) == {"routing-decision.schema.json", "dead-letter.schema.json"}
    for name, text in rendered.items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"{path} missing: run streams.worker.schemas.write_schemas()"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run streams.worker.schemas.write_schemas()"
    decision = json.loads(rendered["routing-decision.schema.json"])
    assert {"decision_id", "department", "top3", "needs_review"} <= set(decision["required"])
