"""Ingest into a real database (SQLite and PostgreSQL): idempotence, history and "current", dead letters,
tolerance of message evolution, the audit sample."""
from __future__ import annotations

import json
import math
from datetime import timedelta

from streams.ledger.ingest import Ingestor
from streams.ledger.messages import Rejected, in_sample, parse
from streams.ledger.schemas import SearchQuery
from tests.ledger.helpers import T0, dead_letter, decision, items


def test_the_same_messages_twice_are_stored_once(ledger):
    batch = items(*[decision(f"a/{i}.jpg", top=i % 4, confidence=0.5 + 0.1 * (i % 5)) for i in range(30)])
    first = ledger.ingestor.ingest(batch)
    assert (first.decisions, first.duplicate_decisions, first.objects_created) == (30, 0, 30)
    again = ledger.ingestor.ingest(batch + batch[:5])   # a redelivery, and the review copies
    assert (again.decisions, again.duplicate_decisions) == (0, 35)
    c = ledger.counts()
    assert (c.objects, c.decisions, c.decided) == (30, 30, 30)
    assert c.in_review == sum(1 for i in range(30) if 0.5 + 0.1 * (i % 5) < 0.75)


def test_a_newer_model_version_joins_the_history_and_becomes_current(ledger):
    old = decision("b/1.jpg", top=0, version="1", decided_at=T0 + timedelta(minutes=1))
    new = decision("b/1.jpg", top=2, version="2", confidence=0.6, decided_at=T0 + timedelta(minutes=5))
    ledger.ingestor.ingest(items(new))
    ledger.ingestor.ingest(items(old))                  # arrives late: history only
    h = ledger.history(bucket="artworks", key="b/1.jpg")
    assert [d.model_version for d in h.decisions] == ["1", "2"]
    assert (h.object.model_version, h.object.department, h.object.status) == ("2", "European Paintings", "pending")
    assert ledger.counts().decisions == 2 and ledger.counts().objects == 1


def test_dead_letters_dedupe_and_take_part_in_current(ledger):
    dl = dead_letter("c/bad.jpg", offset=7)
    assert ledger.ingestor.ingest(items(dl, dl)).dead_letters == 1
    assert ledger.ingestor.ingest(items(dl)).duplicate_dead_letters == 1
    orphan = dead_letter(None, kind="bad_event", offset=8)   # a malformed event names no object
    ledger.ingestor.ingest(items(orphan))
    c = ledger.counts()
    assert (c.objects, c.dead_letters, c.dead_letter_messages) == (1, 1, 2)
    # The file is fixed and decided later: the object is decided, the dead letter stays in its history.
    ledger.ingestor.ingest(items(decision("c/bad.jpg", decided_at=T0 + timedelta(minutes=9))))
    h = ledger.history(bucket="artworks", key="c/bad.jpg")
    assert h.object.status == "auto" and len(h.dead_letters) == 1
    page = ledger.dead_letters()
    assert {d.key: d.redecided_at is not None for d in page.items} == {"c/bad.jpg": True, None: False}


def test_evolved_messages_are_read_and_bad_ones_rejected(ledger):
    d = json.loads(decision("d/1.jpg", confidence=0.97).model_dump_json())
    d.update(schema_version=2, needs_review=True, review_reason="unfamiliar",
             prediction_set=["Egyptian Art", "Asian Art"], unfamiliarity=0.93)
    dl = json.loads(dead_letter("d/2.jpg").model_dump_json())
    for f in ("original_b64", "original_json"):     # a dead letter that references its original instead
        dl.pop(f)
    dl.update(original_ref={"topic": "artroute.intake", "partition": 0, "offset": 1, "sha256": "ab"})
    parsed = [parse(json.dumps(d).encode(), "decision"), parse(json.dumps(dl).encode(), "dead_letter")]
    assert ledger.ingestor.ingest(parsed).decisions == 1
    [item] = ledger.queue()
    assert item.reason == "unfamiliar" and item.decision["prediction_set"] == ["Egyptian Art", "Asian Art"]
    assert ledger.counts().dead_letters == 1
    assert isinstance(parse(b"not json", "decision"), Rejected)
    assert isinstance(parse(b'{"decision_id": "x"}', "decision"), Rejected)
    assert parse(b"[" * 5000, "decision") == Rejected("not_json")
    big = json.loads(dead_letter("d/3.jpg").model_dump_json())
    big["original_b64"] = "A" * 200_000
    stored = parse(json.dumps(big).encode(), "dead_letter")
    assert "original_b64" not in json.loads(stored.text) and json.loads(stored.text)["ledger_stripped"]


def test_search_filters_and_pages(ledger):
    ledger.ingestor.ingest(items(*[decision(f"s/{i:02d}.jpg", top=i % 2, confidence=0.9 if i % 3 else 0.5,
                                            event_time=T0 + timedelta(hours=i)) for i in range(20)]))
    assert ledger.search(SearchQuery(key="s/03.jpg")).total == 1
    assert ledger.search(SearchQuery(prefix="s/1")).total == 10
    assert ledger.search(SearchQuery(prefix="s/%")).total == 0          # LIKE wildcards are literal
    asian = ledger.search(SearchQuery(department="Asian Art", status="pending"))
    assert asian.total == sum(1 for i in range(20) if i % 2 and not i % 3)
    window = ledger.search(SearchQuery(since=T0 + timedelta(hours=5), until=T0 + timedelta(hours=8)))
    assert sorted(o.key for o in window.items) == ["s/05.jpg", "s/06.jpg", "s/07.jpg"]
    seen, cursor = [], None
    while True:
        page = ledger.search(SearchQuery(limit=7, cursor=cursor))
        seen += [o.key for o in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 20 and page.total == 20


def test_queue_is_oldest_first_and_filters(ledger):
    ledger.ingestor.ingest(items(*[decision(f"q/{i}.jpg", top=i % 2, confidence=0.5, version=str(1 + i % 2),
                                            event_time=T0 - timedelta(minutes=i)) for i in range(6)]))
    assert [i.key for i in ledger.queue(limit=3)] == ["q/5.jpg", "q/4.jpg", "q/3.jpg"]
    assert {i.key for i in ledger.queue(department="Asian Art")} == {"q/1.jpg", "q/3.jpg", "q/5.jpg"}
    assert {i.model_version for i in ledger.queue(model_version="1")} == {"1"}
    assert ledger.queue(reason="small_margin") == []
    first = ledger.queue(limit=1)[0]
    assert ledger.queue(limit=1, exclude=[first.object_id])[0].key == "q/4.jpg"


def test_audit_sample_picks_the_configured_share(ledger):
    """Binomial bound: at rate p over n auto-routed decisions the sampled count stays within 5 sigma."""
    n, rate = 4000, 0.05
    ingestor = Ingestor(ledger.engine, rate)
    batch = items(*[decision(f"audit/{i:05d}.jpg", confidence=0.95) for i in range(n)])
    ingestor.ingest(batch[:2000])
    ingestor.ingest(batch[2000:])
    c = ledger.counts()
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(c.audit - n * rate) < 5 * sigma, c.audit
    assert c.audit == c.pending and c.in_review == 0
    # Reproducible: the same ids give the same sample, whatever the order they come in.
    picked = {i.msg.decision_id for i in batch if in_sample(i.msg.decision_id, rate)}
    assert len(picked) == c.audit
    assert {q.decision_id for q in ledger.queue(limit=n, reason="audit")} == picked
    # A much larger id set, no database: the share converges.
    ids = [f"id-{i}" for i in range(200_000)]
    share = sum(in_sample(i, 0.02) for i in ids) / len(ids)
    assert abs(share - 0.02) < 5 * math.sqrt(0.02 * 0.98 / len(ids))
