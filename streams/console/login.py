"""Logging in and out: local accounts (form, argon2, rate-limited) and OIDC single sign-on."""
from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from streams.console.auth import check_login, login, safe_next, session_user
from streams.console.oidc import CALLBACK_PATH
from streams.console.views import render

router = APIRouter()


def _page(request: Request, next_: str, status: int = 200, error: str = "", name: str = "") -> Response:
    st = request.app.state
    return render(request, "login.html", status, next=next_, error=error, name=name,
                  local=st.settings.console_local_accounts, sso=st.oidc is not None)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if session_user(request) is not None:
        return RedirectResponse(safe_next(next), 303)
    return _page(request, safe_next(next))


@router.post("/login")
def login_submit(request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
                 next: Annotated[str, Form()] = "/review") -> Response:
    st = request.app.state
    target = safe_next(next)
    if not st.settings.console_local_accounts:
        return _page(request, target, 403, "Local accounts are turned off: sign in with single sign-on.")
    address = request.client.host if request.client else "?"
    username = username.strip()
    wait = st.limiter.retry_after(username, address)
    if wait > 0:
        st.metrics.login_failures.labels("rate_limited").inc()
        response = _page(request, target, 429, f"Too many failed logins: try again in {math.ceil(wait)} s.", username)
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    user = check_login(st.users, st.limiter, username, password, address)
    if user is None:
        st.metrics.login_failures.labels("wrong_password").inc()
        return _page(request, target, 401, "Wrong user name or password.", username)
    login(request, user)
    return RedirectResponse(target, 303)


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", 303)


@router.get("/login/oidc")
async def oidc_start(request: Request, next: str | None = None) -> Response:
    st = request.app.state
    if st.oauth is None:
        return _page(request, safe_next(next), 404, "Single sign-on is not configured.")
    request.session["oidc_next"] = safe_next(next)
    base = st.settings.console_public_url.rstrip("/") or str(request.base_url).rstrip("/")
    try:
        return await st.oauth.authorize_redirect(request, base + CALLBACK_PATH)
    except Exception as e:  # noqa: BLE001 - the provider's discovery document is unreachable or bad
        return _page(request, safe_next(next), 502, f"The sign-on provider does not answer: {type(e).__name__}.")


@router.get(CALLBACK_PATH)
async def oidc_callback(request: Request) -> Response:
    import httpx
    from authlib.integrations.base_client import OAuthError
    from joserfc.errors import JoseError

    st = request.app.state
    target = safe_next(request.session.get("oidc_next"))
    if st.oauth is None:
        return _page(request, target, 404, "Single sign-on is not configured.")
    try:
        token = await st.oauth.authorize_access_token(request)
    except OAuthError as e:           # state mismatch, the provider refused the code
        st.metrics.login_failures.labels("oidc").inc()
        return _page(request, target, 400, f"Single sign-on failed: {e.error}.")
    except JoseError as e:            # the ID token: bad signature, wrong issuer/audience/nonce, expired
        st.metrics.login_failures.labels("oidc").inc()
        return _page(request, target, 400, f"Single sign-on failed: the ID token is not valid ({e.error}).")
    except httpx.HTTPError as e:      # the token endpoint or the keys do not answer
        return _page(request, target, 502, f"The sign-on provider does not answer: {type(e).__name__}.")
    user = st.oidc.user(token.get("userinfo") or {})
    if user is None:
        st.metrics.login_failures.labels("oidc_no_role").inc()
        return _page(request, target, 403, "Your account has no console role: ask for the curator or admin group.")
    login(request, user)
    return RedirectResponse(target, 303)
