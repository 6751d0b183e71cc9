"""`console bench` end to end at a small size (the numbers are the benchmark's business, docs/benchmarks.md;
this checks it runs and measures what it says), and the ledger bench's decisions, which the console bench
shares (they stopped being valid decisions when labels became the model contract's: failed before the fix)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streams.ledger.messages import parse
from streams.orchestration.ledger_bench import messages


def test_the_ledger_bench_makes_real_decisions():
    [d] = [parse(m, "decision") for m in messages(1, seed=1, prefix="t")]
    assert d is not None


@pytest.mark.stack
def test_console_bench_measures_the_review_page_and_the_key_press(tmp_path):
    from streams.orchestration.browser import chromium_path
    from streams.stack.processes import StackError

    try:
        chromium_path()
    except StackError as e:
        pytest.skip(str(e))
    out = tmp_path / "console.json"
    r = subprocess.run([sys.executable, "-m", "streams", "console", "bench", "--rows", "2000", "--photos", "12",
                        "--requests", "20", "--presses", "5", "--out", str(out), "--work-dir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 2000 and result["database"] == "sqlite"
    assert result["review_page_server_ms"]["n"] == 20 and result["key_to_next_photo_ms"]["n"] == 5
    assert 0 < result["review_page_server_ms"]["p50"] <= result["review_page_client_ms"]["p95"] * 10
    assert 0 < result["key_to_next_photo_ms"]["p95"] and result["photo_bytes"] > 50_000
    assert set(result["targets"]) == {"review_page_p95_le_100_ms", "key_to_next_photo_p95_le_300_ms"}
