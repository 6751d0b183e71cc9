"""The demo's curator console: `python -m streams console` beside the worker and the ledger, on the same
ledger database, with one demo account (an admin, a fresh random password each run, printed), and the
check that one can log in with it."""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import httpx
from pydantic import BaseModel

from streams.console.users import UserStore
from streams.orchestration.harness import ConsoleProcess, wait_http_ok
from streams.stack.processes import free_port, port_is_free
from streams.worker.settings import Settings

DEMO_USER = "demo"


class ConsoleLogin(BaseModel):
    url: str
    user: str
    password: str


def console_env(run_dir: Path, settings: Settings) -> tuple[dict[str, str], ConsoleLogin]:
    """The console's port (8400 when free), a users file with the demo account, a session key."""
    port = settings.console_port if port_is_free(settings.console_port) else free_port()
    users, password = run_dir / "console-users.json", secrets.token_urlsafe(9)
    UserStore(users).add(DEMO_USER, "admin", password)
    env = {"ARTROUTE_CONSOLE_PORT": str(port), "ARTROUTE_CONSOLE_HOST": "127.0.0.1",
           "ARTROUTE_CONSOLE_USERS_FILE": str(users), "ARTROUTE_CONSOLE_SECRET_KEY": secrets.token_urlsafe(32)}
    return env, ConsoleLogin(url=f"http://127.0.0.1:{port}", user=DEMO_USER, password=password)


def session(login: ConsoleLogin, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client logged in through the console's login form (RuntimeError when the login fails)."""
    http = httpx.Client(base_url=login.url, timeout=timeout)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    r = http.post("/login", data={"username": login.user, "password": login.password, "csrf_token": token})
    if r.status_code != 303 or http.get("/review").status_code != 200:
        http.close()
        raise RuntimeError(f"{login.user} cannot log in to the console at {login.url} ({r.status_code})")
    return http


def check_console(proc: ConsoleProcess, login: ConsoleLogin, timeout: float = 60.0) -> None:
    """The console answers /healthz and the demo account logs in (RuntimeError otherwise)."""
    wait_http_ok(login.url + "/healthz", proc.proc, timeout)
    session(login).close()


def print_login(login: ConsoleLogin) -> None:
    print(f"curator console: {login.url}  (log in as {login.user} / {login.password}, an admin)", flush=True)
