"""The console's access rules, against the running console (`python -m streams console` on the real stack):
nothing without a session, no state change without the CSRF token, admin-only export and re-publish,
rate-limited logins, markup and SQL in keys and search terms rendered inert (asserted on the DOM, with
the Content-Security-Policy bypassed so that escaping alone has to hold), and no path-traversal key
fetches another bucket's object."""
from __future__ import annotations

import contextlib
import io
import re

import httpx
import pytest

from streams.console.app import create_app
from streams.ledger.service import Ledger
from streams.worker.store import make_client
from tests.console.conftest import PASSWORD, login
from tests.ledger.helpers import decision, items
from tests.worker_fixtures import jpeg

pytestmark = pytest.mark.stack
OPEN = {"/healthz", "/metrics", "/login", "/login/oidc", "/auth/callback"}
XSS_KEYS = ['incoming/xss/<img src=x onerror="window.__xss=1">', "incoming/xss/</script><script>window.__xss=2</script>",
            "incoming/xss/\"'><svg onload=window.__xss=3>"]
SQLI_KEY = "incoming/sqli/x' OR '1'='1"


@contextlib.asynccontextmanager
async def session(console, user: str | None, password: str = PASSWORD):
    """An HTTP client with the session of `user` (logged in through the login form), and its CSRF token."""
    async with httpx.AsyncClient(base_url=console.url, follow_redirects=False, timeout=30) as http:
        page = await http.get("/login")
        http.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        if user is not None:
            r = await http.post("/login", data={"username": user, "password": password, "csrf_token": http.csrf})
            assert r.status_code == 303, r.text
            http.csrf = re.search(r'name="csrf-token" content="([^"]+)"', (await http.get("/review")).text).group(1)
        yield http


@pytest.fixture(scope="module")
async def queued(console) -> list:
    """Two objects of this module's own in the review queue (the audit rate is 1: every decision waits)."""
    return await console.seed({f"incoming/security/scan-{i}": jpeg(i, seed=5000 + i, size=(160, 120)) for i in range(2)})


def _flat(routes) -> list:
    """Routes with included routers opened up (FastAPI >= 0.160 keeps an included router as one route)."""
    out = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        out += _flat(inner.routes) if inner is not None else [r]
    return out


def routes(console) -> list[tuple[str, str]]:
    """(method, path) of every route of the console app, path parameters filled in."""
    ledger = Ledger.open(console.settings, upgrade=False)
    try:
        app = create_app(console.settings, ledger)
        out = []
        for r in _flat(app.routes):
            for method in sorted(getattr(r, "methods", None) or []):
                if method != "HEAD":
                    out.append((method, re.sub(r"\{[^}]+\}", "1", r.path)))
        return out
    finally:
        ledger.close()


async def test_nothing_without_a_session(console):
    table = routes(console)
    pages = [p for m, p in table if m == "GET" and p not in OPEN and not p.startswith("/static")]
    posts = [p for m, p in table if m == "POST"]
    assert {"/review", "/grid", "/search", "/objects/1", "/dead-letters", "/model", "/export", "/image/1",
            "/api/queue", "/api/departments"} <= set(pages)
    assert {"/api/verdicts", "/api/verdicts/1/retract", "/grid", "/dead-letters/republish", "/login", "/logout"} <= set(posts)
    async with httpx.AsyncClient(base_url=console.url, follow_redirects=False) as anon:
        for path in pages:
            r = await anon.get(path, params={"etag": "e", "model_name": "artroute"})
            if path.startswith(("/api/", "/image/")):
                assert r.status_code == 401, path
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        for path in posts:  # a state change without a session has no CSRF token either
            assert (await anon.post(path, json={})).status_code == 403, path
    # With an anonymous session's CSRF token (the login page's) still nothing but the login itself.
    async with session(console, None) as http:
        for path in set(posts) - {"/login", "/logout"}:
            r = await http.post(path, headers={"X-CSRF-Token": http.csrf}, json={})
            assert r.status_code in (303, 401), (path, r.status_code)
        assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_a_state_change_needs_the_csrf_token(console, queued):
    ledger = console.ledger()
    try:
        obj = ledger.object(bucket=console.settings.bucket, key=queued[0].key)
    finally:
        ledger.close()
    async with session(console, "ivy") as http:
        body = {"decision_id": obj.decision_id, "kind": "confirm"}
        assert (await http.post("/api/verdicts", json=body)).status_code == 403
        assert (await http.post("/api/verdicts", json=body, headers={"X-CSRF-Token": "forged"})).status_code == 403
        assert (await http.post("/grid", data={"department": obj.department, "item": obj.decision_id})).status_code == 403
        assert (await http.post("/logout")).status_code == 403
        assert (await http.get("/review")).status_code == 200          # still logged in
        r = await http.post("/api/verdicts", json={**body, "kind": "not_routable"}, headers={"X-CSRF-Token": http.csrf})
        assert r.status_code == 201 and r.json()["curator"] == "ivy"
        retract = await http.post(f"/api/verdicts/{r.json()['verdict_id']}/retract", headers={"X-CSRF-Token": http.csrf})
        assert retract.status_code == 201 and retract.json()["kind"] == "retract"
        metrics = (await http.get("/metrics")).text     # open, for Prometheus: latency and verdicts per minute
        assert re.search(r'artroute_console_verdicts_total\{kind="not_routable"\} [1-9]', metrics)
        assert re.search(r"artroute_console_verdicts_last_minute [1-9]", metrics)
        assert re.search(r'artroute_console_request_seconds_count\{method="POST",route="/api/verdicts"\} [1-9]', metrics)
    async with httpx.AsyncClient(base_url=console.url) as anon:  # the login form needs its token too
        r = await anon.post("/login", data={"username": "ivy", "password": PASSWORD})
        assert r.status_code == 403


async def test_a_curator_cannot_export_or_republish(console):
    async with session(console, "amy") as curator, session(console, "root") as admin:
        assert (await curator.get("/export?format=csv")).status_code == 403
        assert (await curator.get("/export?format=parquet")).status_code == 403
        r = await curator.post("/dead-letters/republish", data={"object_id": "1", "csrf_token": curator.csrf})
        assert r.status_code == 403
        assert "Re-publish" not in (await curator.get("/dead-letters")).text
        assert "/export?format=csv" not in (await curator.get("/search")).text
        r = await admin.get("/export?format=csv")
        assert r.status_code == 200 and r.text.startswith("bucket,key,etag")


async def test_failed_logins_are_rate_limited(console):
    limit = 3  # ARTROUTE_CONSOLE_LOGIN_ATTEMPTS of the test console
    async with httpx.AsyncClient(base_url=console.url) as http:
        token = re.search(r'name="csrf_token" value="([^"]+)"', (await http.get("/login")).text).group(1)

        async def attempt(user: str, password: str) -> httpx.Response:
            return await http.post("/login", data={"username": user, "password": password, "csrf_token": token},
                                   follow_redirects=False)
        for _ in range(limit):
            assert (await attempt("eve", "wrong password")).status_code == 401
        refused = await attempt("eve", PASSWORD)              # the right password, but too many failures
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many failed logins" in refused.text
        assert (await attempt("ivy", PASSWORD)).status_code == 303   # others are not locked out


async def test_markup_and_sql_in_keys_and_search_terms_are_inert(console, page):
    await console.seed({k: jpeg(3, seed=4000 + i, size=(120, 90)) for i, k in enumerate([*XSS_KEYS, SQLI_KEY])})
    await login(page, console.url, "amy", next_path="/search")
    for term in ["incoming/xss/", *XSS_KEYS]:
        await page.goto(f"{console.url}/search?" + httpx.QueryParams({"key": term, "match": "prefix"}).__str__())
        links = await page.eval_on_selector_all("#results tbody td:first-child a", "els => els.map(e => e.textContent)")
        assert links and set(links) <= set(XSS_KEYS)
        assert await page.text_content("#searched") == term
        await _assert_inert(page)
    ledger = console.ledger()
    try:
        ids = {k: ledger.object(bucket=console.settings.bucket, key=k).id for k in XSS_KEYS}
    finally:
        ledger.close()
    for key, oid in ids.items():
        await page.goto(f"{console.url}/objects/{oid}")
        assert await page.text_content("#object-key") == key
        await _assert_inert(page)
    # The review page: skip until each markup key has been on screen (rendered by the page's script).
    await page.goto(f"{console.url}/review")
    seen: set[str] = set()
    for _ in range(120):
        await page.wait_for_function("document.body.dataset.item")
        key = await page.text_content("#key")
        seen.add(key)
        if set(XSS_KEYS) <= seen:
            break
        await page.keyboard.press("s")
        await page.wait_for_function("k => document.getElementById('key').textContent !== k || "
                                     "!window.artroute.state.current", arg=key)
    assert set(XSS_KEYS) <= seen
    await _assert_inert(page)
    # SQL in search terms is a search term: nothing matches, nothing breaks; the key itself is found exactly.
    for field in ("key", "department", "model_version"):
        await page.goto(f"{console.url}/search?" + str(httpx.QueryParams({field: "' OR 1=1 --", "match": "exact"})))
        assert (await page.text_content("#total")).startswith("0 objects")
    await page.goto(f"{console.url}/search?" + str(httpx.QueryParams({"key": SQLI_KEY, "match": "exact"})))
    assert await page.eval_on_selector_all("#results tbody td:first-child a", "els => els.map(e => e.textContent)") \
        == [SQLI_KEY]


async def _assert_inert(page) -> None:
    assert await page.evaluate("window.__xss") is None
    assert await page.eval_on_selector_all("img[src='x'], svg[onload], [onerror], [onload]", "els => els.length") == 0
    assert await page.eval_on_selector_all("script", "els => els.filter(s => s.src === '' && s.type !== "
                                           "'application/json').length") == 0


async def test_a_path_traversal_key_cannot_fetch_another_buckets_object(console):
    s3 = make_client(console.settings)
    if not s3.bucket_exists("private"):
        s3.make_bucket("private")
    secret = jpeg(1, seed=999)
    etag = s3.put_object("private", "secret.jpg", io.BytesIO(secret), len(secret)).etag.strip('"')
    ledger = console.ledger()
    try:  # a decision on a key that walks out of the bucket, naming the secret's etag
        bad_key = "incoming/../../private/secret.jpg"
        ledger.ingestor.ingest(items(decision(bad_key, etag=etag)))
        bad = ledger.object(bucket=console.settings.bucket, key=bad_key)
    finally:
        ledger.close()
    async with session(console, "amy") as http:
        for url in [f"/image/{bad.id}?etag={etag}", f"/image/{bad.id}?etag={etag}&size=thumb",
                    "/image/..%2F..%2Fprivate%2Fsecret.jpg?etag=" + etag, "/image/%2e%2e/private/secret.jpg",
                    f"/image/{bad.id}/../../private/secret.jpg?etag={etag}"]:
            r = await http.get(url)
            assert r.status_code in (404, 422), (url, r.status_code)
            assert secret not in r.content
        assert (await http.get(f"/image/{bad.id}?etag={etag}")).json()["detail"].startswith("object key")
    # The ledger's own image route refuses such a key too, and a bucket it never decided.
    from streams.ledger.api import create_app as ledger_api

    lg = Ledger.open(console.settings, upgrade=False)
    try:
        api = httpx.AsyncClient(transport=httpx.ASGITransport(ledger_api(lg, s3)), base_url="http://ledger")
        async with api:
            r = await api.get("/api/v1/image", params={"bucket": console.settings.bucket, "key": bad_key, "etag": etag})
            assert r.status_code == 422
            r = await api.get("/api/v1/image", params={"bucket": "private", "key": "secret.jpg", "etag": etag})
            assert r.status_code == 404 and secret not in r.content
    finally:
        lg.close()
