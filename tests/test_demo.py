"""`python -m streams demo` end to end (with the session's model, so it does not train one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.stack


def test_demo_decides_every_upload_and_writes_a_summary(tmp_path, served_model_repository):
    env = dict(os.environ, ARTROUTE_STACK_FILE=str(tmp_path / "endpoints.json"))
    r = subprocess.run([sys.executable, "-m", "streams", "demo", "--images", "12", "--rate", "8",
                        "--model-repository", str(served_model_repository), "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["lost"] == 0
    assert summary["uploaded"] == 16 and summary["decided"] == 12 and summary["dead_lettered"] == 4
    assert sum(summary["per_department"].values()) == 12
    assert summary["latency_p50_s"] > 0 and summary["throughput_per_s"] > 0
    assert "DEAD LETTER: empty" in r.stdout and "stopping the worker, the ledger and the stack" in r.stdout
    # The routing ledger ingested the same outcomes Kafka carried.
    assert summary["ledger_agrees"] is True
    assert summary["ledger"] == {"decided": 12, "in review": summary["needs_review"], "dead letters": 4}
    assert "kafka and ledger agree" in r.stdout
