"""Benchmark the curator console at a realistic ledger size: review page server time, and the time from a
verdict key press to the next photo on screen in a real (headless Chromium) browser.

1. An embedded stack without Triton (SeaweedFS for the photos, tansu for the verdicts outbox to target),
   a ledger on SQLite (default; --ledger-url for PostgreSQL) filled to --rows objects the bulk way the
   ledger bench fills it (`ledger_bench.fill`: 30 % of them in the review queue);
2. --photos real JPEGs (1024x768) uploaded to S3 and decided through the ledger's own ingest as the
   oldest items in the queue, so the console serves and shows real photos from the store;
3. `python -m streams console` as a subprocess (its start-up computes the model page's figures in the
   background; the bench waits for them first);
4. GET /review --requests times with a logged-in session: the console's own Server-Timing (server time)
   and the wall time seen by the client, p50/p95/p99;
5. headless Chromium logs in, opens /review and presses "1" (confirm) --presses times, waiting each time for
   the next photo to be decoded and painted; the page's own measurement (key press to the frame after the
   photo is decoded) and the wall time seen by the driver, p50/p95/p99.

Targets: review page p95 <= 100 ms server time; key press -> next photo p95 <= 300 ms. JSON out.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import text

from streams.ledger.db import make_engine, migrate, read
from streams.ledger.ingest import Ingestor
from streams.ledger.messages import parse
from streams.orchestration.demo_console import ConsoleLogin, session
from streams.orchestration.harness import ConsoleProcess, Upload, percentile, upload_all, wait_http_ok
from streams.orchestration.ledger_bench import DEPARTMENTS, LABELS, T0, fill
from streams.stack.processes import free_port
from streams.stack.stack import Stack, StackConfig
from streams.worker.decisions import decide
from streams.worker.events import IntakeEvent

USER, PASSWORD = "bench", "console-bench-password"


class Quantiles(BaseModel):
    n: int
    p50: float | None
    p95: float | None
    p99: float | None


class ConsoleBench(BaseModel):
    rows: int                       # objects in the ledger when measured (counted)
    pending: int                    # of them in the review queue
    database: str
    fill_seconds: float
    review_page_server_ms: Quantiles
    review_page_client_ms: Quantiles
    key_to_next_photo_ms: Quantiles          # the page's measurement (keydown to the painted frame)
    key_to_next_photo_driver_ms: Quantiles   # as Playwright sees it (adds the driver's round trips)
    photo_bytes: int
    cpus: int | None
    load_average: list[float]
    targets: dict[str, bool]


def quantiles(values: list[float]) -> Quantiles:
    return Quantiles(n=len(values), **{f"p{q}": percentile(values, q / 100, 1) for q in (50, 95, 99)})


def photo(i: int, size=(1024, 768)) -> bytes:
    """A photo-sized JPEG with real detail (noise over gradients), ~150 KB."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 1)) % 256, (x + y) % 256], -1)
    arr = np.clip(base + rng.normal(0, 24, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def seed_photos(engine, settings, n: int) -> int:
    """n photos in S3, decided (through the ledger's ingest) as the queue's oldest items; bytes per photo."""
    run = uuid.uuid4().hex[:8]
    ups = upload_all(settings, [Upload(f"bench-review/{run}/{i:05d}.jpg", photo(i)) for i in range(n)])
    with read(engine) as conn:
        oldest = conn.execute(text("SELECT min(event_time) FROM objects")).scalar()
    start = min(_aware(oldest), T0) - timedelta(seconds=n + 1) if oldest else T0
    rng = np.random.default_rng(7)
    msgs = []
    for i, u in enumerate(ups):
        at = start + timedelta(seconds=i)   # older than every row already there: shown first
        ev = IntakeEvent(bucket=settings.bucket, key=u.key, size=len(u.data), etag=u.etag, version_id=None,
                         sequencer="", event_time=at, event_name="s3:ObjectCreated:Put", content_type="image/jpeg",
                         source="s3")
        probs = 0.9 * rng.dirichlet(np.full(len(DEPARTMENTS), 0.3)) + 0.1 / len(DEPARTMENTS)  # top-1 < 1
        d = decide(ev, probs, LABELS, settings.model_name, "1", 1.0, 0.15, at + timedelta(seconds=1))  # all reviewed
        msgs.append(parse(d.model_dump_json().encode(), "decision"))
    Ingestor(engine, 0.0).ingest(msgs)
    return sum(len(u.data) for u in ups) // max(1, n)


def _aware(at):
    """SQLite hands back naive UTC times."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def review_times(url: str, n: int) -> tuple[list[float], list[float]]:
    server, client = [], []
    http = session(ConsoleLogin(url=url, user=USER, password=PASSWORD))
    try:
        http.get("/model")   # waits for the figures the console computes at start-up
        for _ in range(5):
            http.get("/review")
        for _ in range(n):
            t0 = time.perf_counter()
            r = http.get("/review")
            client.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            server.append(float(re.search(r"app;dur=([\d.]+)", r.headers["server-timing"]).group(1)))
    finally:
        http.close()
    return server, client


async def key_times(url: str, presses: int) -> tuple[list[float], list[float]]:
    from playwright.async_api import async_playwright

    from streams.orchestration.browser import launch

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await (await browser.new_context(viewport={"width": 1366, "height": 800}, bypass_csp=True)).new_page()
            await page.goto(f"{url}/login?next=/review")
            await page.fill("#username", USER)
            await page.fill("#password", PASSWORD)
            await page.press("#password", "Enter")
            await page.wait_for_function("document.body.dataset.shown")
            await asyncio.sleep(1.0)   # the first prefetch settles
            driver = []
            for _ in range(presses):
                before = await page.evaluate("document.body.dataset.shown")
                t0 = time.perf_counter()
                await page.keyboard.press("1")
                await page.wait_for_function("p => document.body.dataset.shown !== p", arg=before)
                driver.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.3)   # a fast curator: ~3 verdicts a second
            return list(await page.evaluate("window.artroute.timings")), driver
        finally:
            await browser.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/bench/console.json"), help="JSON result file")
    p.add_argument("--rows", type=int, default=1_000_000, help="ledger size (default 1,000,000)")
    p.add_argument("--photos", type=int, default=200, help="real photos at the head of the queue (default 200)")
    p.add_argument("--requests", type=int, default=300, help="GET /review requests timed (default 300)")
    p.add_argument("--presses", type=int, default=100, help="verdict key presses timed (default 100)")
    p.add_argument("--ledger-url", help="the database to bench on, filled up to --rows (default: a fresh SQLite "
                                        "file in --work-dir; a filled one can be given again to skip the fill)")
    p.add_argument("--work-dir", type=Path, help="stack, database and logs (default: a temp dir)")


def main(args: argparse.Namespace) -> int:
    from streams.console.users import UserStore

    if args.presses >= args.photos:
        raise SystemExit("console bench: error: --presses must be below --photos")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="artroute-console-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    url_db = args.ledger_url or f"sqlite:///{work / 'ledger.db'}"
    if not args.ledger_url:
        for f in work.glob("ledger.db*"):
            f.unlink()
    with Stack(StackConfig(run_dir=work / "stack", with_triton=False)) as stack:
        stack.write_endpoints(work / "endpoints.json")
        settings = stack.settings_for_clients().model_copy(update={"ledger_url": url_db})
        engine = make_engine(url_db)
        migrate(engine)
        with read(engine) as conn:
            there = conn.execute(text("SELECT count(*) FROM objects")).scalar()
        print(f"filling the ledger from {there} to {args.rows} rows ...", flush=True)
        fill_s = fill(engine, max(0, args.rows - args.photos - there))
        photo_bytes = seed_photos(engine, settings, args.photos)
        with read(engine) as conn:
            rows = conn.execute(text("SELECT count(*) FROM objects")).scalar()
            pending = conn.execute(text("SELECT count(*) FROM objects WHERE status = 'pending'")).scalar()
        engine.dispose()
        print(f"  {rows} rows ({pending} in review) in {fill_s} s; starting the console ...", flush=True)
        UserStore(work / "users.json").add(USER, "curator", PASSWORD)
        port = free_port()
        console = ConsoleProcess({"ARTROUTE_STACK_FILE": str(work / "endpoints.json"), "ARTROUTE_LEDGER_URL": url_db,
                                  "ARTROUTE_TRITON_URL": "127.0.0.1:1",   # no Triton here; the console never calls it
                                  "ARTROUTE_CONSOLE_PORT": str(port), "ARTROUTE_CONSOLE_USERS_FILE": str(work / "users.json"),
                                  "ARTROUTE_CONSOLE_SECRET_KEY": uuid.uuid4().hex, "ARTROUTE_LOG_JSON": "false"},
                                 log_path=work / "console.log").start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http_ok(url + "/healthz", console.proc, 120)
            server, client = review_times(url, args.requests)
            print(f"  review page p95 {percentile(server, 0.95, 1)} ms server; key presses ...", flush=True)
            page_ms, driver_ms = asyncio.run(key_times(url, args.presses))
        finally:
            console.stop()
    out = ConsoleBench(rows=rows, pending=pending, database=url_db.split(":")[0], fill_seconds=fill_s,
                       review_page_server_ms=quantiles(server), review_page_client_ms=quantiles(client),
                       key_to_next_photo_ms=quantiles(page_ms), key_to_next_photo_driver_ms=quantiles(driver_ms),
                       photo_bytes=photo_bytes, cpus=os.cpu_count(), load_average=[round(x, 2) for x in os.getloadavg()],
                       targets={"review_page_p95_le_100_ms": (quantiles(server).p95 or 1e9) <= 100,
                                "key_to_next_photo_p95_le_300_ms": (quantiles(page_ms).p95 or 1e9) <= 300})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out.model_dump_json(indent=2) + "\n")
    print(json.dumps(out.model_dump(), indent=2))
    return 0
