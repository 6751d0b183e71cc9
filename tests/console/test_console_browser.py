"""The console in headless Chromium on the real stack (its own worker and topics, `ledger run`, `console`):
a curator clears review items with the keyboard alone (one corrected to a department typed into the
search box), undoes one, triages a grid of 24 with 3 marked wrong; the model page's agreement follows;
every verdict is in the database and on the verdicts topic with the curator's name. An admin re-publishes
a fixed dead letter and sees it re-decided; search, history and export. Screenshots for docs/console.md."""
from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from pathlib import Path

import pytest

from streams.contract.curation import Verdict
from streams.ledger.verdicts import effective
from streams.orchestration.harness import Upload, upload_all
from tests.console.conftest import login
from tests.fault_fixtures import QUIET_TYPE, publish_events
from tests.ledger.test_ledger_stack import read_verdicts
from tests.worker_fixtures import jpeg

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")  # e.g. docs/images: where the docs' screenshots are (re)written
GRID = "Egyptian Art"   # the test model calls the synthetic class-0 pictures Egyptian Art


@pytest.fixture(scope="module")
async def seeded(console) -> dict[str, list[Upload]]:
    """Review items first (the oldest in the queue), then a grid's worth of one department."""
    review = await console.seed({f"incoming/review/scan-{i:03d}": jpeg(1 + i % 2, seed=2000 + i, size=(320, 240))
                                 for i in range(8)})
    grid = await console.seed({f"incoming/grid/scan-{i:03d}": jpeg(0, seed=3000 + i, size=(320, 240))
                               for i in range(40)})
    return {"review": review, "grid": grid}


async def screenshot(page, name: str, tmp_path: Path) -> Path:
    """Every screenshot is taken; with CONSOLE_SCREENSHOTS it goes to that folder (the docs' images)."""
    from PIL import Image

    folder = REPO / SHOTS if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    await page.screenshot(path=str(path))
    with Image.open(path) as img:  # small: a 256-colour palette PNG
        assert img.size == (1366, 800)
        img.convert("RGB").quantize(256).save(path, optimize=True)
    assert path.stat().st_size > 10_000
    return path


async def shown(page, previous: str | None = None, timeout: float = 10_000) -> str:
    """The object id whose photo is on screen (after `previous` when given)."""
    await page.wait_for_function("prev => document.body.dataset.shown && document.body.dataset.shown !== prev",
                                 arg=previous or "", timeout=timeout)
    return await page.evaluate("document.body.dataset.shown")


async def current(page) -> dict:
    return await page.evaluate("window.artroute.state.current")


def _pct(text: str) -> float | None:
    text = text.strip()
    return None if text in ("–", "") else float(text.rstrip(" %")) / 100


async def figures(page, url: str, until=None, timeout: float = 30.0) -> dict:
    """The model page's figures (cached for 0.5 s, recomputed in the background: reload until `until`)."""
    deadline = time.monotonic() + timeout
    while True:
        await page.goto(f"{url}/model")
        f = {"with_verdict": int(await page.text_content("#f-with-verdict")),
             "agreement": _pct(await page.text_content("#f-agreement")),
             "reviewed_agreement": _pct(await page.text_content("#f-reviewed-agreement")),
             "audit_agreement": _pct(await page.text_content("#f-audit-agreement")),
             "reviewed": int((await page.text_content("#f-reviewed")).removeprefix("n=")),
             "audited": int((await page.text_content("#f-audited")).removeprefix("n="))}
        if until is None or until(f) or time.monotonic() > deadline:
            return f
        await asyncio.sleep(0.5)


def agree(f: dict, key: str, n: str) -> int:
    """Verdicts agreeing with the model, back from a percentage with one decimal (exact below 1,000)."""
    return round((f[key] or 0) * f[n])


async def test_review_with_the_keyboard_alone(console, seeded, page, tmp_path):
    await login(page, console.url, "amy")
    first = await shown(page)
    done = []

    async def press(key: str) -> None:
        before = await page.evaluate("document.body.dataset.shown")
        done.append(await current(page))
        await page.keyboard.press(key)
        await shown(page, before)

    await screenshot(page, "review", tmp_path)
    await press("1")                      # confirm
    await press("Enter")                  # confirm
    await press("2")                      # the model's 2nd department
    item = await current(page)
    typed = next(d for d in ["Arms and Armor", "Asian Art", "European Paintings", "Egyptian Art"]
                 if d not in [t["label"] for t in item["top3"]][:1])
    await page.keyboard.press("/")        # the department search box, completion over the taxonomy
    await page.keyboard.type(typed[:4].lower())
    await page.wait_for_selector("#dept-list li[aria-selected=true]")
    assert await page.text_content("#dept-list li[aria-selected=true]") == typed
    await press("Enter")
    await press("n")                      # not routable
    assert len({d["object_id"] for d in done}) == 5 and str(done[0]["object_id"]) == first
    before = await page.evaluate("document.body.dataset.shown")
    await page.keyboard.press("u")        # undo the last: the not-routable item is back
    assert await shown(page, before) == str(done[4]["object_id"])
    await page.wait_for_function("document.getElementById('status').textContent.startsWith('Undone')")

    ledger = console.ledger()
    try:
        expect = [("confirm", done[0]["department"]), ("confirm", done[1]["department"]),
                  ("correct", done[2]["top3"][1]["label"]), ("correct" if typed != done[3]["department"] else "confirm", typed)]
        for item, (kind, department) in zip(done, expect):
            h = ledger.history(item["object_id"])
            [v] = h.verdicts
            assert (v.kind, v.department, v.curator, v.decision_id) == (kind, department, "amy", item["decision_id"])
            assert h.object.status == "reviewed"
        undone = ledger.history(done[4]["object_id"])
        assert [v.kind for v in undone.verdicts] == ["not_routable", "retract"]
        assert {v.curator for v in undone.verdicts} == {"amy"} and undone.object.status == "pending"
        assert effective([v.model_dump() for v in undone.verdicts]) is None
        ids = {v.verdict_id for d in done for v in ledger.history(d["object_id"]).verdicts}
    finally:
        ledger.close()
    on_topic = await read_verdicts(console.settings, ids, timeout=60)
    assert set(on_topic) == ids
    assert {v.curator for vs in on_topic.values() for v in vs} == {"amy"}


async def test_grid_confirms_the_rest_and_the_model_page_follows(console, seeded, page, tmp_path):
    await login(page, console.url, "amy", next_path="/model")
    before = await figures(page, console.url)
    await page.goto(f"{console.url}/grid?department={GRID.replace(' ', '+')}")
    pairs = await page.eval_on_selector_all('#grid input[name="wrong"]', "els => els.map(e => [e.value, e.dataset.object])")
    tiles, objects = [d for d, _ in pairs], {d: int(o) for d, o in pairs}
    assert len(tiles) == 24, f"the grid shows {len(tiles)} items predicted {GRID}"
    # Mark three with the keyboard (focus starts on the first tile): space, right right space, down space.
    for key in ["Space", "ArrowRight", "ArrowRight", "Space", "ArrowDown", "Space"]:
        await page.keyboard.press(key)
    await page.click("#grid li:nth-child(5) label")         # a click marks too ...
    await page.click("#grid li:nth-child(5) label")         # ... and unmarks
    marked = await page.eval_on_selector_all('#grid input[name="wrong"]:checked', "els => els.map(e => e.value)")
    columns = await page.evaluate("window.getComputedStyle(document.getElementById('grid')).gridTemplateColumns"
                                  ".split(' ').length")
    assert marked == [tiles[0], tiles[2], tiles[2 + columns]]
    assert await page.text_content("#grid-marked") == "3 marked wrong"
    await screenshot(page, "grid", tmp_path)
    ledger = console.ledger()
    try:
        audit = {d: ledger.object(objects[d]).reason == "audit" for d in tiles}
    finally:
        ledger.close()
    await page.keyboard.press("c")                         # confirm the other 21
    await page.wait_for_url("**/review?department=*")
    await page.wait_for_selector(".flash")
    assert "Confirmed 21 as Egyptian Art" in await page.text_content(".flash")

    confirmed = [d for d in tiles if d not in marked]
    n_rev = sum(1 for d in confirmed if not audit[d])
    mid = await figures(page, console.url, until=lambda f: f["with_verdict"] == before["with_verdict"] + 21)
    assert mid["with_verdict"] == before["with_verdict"] + 21
    assert mid["agreement"] == pytest.approx((agree(before, "agreement", "with_verdict") + 21) / mid["with_verdict"], abs=5e-4)
    assert mid["reviewed"] == before["reviewed"] + n_rev and mid["audited"] == before["audited"] + 21 - n_rev

    # The marked three are the oldest of their department: the review queue opens on them.
    await page.goto(f"{console.url}/review?department={GRID.replace(' ', '+')}")
    await shown(page)
    for d in marked:
        item = await current(page)
        assert item["decision_id"] == d
        await page.keyboard.press("2")                     # the curators say: the model's 2nd department
        await page.wait_for_function("id => String(window.artroute.state.current?.object_id) !== id",
                                     arg=str(item["object_id"]))
    after = await figures(page, console.url, until=lambda f: f["with_verdict"] == before["with_verdict"] + 24)
    assert after["with_verdict"] == before["with_verdict"] + 24
    assert after["agreement"] == pytest.approx((agree(before, "agreement", "with_verdict") + 21) / after["with_verdict"],
                                               abs=5e-4)
    assert after["reviewed"] + after["audited"] == before["reviewed"] + before["audited"] + 24
    assert after["agreement"] < mid["agreement"]
    await screenshot(page, "model", tmp_path)

    ledger = console.ledger()
    try:
        verdicts = [v for d in tiles for v in ledger.history(objects[d]).verdicts]
    finally:
        ledger.close()
    assert len(verdicts) == 24 and {v.curator for v in verdicts} == {"amy"}
    assert sorted(v.kind for v in verdicts) == ["confirm"] * 21 + ["correct"] * 3
    on_topic = await read_verdicts(console.settings, {v.verdict_id for v in verdicts}, timeout=60)
    assert {v.verdict_id for vs in on_topic.values() for v in vs} == {v.verdict_id for v in verdicts}
    assert all(isinstance(v, Verdict) and v.curator == "amy" for vs in on_topic.values() for v in vs)



async def test_an_admin_republishes_a_fixed_dead_letter(console, page):
    key = "incoming/fix/scan-broken"
    [bad] = upload_all(console.settings, [Upload(key, b"visitor notes, not a photo\n" * 8, QUIET_TYPE)])
    await publish_events(console.settings, console.settings.intake_topic, [bad], content_type="image/jpeg")
    await console.settled([key], check=lambda o: o.status == "dead_letter")
    await login(page, console.url, "root", next_path="/dead-letters")
    row = page.locator(f'#dead-letters tr[data-key="{key}"]').first
    cells = await row.locator("td").all_text_contents()
    assert cells[1:3] == ["not_image", "decode"] and cells[5] == "–"
    upload_all(console.settings, [Upload(key, jpeg(2, seed=77, size=(320, 240)), QUIET_TYPE)])  # the file is fixed
    await row.locator("button.republish").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_selector(".flash")
    assert "Re-published s3://artworks/incoming/fix/scan-broken" in await page.text_content(".flash")
    await console.settled([key], check=lambda o: o.status != "dead_letter", timeout=120)
    await page.reload()
    redecided = await page.locator(f'#dead-letters tr[data-key="{key}"] td.redecided').first.text_content()
    assert redecided.startswith("20")                     # the time it was re-decided


async def test_search_history_and_the_admin_export(console, seeded, page):
    import pyarrow.parquet as pq

    await login(page, console.url, "root", next_path="/search")
    await page.fill("#q-key", "incoming/review/")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#total")
    assert (await page.text_content("#total")).startswith("8 objects")
    keys = await page.eval_on_selector_all("#results tbody td:first-child a", "els => els.map(e => e.textContent)")
    assert sorted(keys) == sorted(u.key for u in seeded["review"])
    ledger = console.ledger()
    try:
        obj = ledger.object(bucket=console.settings.bucket, key=seeded["review"][-1].key)
        ledger.record_verdict(obj.decision_id, "confirm", curator="zoe", note="checked in the storeroom")
    finally:
        ledger.close()
    await page.click(f'#results a[href="/objects/{obj.id}"]')
    await page.wait_for_selector("#verdicts")
    assert "zoe" in await page.locator("#verdicts td.curator").all_text_contents()
    assert await page.text_content("#object-key") == obj.key
    await page.go_back()                                  # the export links are on the search page
    async with page.expect_download() as download:
        await page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(await (await download.value).path()).read_text())))
    assert {u.key for u in seeded["review"]} <= {r["key"] for r in rows}
    assert next(r for r in rows if r["key"] == obj.key)["curator"] == "zoe"
    r = await page.request.get(f"{console.url}/export?format=parquet")
    assert r.ok and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(await r.body()))
    assert len(table) == len(rows)
