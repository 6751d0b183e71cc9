"""The ledger's HTTP/JSON API (the FastAPI app, in process) over a real database."""
from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from streams.contract.curation import CURATED_PATH, CuratedPage, Verdict
from streams.ledger.api import create_app
from streams.ledger.service import Ledger
from tests.ledger.helpers import decision, items


@pytest.fixture
def client(ledger):
    ledger.ingestor.ingest(items(*[decision(f"api/{i}.jpg", top=i % 4, confidence=0.5) for i in range(6)]))
    with TestClient(create_app(ledger)) as c:
        yield c


def test_review_flow_over_http(client):
    queue = client.get("/api/v1/queue", params={"limit": 3}).json()
    assert [q["key"] for q in queue] == ["api/0.jpg", "api/1.jpg", "api/2.jpg"]
    r = client.post("/api/v1/verdicts", json={"decision_id": queue[0]["decision_id"], "kind": "correct",
                                              "department": "Asian Art", "curator": "amy"})
    assert r.status_code == 201
    v = Verdict.model_validate(r.json())
    assert (v.kind, v.department, v.curator) == ("correct", "Asian Art", "amy")
    r = client.post("/api/v1/verdicts/bulk-confirm", json={"decision_ids": [q["decision_id"] for q in queue[1:]],
                                                           "curator": "amy"})
    assert r.status_code == 201 and len(r.json()) == 2
    r = client.post(f"/api/v1/verdicts/{v.verdict_id}/retract", json={"curator": "amy"})
    assert r.status_code == 201 and r.json()["kind"] == "retract"
    counts = client.get("/api/v1/counts").json()
    assert (counts["reviewed"], counts["pending"], counts["verdicts"]) == (2, 4, 4)
    page = client.get("/api/v1/objects", params={"status": "reviewed"}).json()
    assert page["total"] == 2
    oid = page["items"][0]["id"]
    hist = client.get(f"/api/v1/objects/{oid}").json()
    assert len(hist["decisions"]) == 1 and hist["verdicts"][0]["curator"] == "amy"
    stats = client.get("/api/v1/stats").json()
    assert stats["models"][0]["with_verdict"] == 2
    assert client.get("/api/v1/confusion", params={"model_name": "artroute", "model_version": "1"}).json()
    assert {d["label"] for d in client.get("/api/v1/departments", params={"model_name": "artroute"}).json()} >= \
        {"Egyptian Art", "Asian Art"}
    curated = CuratedPage.model_validate_json(client.get(CURATED_PATH).content)
    assert len(curated.items) == 2
    export = client.get("/api/v1/export", params={"format": "csv"})
    assert export.status_code == 200 and len(list(csv.DictReader(io.StringIO(export.text)))) == 6
    assert client.get("/api/v1/export", params={"format": "parquet"}).content[:4] == b"PAR1"
    metrics = client.get("/metrics").text
    assert 'artroute_ledger_coverage{model="artroute",version="1"} 0.0' in metrics
    assert "artroute_ledger_review_backlog_by_department" in metrics
    assert client.get("/healthz").json()["outbox_pending"] == 4


def test_errors_are_json_with_a_status(client):
    d = client.get("/api/v1/queue").json()[0]["decision_id"]
    assert client.post("/api/v1/verdicts", json={"decision_id": "nope", "kind": "confirm",
                                                 "curator": "amy"}).status_code == 404
    r = client.post("/api/v1/verdicts", json={"decision_id": d, "kind": "correct", "department": "Nowhere",
                                              "curator": "amy"})
    assert r.status_code == 422 and "no department of model" in r.json()["detail"]
    assert client.post("/api/v1/verdicts", json={"decision_id": d, "kind": "maybe", "curator": "amy"}).status_code == 422
    assert client.get("/api/v1/objects", params={"since": "yesterday"}).status_code == 422
    assert client.get("/api/v1/objects/999999").status_code == 404
    assert client.get("/api/v1/image", params={"bucket": "other", "key": "x.jpg", "etag": "e"}).status_code == 404
    # a dot-segment key is refused before any lookup (a normalising store could resolve it elsewhere)
    assert client.get("/api/v1/image", params={"bucket": "other", "key": "../x", "etag": "e"}).status_code == 422


def test_a_token_guards_every_api_route(ledger_settings, ledger):
    from pydantic import SecretStr

    guarded = Ledger(ledger.engine, ledger_settings.model_copy(update={"ledger_api_token": SecretStr("s3cret")}))
    with TestClient(create_app(guarded)) as c:
        assert c.get("/api/v1/queue").status_code == 401
        assert c.get("/api/v1/queue", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/v1/queue", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get(CURATED_PATH).status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
