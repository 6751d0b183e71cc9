"""The reconciler finds objects with no outcome and replays them; zero unsettled once they are decided.
A worker of its own on topics of its own: the objects' real events go to the session's intake, so to this
worker they are objects whose events were lost."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from streams.orchestration.harness import Upload, collect_outcomes, upload_all
from streams.stack.servers import create_topics
from tests.fault_fixtures import log_tail_on_failure
from tests.worker_fixtures import jpeg, unique_prefix

pytestmark = pytest.mark.stack


def metric(port: str, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def reconcile_cli(env: dict[str, str], *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "streams", "reconcile", *args], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def test_reconciler_replays_objects_without_outcome_until_none_is_unsettled(own_worker, stack, stack_settings):
    p, tag = unique_prefix("reconcile"), uuid.uuid4().hex[:6]
    topics = {f"ARTROUTE_{t.upper()}_TOPIC": f"test.reconcile.{tag}.{t}" for t in ("decisions", "review", "deadletter")}
    await create_topics(stack.endpoints.kafka_brokers, {t: 1 for t in topics.values()})
    settings = stack_settings.model_copy(update={k.removeprefix("ARTROUTE_").lower(): v for k, v in topics.items()})
    ups = upload_all(stack_settings, [Upload(p + f"{i}.jpg", jpeg(i % 4, seed=1100 + i)) for i in range(6)])
    keys = [u.key for u in ups]
    cli_env = {"ARTROUTE_STACK_FILE": str(stack.run_dir / "endpoints.json"), **topics}
    before = reconcile_cli(cli_env, "--prefix", p, "--grace-s", "0", "--dry-run", "--scan-idle-s", "1")
    assert (before["listed"], before["unsettled"], before["replayed"]) == (6, 6, 0)
    young = reconcile_cli(cli_env, "--prefix", p, "--grace-s", "3600", "--dry-run", "--scan-idle-s", "1")
    assert young["too_young"] == 6 and young["unsettled"] == 0

    worker, _ = await own_worker("reconcile", ARTROUTE_RECONCILE_INTERVAL_S="3", ARTROUTE_RECONCILE_GRACE_S="0",
                                 ARTROUTE_RECONCILE_PREFIX=p, **topics)
    port = worker.env["ARTROUTE_METRICS_PORT"]
    with log_tail_on_failure(worker.log_path):
        out = await collect_outcomes(settings, keys, timeout=180, linger=0)
        assert all(k in out.decisions for k in keys), "the reconciler did not get the objects decided"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and metric(port, "artroute_unsettled_objects") != 0:
            await asyncio.sleep(1)
        assert metric(port, "artroute_unsettled_objects") == 0
        assert metric(port, "artroute_reconcile_replayed_total") >= 6
    after = reconcile_cli(cli_env, "--prefix", p, "--grace-s", "0", "--dry-run", "--scan-idle-s", "1")
    assert (after["settled"], after["unsettled"]) == (6, 0)
