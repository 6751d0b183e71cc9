"""The curator console: a FastAPI app with server-rendered Jinja2 pages and one small JavaScript file.

    app = create_app(Settings())        # the ledger at ARTROUTE_LEDGER_URL, photos from ARTROUTE_S3_*

It uses the ledger's Python API in-process (`streams.ledger.service.Ledger`, the same database as
`ledger run`): a verdict is one transaction with its outbox row, which `ledger run` publishes to the
verdicts topic; no second hop, no API token to hand around, and the review page's server time is one
indexed query. Pages: /review, /grid, /search, /objects/{id}, /dead-letters, /model; /login, /logout,
/login/oidc, /auth/callback; /image/{id} (photos); /api/... (the review page's JSON); /healthz and
/metrics (open, for probes and Prometheus); /static (CSS, JS). docs/console.md describes them.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.console import browse, deadletters, login, modelpage, review
from streams.console.auth import (CSRFMiddleware, Forbidden, LoginLimiter, NotLoggedIn, login_redirect_target,
                                  require_user, wants_json)
from streams.console.cache import Cached
from streams.console.metrics import ConsoleMetrics
from streams.console.oidc import OidcConfig, make_oauth
from streams.console.photos import Photos
from streams.console.users import UserStore
from streams.console.views import age, percent, render, when
from streams.contract.cli import UserError
from streams.ledger.errors import LedgerError
from streams.ledger.service import Ledger
from streams.worker.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "artroute_console"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class Timing:
    """Server time per request: the Server-Timing header (`app;dur=ms`), the latency histogram by route
    template, and the security headers on every response."""

    def __init__(self, app: ASGIApp, metrics: ConsoleMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={ms:.1f}".encode()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/") else "other")
            self.metrics.latency.labels(name, scope["method"]).observe(time.perf_counter() - t0)


PLACEHOLDER_KEYS = {"change-me", "changeme", "secret"}


def secret_key(settings: Settings) -> str:
    if settings.console_secret_key:
        key = settings.console_secret_key.get_secret_value()
        if key.strip().lower() in PLACEHOLDER_KEYS or len(key) < 16:
            raise UserError("ARTROUTE_CONSOLE_SECRET_KEY is a placeholder or shorter than 16 characters: anyone "
                            "could sign a session with it (make one: openssl rand -base64 48)")
        return key
    log.warning("ARTROUTE_CONSOLE_SECRET_KEY is not set: sessions are signed with a random key and end when "
                "the console restarts")
    return secrets.token_urlsafe(48)


def create_app(settings: Settings, ledger: Ledger | None = None, s3_client=None) -> FastAPI:
    """The console app. `ledger`: default `Ledger.open(settings)`; `s3_client`: a minio client for photos."""
    oidc = OidcConfig.from_settings(settings)   # a bad SSO configuration stops the start, with one line
    session_key = secret_key(settings)           # so does a placeholder session key
    ledger = ledger or Ledger.open(settings)
    metrics = ConsoleMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if app.state.publisher is not None:   # made by the first re-publish (deadletters.py)
            await app.state.publisher.stop()

    app = FastAPI(title="artroute console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    st = app.state
    st.settings, st.ledger, st.metrics = settings, ledger, metrics
    st.users = UserStore(settings.console_users_file)
    st.limiter = LoginLimiter(settings.console_login_attempts, settings.console_login_window_s)
    st.photos = Photos(ledger, s3_client)
    st.figures = Cached(settings.console_stats_ttl_s)
    st.oidc, st.oauth = oidc, make_oauth(oidc) if oidc else None
    st.publisher = None
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(when=when, percent=percent, age=age)
    st.templates = templates

    app.add_middleware(CSRFMiddleware)
    app.add_middleware(SessionMiddleware, secret_key=session_key, session_cookie=COOKIE,
                       max_age=int(settings.console_session_hours * 3600), same_site="lax",
                       https_only=settings.console_public_url.startswith("https://"))
    app.add_middleware(Timing, metrics=metrics)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (login, review, browse, deadletters, modelpage):
        app.include_router(module.router)

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _: NotLoggedIn) -> Response:
        if wants_json(request.url.path):
            return JSONResponse({"detail": "log in first"}, 401, headers={"WWW-Authenticate": "Session"})
        return RedirectResponse(login_redirect_target(request.url.path, request.url.query), 303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, e: Forbidden) -> Response:
        if wants_json(request.url.path):
            return JSONResponse({"detail": str(e)}, 403)
        return render(request, "error.html", 403, title="Not allowed", message=f"{e}: ask an admin.")

    @app.exception_handler(LedgerError)
    async def ledger_error(request: Request, e: LedgerError) -> Response:
        if wants_json(request.url.path) or request.method != "GET":
            return JSONResponse({"detail": str(e)}, e.status)
        return render(request, "error.html", e.status, title="Not found" if e.status == 404 else "Cannot do that",
                      message=str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        if wants_json(request.url.path) or e.status_code != 404:
            return JSONResponse({"detail": e.detail}, e.status_code, headers=getattr(e, "headers", None))
        return PlainTextResponse("404: no such page", 404)

    @app.get("/", dependencies=[Depends(require_user)])
    def home() -> RedirectResponse:
        return RedirectResponse("/review", 303)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with ledger.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any database failure means not ready
            return JSONResponse({"status": "not_ready", "problem": f"ledger database: {type(e).__name__}"}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    modelpage.warm(app)
    return app
