"""Single sign-on through OpenID Connect, end to end: a small but real provider (discovery document,
authorize, token endpoint checking the client secret and the PKCE verifier, JWKS, RS256 ID tokens) served
by uvicorn on a loopback port, the console app in-process on a real SQLite ledger, its authlib client
talking HTTP to the provider. Proves: the group claim decides the role (admin, curator, none), the ID
token's nonce and signature are checked, a forged state is refused, the user name lands in the session."""
from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import uvicorn
from authlib.jose import JsonWebKey, jwt
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from streams.console.app import create_app
from streams.ledger.service import Ledger
from streams.stack.processes import free_port
from streams.worker.settings import Settings

CLIENT_ID, CLIENT_SECRET = "artroute-console", "oidc-test-client-secret"


class Provider:
    def __init__(self):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "k1"})
        self.claims: dict = {}          # who logs in next
        self.codes: dict[str, dict] = {}
        self.sign_with = self.key       # a test swaps in another key to forge tokens
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict:
            return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"]}

        @app.get("/jwks")
        def jwks() -> dict:
            return {"keys": [self.key.as_dict(is_private=False)]}

        @app.get("/authorize")
        def authorize(client_id: str, redirect_uri: str, state: str, nonce: str, code_challenge: str,
                      code_challenge_method: str) -> RedirectResponse:
            assert client_id == CLIENT_ID and code_challenge_method == "S256"
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": nonce, "challenge": code_challenge, "redirect_uri": redirect_uri,
                                "claims": dict(self.claims)}
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", 302)

        @app.post("/token")
        def token(request: Request, code: str = Form(), code_verifier: str = Form(), redirect_uri: str = Form(),
                  grant_type: str = Form()) -> dict:
            auth = request.headers.get("authorization", "")
            user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
            if (user, password) != (CLIENT_ID, CLIENT_SECRET):
                raise HTTPException(401, "bad client")
            grant = self.codes.pop(code, None)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
            if grant is None or grant["challenge"] != challenge or grant["redirect_uri"] != redirect_uri:
                raise HTTPException(400, "invalid_grant")
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": grant["nonce"],
                      "sub": grant["claims"].get("preferred_username", "x"), **grant["claims"]}
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.sign_with).decode()
            return {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                    "id_token": id_token}

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))

    def __enter__(self) -> "Provider":
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def provider():
    with Provider() as p:
        yield p


@pytest.fixture
async def console(provider, tmp_path):
    settings = Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", console_users_file=tmp_path / "users.json",
                        console_secret_key="oidc-test-session-key", console_oidc_issuer=provider.issuer,
                        console_oidc_client_id=CLIENT_ID, console_oidc_client_secret=CLIENT_SECRET)
    ledger = Ledger.open(settings)
    app = create_app(settings, ledger)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://console") as client:
        yield client
    ledger.close()


async def sign_in(console: httpx.AsyncClient, provider: Provider, claims: dict, next_path: str = "/model",
                  state: str | None = None) -> httpx.Response:
    """The browser's part: console -> provider -> console callback; returns the callback's response."""
    provider.claims = claims
    r = await console.get("/login/oidc", params={"next": next_path})
    assert r.status_code == 302 and r.headers["location"].startswith(provider.issuer + "/authorize?")
    async with httpx.AsyncClient() as browser:
        back = await browser.get(r.headers["location"])
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    assert callback.netloc == "console" and callback.path == "/auth/callback"
    query = parse_qs(callback.query)
    if state is not None:
        query["state"] = [state]
    return await console.get("/auth/callback", params={k: v[0] for k, v in query.items()})


async def test_a_curator_signs_in_and_records_under_the_sso_name(console, provider):
    r = await sign_in(console, provider, {"preferred_username": "olga", "groups": ["staff", "artroute-curator"]})
    assert r.status_code == 303 and r.headers["location"] == "/model"
    page = await console.get("/model")
    assert page.status_code == 200 and ">olga<" in page.text
    assert (await console.get("/export?format=csv")).status_code == 403       # a curator, not an admin


async def test_the_admin_group_makes_an_admin(console, provider):
    r = await sign_in(console, provider, {"preferred_username": "root.sso", "groups": ["artroute-admin"]})
    assert r.status_code == 303
    assert (await console.get("/export?format=csv")).status_code == 200


async def test_no_console_group_no_entry(console, provider):
    r = await sign_in(console, provider, {"preferred_username": "visitor", "groups": ["staff"]})
    assert r.status_code == 403 and "no console role" in r.text
    assert (await console.get("/review")).status_code == 303                   # still not logged in


async def test_a_forged_state_or_a_token_signed_by_another_key_is_refused(console, provider):
    r = await sign_in(console, provider, {"preferred_username": "mallory", "groups": ["artroute-admin"]},
                      state="forged-state")
    assert r.status_code == 400 and "Single sign-on failed" in r.text
    provider.sign_with = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "k1"})
    try:
        r = await sign_in(console, provider, {"preferred_username": "mallory", "groups": ["artroute-admin"]})
    finally:
        provider.sign_with = provider.key
    assert r.status_code == 400 and "Single sign-on failed" in r.text
    assert (await console.get("/review")).status_code == 303
