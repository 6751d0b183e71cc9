"""Prometheus metrics of the worker, and its /metrics, /healthz and /livez HTTP endpoint (ARTROUTE_METRICS_PORT,
on ARTROUTE_METRICS_HOST: loopback unless configured otherwise)."""
from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from streams.worker.health import Health

EVENTS = Counter("artroute_events_total", "Intake messages seen, by outcome", ["outcome"])
DECISIONS = Counter("artroute_decisions_total", "Routing decisions published, by department", ["department"])
REVIEW = Counter("artroute_review_total", "Decisions that need review, by reason", ["reason"])
DEAD_LETTERS = Counter("artroute_dead_letters_total", "Dead letters published, by error kind", ["kind"])
BATCH_SIZE = Histogram("artroute_batch_images", "Images per Triton request",
                       buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128))
INFERENCE_SECONDS = Histogram("artroute_inference_seconds", "Triton request latency",
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
END_TO_END_SECONDS = Histogram("artroute_end_to_end_seconds", "Store event time to decision published",
                               buckets=(.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300))


class HealthServer:
    """GET /metrics (Prometheus text), GET /healthz (readiness: 200 when `health` has no problem, else 503
    with the problems) and GET /livez (200 while the worker's event loop answers)."""

    def __init__(self, port: int, host: str = "127.0.0.1", health: Health | None = None):
        self.port, self.host = port, host
        self.health = health or Health()
        self.started = time.time()
        self.runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        problems = self.health.problems()
        status = "ok" if not problems else "starting" if problems == ["starting"] else "not_ready"
        body = {"status": status, "uptime_s": round(time.time() - self.started, 1)}
        if problems and status != "starting":
            body["problems"] = problems
        return web.json_response(body, status=200 if not problems else 503)

    async def _livez(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz),
                        web.get("/livez", self._livez)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
