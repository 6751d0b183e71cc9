"""Why an item is in review, as the review page shows it: the reason (low confidence, small margin,
unfamiliar, audit sample, or one the console does not know yet) and, when the decision carries one, the
prediction set; a decision without one (or with a malformed one) shows no set and breaks nothing. The
console app in-process (ASGI) on a real SQLite ledger, the decisions ingested as the worker publishes them."""
from __future__ import annotations

import json
import re

import httpx
import pytest

from streams.console.app import create_app
from streams.console.users import UserStore
from streams.ledger.messages import parse
from streams.ledger.service import Ledger
from streams.worker.settings import Settings
from tests.ledger.helpers import decision

PASSWORD = "reasons-test-password"


def message(key: str, confidence: float, extra: dict | None = None, **kw):
    doc = json.loads(decision(key, confidence=confidence, **kw).model_dump_json())
    return parse(json.dumps({**doc, **(extra or {})}).encode(), "decision")


@pytest.fixture
async def http(tmp_path):
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", console_users_file=tmp_path / "users.json",
                        console_secret_key="reasons-test-key", audit_rate=0.0)
    UserStore(settings.console_users_file).add("amy", "curator", PASSWORD)
    ledger = Ledger.open(settings)
    from datetime import timedelta

    from tests.ledger.helpers import T0
    at = lambda i: {"event_time": T0 + timedelta(minutes=i)}  # noqa: E731 - queue order = upload order
    ledger.ingestor.ingest([
        message("a/with-set", 0.5, {"prediction_set": ["Egyptian Art", "Asian Art"]}, **at(0)),
        message("b/with-scored-set", 0.5, {"prediction_set": [{"label": "Asian Art", "score": 0.4}]}, **at(1)),
        message("c/no-set", 0.5, **at(2)),
        message("d/malformed-set", 0.5, {"prediction_set": "Egyptian Art"}, **at(3)),
        message("e/small-margin", 0.8, min_margin=0.9, **at(4)),
    ])
    app = create_app(settings, ledger)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://console") as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = await client.post("/login", data={"username": "amy", "password": PASSWORD, "csrf_token": token})
        assert r.status_code == 303
        yield client
    ledger.close()


async def test_the_reason_and_the_prediction_set_when_there_is_one(http):
    items = {i["key"]: i for i in (await http.get("/api/queue", params={"limit": 10})).json()["items"]}
    assert set(items) == {"a/with-set", "b/with-scored-set", "c/no-set", "d/malformed-set", "e/small-margin"}
    assert items["a/with-set"]["prediction_set"] == ["Egyptian Art", "Asian Art"]
    assert items["b/with-scored-set"]["prediction_set"] == ["Asian Art"]
    assert items["c/no-set"]["prediction_set"] is None and items["d/malformed-set"]["prediction_set"] is None
    for key, item in items.items():
        reason = "small_margin" if key == "e/small-margin" else "low_confidence"
        assert item["reason"] == reason and item["reason_text"].startswith(reason.replace("_", " ").capitalize())
    # The first item is rendered by the server too: its set is shown; with no set the row stays hidden.
    html = (await http.get("/review")).text
    assert re.search(r'<dd id="prediction-set">Egyptian Art, Asian Art</dd>', html)
    assert re.search(r'<span id="reason-text">Low confidence', html)
    html = (await http.get("/review", params={"reason": "small_margin"})).text
    assert re.search(r'<span id="reason-text">Small margin', html) and '<dd id="prediction-set" hidden>' in html


async def test_an_unknown_reason_is_shown_as_it_is(http):
    from streams.console.views import reason_text

    assert reason_text("conformal_set_too_large") == "conformal_set_too_large"
    assert reason_text("unfamiliar").startswith("Unfamiliar photo") and reason_text("audit").startswith("Audit")
    assert reason_text(None) == ""
    html = (await http.get("/review", params={"reason": "no-such-reason"})).text
    assert "Nothing to review for these filters" in html


@pytest.mark.parametrize("key", ["change-me", "CHANGE-ME", "short"])
def test_a_placeholder_session_key_stops_the_start(tmp_path, key):
    from streams.contract.cli import UserError

    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", console_users_file=tmp_path / "users.json",
                        console_secret_key=key)
    ledger = Ledger.open(settings)
    try:
        with pytest.raises(UserError, match="ARTROUTE_CONSOLE_SECRET_KEY is a placeholder"):
            create_app(settings, ledger)
    finally:
        ledger.close()
