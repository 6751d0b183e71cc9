"""A store or Triton that is away for a while: the worker holds its batch, retries, says not ready on /healthz
meanwhile, and decides everything once the server is back (each worker reaches the server through a TCP
proxy that refuses connections for a few seconds, so the session's stack is never disturbed)."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from streams.orchestration.faults import TcpProxy
from streams.orchestration.harness import collect_outcomes
from tests.fault_fixtures import log_tail_on_failure, publish_events, upload_quietly
from tests.worker_fixtures import jpeg, unique_prefix

pytestmark = pytest.mark.stack


def healthz(worker) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{worker.env['ARTROUTE_METRICS_PORT']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}


async def watch_health(worker, seconds: float) -> list[tuple[int, dict]]:
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(await asyncio.to_thread(healthz, worker))
        await asyncio.sleep(0.25)
    return seen


@pytest.mark.parametrize("dependency", ["store", "triton"])
async def test_a_dependency_refusing_connections_is_retried_and_reported_not_ready(dependency, own_worker, stack,
                                                                                   stack_settings):
    """The store or Triton refuses connections for seconds mid-stream: nothing is dead-lettered, everything is
    decided once it is back, and /healthz says not ready (naming it) meanwhile."""
    p = unique_prefix(f"{dependency}-outage")
    ups = list(upload_quietly(stack_settings, {p + f"{i:02d}.bin": jpeg(i % 4, seed=300 + i) for i in range(12)}).values())
    target, env = {"store": (stack.endpoints.s3_endpoint, {"ARTROUTE_S3_ENDPOINT": None}),
                   "triton": (stack.endpoints.triton_url, {"ARTROUTE_TRITON_URL": None,
                                                           "ARTROUTE_TRITON_RETRY_MAX_S": "1"})}[dependency]
    with TcpProxy(target) as proxy:
        env = {k: v or proxy.address for k, v in env.items()}
        worker, topic = await own_worker(f"{dependency}-outage", ARTROUTE_HEALTH_STUCK_S="0.5", **env)
        with log_tail_on_failure(worker.log_path):
            await publish_events(stack_settings, topic, ups[:3], content_type="image/jpeg")
            first = await collect_outcomes(stack_settings, [u.key for u in ups[:3]], timeout=120, linger=0)
            assert all(u.key in first.decisions for u in ups[:3])
            assert healthz(worker)[0] == 200
            proxy.refuse()
            await publish_events(stack_settings, topic, ups[3:], content_type="image/jpeg")
            during = await watch_health(worker, 6.0)
            proxy.restore()
            out = await collect_outcomes(stack_settings, [u.key for u in ups], timeout=120, linger=0.5)
            after = await watch_health(worker, 1.0)
    assert not out.dead_letters, {k: v[0]["error_kind"] for k, v in out.dead_letters.items()}
    assert all(u.key in out.decisions for u in ups)
    not_ready = [body for status, body in during if status == 503]
    assert any(dependency in problem for body in not_ready for problem in body.get("problems", [])), during
    assert after[-1][0] == 200, after[-1]
