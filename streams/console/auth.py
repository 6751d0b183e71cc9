"""Who may do what in the console: sessions, CSRF tokens, roles, the login rate limit.

* Sessions are Starlette's signed cookie (itsdangerous; HttpOnly, SameSite=Lax, Secure behind https)
  holding the user name, role, how they logged in, when, and the CSRF token. A login replaces the whole
  session (no fixation); a login older than ARTROUTE_CONSOLE_SESSION_HOURS is over. A local user removed
  from the users file, or whose role changed, is seen at the next request.
* Every POST/PUT/PATCH/DELETE must carry the session's CSRF token, in the `X-CSRF-Token` header (the
  page's JavaScript) or the `csrf_token` form field (plain forms); otherwise 403 (`CSRFMiddleware`).
* Pages need a login: without one, HTML pages redirect to /login and /api, /image answer 401.
  Curators record verdicts; admins also export and re-publish (`require_admin`).
* Failed logins are limited per (user name, address) and per address (`LoginLimiter`).
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from urllib.parse import parse_qs, quote

from fastapi import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.console.users import ROLES, User, UserStore

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
CSRF_HEADER, CSRF_FIELD = "x-csrf-token", "csrf_token"
MAX_FORM_BYTES = 1 << 20
API_PREFIXES = ("/api/", "/image/")


class NotLoggedIn(Exception):
    """No (valid) session: pages redirect to the login, API and images answer 401."""


class Forbidden(Exception):
    """Logged in, but the role does not allow it (403)."""


def csrf_token(session: dict) -> str:
    """The session's CSRF token (made on first use, also for the anonymous login page)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def login(request: Request, user: User) -> None:
    """A fresh session for `user` (a new CSRF token too)."""
    request.session.clear()
    request.session.update(user=user.name, role=user.role, via=user.via, login_at=time.time(),
                           csrf=secrets.token_urlsafe(32))


def session_user(request: Request) -> User | None:
    s, app = request.session, request.app.state
    name, role, via = s.get("user"), s.get("role"), s.get("via", "local")
    if not name or role not in ROLES:
        return None
    if time.time() - float(s.get("login_at", 0)) > app.settings.console_session_hours * 3600:
        request.session.clear()
        return None
    if via == "local":
        current = app.users.get(name)
        if current is None:
            request.session.clear()
            return None
        role = current.role
    return User(name, role, via)


def require_user(request: Request) -> User:
    user = session_user(request)
    if user is None:
        raise NotLoggedIn()
    request.state.user = user
    return user


def require_admin(request: Request) -> User:
    user = require_user(request)
    if not user.is_admin:
        raise Forbidden("admins only")
    return user


def wants_json(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def login_redirect_target(path: str, query: str) -> str:
    return "/login?next=" + quote(path + (f"?{query}" if query else ""), safe="")


def safe_next(target: str | None) -> str:
    """Only local paths: '/x', never '//host' or 'https://host' (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/review"
    return target


class CSRFMiddleware:
    """Refuses unsafe methods without the session's token (header or urlencoded form field): 403."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
            await self.app(scope, receive, send)
            return
        expected = scope.get("session", {}).get("csrf")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(CSRF_HEADER)
        body = b""
        if given is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body, complete = await _read_body(receive)
            if not complete:
                await PlainTextResponse("request body too large", 413)(scope, receive, send)
                return
            given = (parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD) or [None])[0]
            receive = _replay(body)
        if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
            response = (JSONResponse({"detail": "missing or wrong CSRF token"}, 403) if wants_json(scope["path"])
                        else PlainTextResponse("403: missing or wrong CSRF token (reload the page)", 403))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), True


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}
    return receive


class LoginLimiter:
    """At most `attempts` failures per (name, address) and 10x that per address within `window_s`; then
    login is refused (even with the right password) until the oldest failure leaves the window."""

    def __init__(self, attempts: int, window_s: float):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _keys(self, name: str, address: str) -> list[tuple[tuple, int]]:
        return [(("user", name.lower(), address), self.attempts), (("address", address), self.attempts * 10)]

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until a login may be tried again (0: now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key, limit in self._keys(name, address):
                q = self._failures.get(key)
                while q and now - q[0] > self.window_s:
                    q.popleft()
                if q and len(q) >= limit:
                    wait = max(wait, self.window_s - (now - q[0]))
        return wait

    def failed(self, name: str, address: str) -> None:
        with self._lock:
            for key, _ in self._keys(name, address):
                self._failures.setdefault(key, deque()).append(time.monotonic())

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._failures.pop(("user", name.lower(), address), None)


def check_login(users: UserStore, limiter: LoginLimiter, name: str, password: str, address: str) -> User | None:
    user = users.verify(name, password)
    if user is None:
        limiter.failed(name, address)
    else:
        limiter.succeeded(name, address)
    return user
