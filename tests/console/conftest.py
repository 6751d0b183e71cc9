"""The console on the real stack, shared by the console tests: a worker of its own (its own topics, so
the queue holds only what these tests upload), `ledger run --api` on a SQLite file (the embedded
default; audit rate 1, so every decision joins the review queue), `python -m streams console` with
three local accounts, and one headless Chromium (Debian's package, Playwright's async API)."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.console.users import UserStore
from streams.ledger.service import Ledger
from streams.orchestration.harness import ConsoleProcess, LedgerProcess, Upload, WorkerProcess, upload_all, wait_http_ok
from streams.stack.processes import StackError, free_port
from streams.stack.servers import create_topics
from streams.worker.settings import Settings
from tests.fault_fixtures import QUIET_TYPE, publish_events
from tests.worker_fixtures import own_topics

PASSWORD = "correct horse battery"
USERS = {"amy": "curator", "root": "admin", "eve": "curator", "ivy": "curator"}


@dataclass
class ConsoleStack:
    url: str
    settings: Settings            # the console's topics, bucket, ledger database
    work: Path
    processes: dict = field(default_factory=dict)

    def ledger(self) -> Ledger:
        return Ledger.open(self.settings, upgrade=False)

    async def seed(self, objects: dict[str, bytes], timeout: float = 180.0) -> list[Upload]:
        """Upload objects (quietly: the store's own events are ignored), publish their intake events on the
        console's own intake topic, and wait until the ledger holds an outcome for each."""
        ups = upload_all(self.settings, [Upload(k, v, QUIET_TYPE) for k, v in objects.items()])
        await publish_events(self.settings, self.settings.intake_topic, ups, content_type="image/jpeg")
        await self.settled([u.key for u in ups], timeout)
        return ups

    async def settled(self, keys: list[str], timeout: float = 180.0, check=None) -> None:
        ledger = self.ledger()
        try:
            deadline = time.monotonic() + timeout
            while True:
                done = await asyncio.to_thread(lambda: [_has(ledger, self.settings.bucket, k, check) for k in keys])
                if all(done):
                    return
                if time.monotonic() > deadline:
                    missing = [k for k, ok in zip(keys, done) if not ok]
                    raise AssertionError(f"{len(missing)} objects not in the ledger in time: {missing[:5]}")
                await asyncio.sleep(0.5)
        finally:
            ledger.close()


def _has(ledger: Ledger, bucket: str, key: str, check) -> bool:
    try:
        obj = ledger.object(bucket=bucket, key=key)
    except Exception:  # noqa: BLE001 - not ingested yet (or no schema yet)
        return False
    return check(obj) if check else True


@pytest.fixture(scope="session")
async def console(stack, stack_settings, worker_env, tmp_path_factory) -> ConsoleStack:
    name = f"console-{uuid.uuid4().hex[:6]}"
    settings, topics = await own_topics(name, stack_settings)
    verdicts = f"{name}.verdicts"
    await create_topics(stack_settings.kafka_brokers, {verdicts: 2})
    work = tmp_path_factory.mktemp("console")
    db = f"sqlite:///{work / 'ledger.db'}"
    users = UserStore(work / "users.json")
    for user, role in USERS.items():
        users.add(user, role, PASSWORD)
    port = free_port()
    common = {"ARTROUTE_STACK_FILE": str(stack.run_dir / "endpoints.json"), **topics,
              "ARTROUTE_VERDICTS_TOPIC": verdicts, "ARTROUTE_LEDGER_URL": db, "ARTROUTE_AUDIT_RATE": "1",
              "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4", "ARTROUTE_TRITON_URL": stack_settings.triton_url,
              "ARTROUTE_LOG_JSON": "false"}
    cs = ConsoleStack(url=f"http://127.0.0.1:{port}", work=work, settings=settings.model_copy(update={
        "ledger_url": db, "verdicts_topic": verdicts, "console_port": port, "console_users_file": work / "users.json"}))
    procs = cs.processes
    procs["worker"] = WorkerProcess({**worker_env, **topics, "ARTROUTE_METRICS_PORT": str(free_port())},
                                    log_path=work / "worker.log").start()
    procs["ledger"] = LedgerProcess({**common, "ARTROUTE_LEDGER_CONSUMER_GROUP": f"{name}-ledger",
                                     "ARTROUTE_LEDGER_API_PORT": str(free_port())}, log_path=work / "ledger.log").start()
    procs["console"] = ConsoleProcess({**common, "ARTROUTE_CONSOLE_PORT": str(port),
                                       "ARTROUTE_CONSOLE_USERS_FILE": str(work / "users.json"),
                                       "ARTROUTE_CONSOLE_SECRET_KEY": "console-test-secret-key",
                                       "ARTROUTE_CONSOLE_STATS_TTL_S": "0.5", "ARTROUTE_CONSOLE_LOGIN_ATTEMPTS": "3",
                                       "ARTROUTE_CONSOLE_LOGIN_WINDOW_S": "15"},
                                      log_path=work / "console.log").start()
    try:
        await asyncio.to_thread(wait_http_ok, cs.url + "/healthz", procs["console"].proc)
        yield cs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture(scope="session")
async def browser():
    from playwright.async_api import async_playwright

    from streams.orchestration.browser import launch

    try:
        from streams.orchestration.browser import chromium_path
        chromium_path()
    except StackError as e:
        pytest.skip(str(e))
    async with async_playwright() as pw:
        b = await launch(pw)
        yield b
        await b.close()


@pytest.fixture
async def page(browser):
    """A fresh browser context (no cookies) at laptop size. The console's Content-Security-Policy forbids
    eval, which Playwright's wait_for_function needs: bypass_csp lets the tests evaluate (and proves that
    what they check about markup being inert holds without the CSP's help)."""
    context = await browser.new_context(viewport={"width": 1366, "height": 800}, bypass_csp=True)
    pg = await context.new_page()
    yield pg
    await context.close()


async def login(page, url: str, user: str, password: str = PASSWORD, next_path: str = "/review") -> None:
    """Log in with the keyboard only: type the name, Tab, the password, Enter."""
    await page.goto(f"{url}{next_path}")
    await page.wait_for_selector("#username")
    await page.focus("#username")
    await page.keyboard.type(user)
    await page.keyboard.press("Tab")
    await page.keyboard.type(password)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**{next_path.split('?')[0]}*")
