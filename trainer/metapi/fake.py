"""An offline fake of the MET Collection API: a real aiohttp server on 127.0.0.1.

It serves the real response shapes (``/departments`` with ids 1, 3–19, 21 and the real display names,
from the met-19 taxonomy and checked against the real response in tests;
``/objects?departmentIds=…``; ``/objects/{id}`` payloads with the real fields, empty strings and nulls),
built from the real records in ../shared/data/met-api when present and topped up with generated ones
(see `trainer.metapi.records`). Images are generated JPEGs whose colour and stripe pattern depend on the
department (so a model can learn them), or real files given per object id; ``primaryImage*`` URLs point
back at this server.

Like a public API it rate-limits: an API request arriving when the sliding 1 s window already holds
``rate_limit`` requests gets 403. It records every API arrival (per-second counts and the largest
sliding-window count) so tests can check a client server-side. `Faults` injects latency, timeouts
(a hang), 5xx, truncated bodies (Content-Length larger than the body sent), withdrawn objects (404) and
missing images (404); set them in the constructor, by CLI flags, or at run time with
``POST /admin/faults`` (JSON, partial). ``GET /admin/stats`` returns `FakeStats`; ``POST /admin/reset``
clears them. Admin and image requests are not rate-limited (images come from a CDN in the real API).
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import random
import time
from collections import Counter, deque
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image
from pydantic import BaseModel, Field

from trainer.metapi.models import DEPARTMENT_LABELS, DISPLAY_NAMES, department_id
from trainer.metapi.records import IMAGE_PLACEHOLDER, build_records

API_PREFIX = "/public/collection/v1"


class Faults(BaseModel):
    """What the fake does wrong, and how often (rates are fractions of requests, 0..1)."""
    rate_limit: int = Field(80, ge=0, description="API requests per sliding 1 s window; 0 = unlimited.")
    latency_ms: tuple[float, float] = Field((0.0, 0.0), description="Uniform extra latency per request.")
    timeout_rate: float = Field(0.0, ge=0, le=1, description="Requests that hang for hang_s.")
    hang_s: float = Field(30.0, ge=0, description="How long a hanging request hangs.")
    error_rate: float = Field(0.0, ge=0, le=1, description="Requests answered 500/502/503.")
    retry_after_s: int | None = Field(None, description="Retry-After header sent with 503s.")
    truncate_rate: float = Field(0.0, ge=0, le=1, description="Responses cut off half-way.")
    withdrawn_rate: float = Field(0.0, ge=0, le=1, description="Listed objects whose record is 404.")
    missing_image_rate: float = Field(0.0, ge=0, le=1, description="Public-domain objects whose image is 404.")
    seed: int = Field(0, description="Seed of the random faults.")


class FakeStats(BaseModel):
    api_requests: int = 0
    image_requests: int = 0
    rejected: int = 0                        # 403s sent for the rate limit
    max_window: int = 0                      # most API arrivals seen in any sliding 1 s window
    per_second: dict[int, int] = Field(default_factory=dict)   # second since start -> API arrivals
    faults: dict[str, int] = Field(default_factory=dict)


def _frac(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a key: the same across runs and restarts."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


@lru_cache(maxsize=64)
def department_pattern(dept: int, long_side: int) -> Image.Image:
    """A department's texture, twice the long side: hue and stripe angle/frequency depend on the department."""
    k = sorted(DEPARTMENT_LABELS).index(dept) if dept in DEPARTMENT_LABELS else 0
    side = 2 * long_side
    angle = np.pi * k / len(DEPARTMENT_LABELS)
    freq = 2 * np.pi * (3 + k % 5) / long_side
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    hue = np.array([np.sin(k * 0.9), np.sin(k * 0.9 + 2.1), np.sin(k * 0.9 + 4.2)]) * 0.5 + 0.5
    img = 255 * (0.55 * hue + 0.35 * hue[::-1] * wave[..., None] ** 2)
    img += np.random.default_rng(dept).normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=2048)
def pattern_jpeg(object_id: int, dept: int, long_side: int) -> bytes:
    """An object's JPEG: a crop of its department's texture at an id-dependent offset and aspect."""
    aspect = 0.6 + 0.8 * _frac(f"aspect:{object_id}", 0)
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    w, h = max(16, min(w, long_side)), max(16, min(h, long_side))
    x = int(_frac(f"x:{object_id}", 0) * (2 * long_side - w))
    y = int(_frac(f"y:{object_id}", 0) * (2 * long_side - h))
    buf = io.BytesIO()
    department_pattern(dept, long_side).crop((x, y, x + w, y + h)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


class FakeMetApi:
    def __init__(self, records: dict[int, dict[str, Any]] | None = None, *, met_api_dir: Path | None = None,
                 faults: Faults | None = None, images: dict[int, Path] | None = None,
                 image_long_side: int = 256, min_per_department: int = 40):
        self.records = records if records is not None else build_records(met_api_dir, min_per_department)
        self.faults = faults or Faults()
        self.images = images or {}
        self.image_long_side = image_long_side
        self.by_department: dict[int, list[int]] = {d: [] for d in DEPARTMENT_LABELS}
        for oid in sorted(self.records):
            d = department_id(self.records[oid]["department"])
            if d is not None:
                self.by_department[d].append(oid)
        self.reset_stats()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- what a harvest should find -----------------------------------------------------------------
    def withdrawn(self, oid: int) -> bool:
        return _frac(f"withdrawn:{oid}", self.faults.seed) < self.faults.withdrawn_rate

    def image_missing(self, oid: int) -> bool:
        return _frac(f"noimage:{oid}", self.faults.seed) < self.faults.missing_image_rate

    def eligible(self, dept: int) -> list[int]:
        """Ids of a department that a harvest may keep: listed, not withdrawn, public domain, image ok."""
        return [oid for oid in self.by_department[dept]
                if not self.withdrawn(oid) and not self.image_missing(oid)
                and self.records[oid]["isPublicDomain"] and self.records[oid]["primaryImage"]]

    # --- lifecycle -----------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(f"{API_PREFIX}/departments", self._departments)
        app.router.add_get(f"{API_PREFIX}/objects", self._object_ids)
        app.router.add_get(f"{API_PREFIX}/objects/{{oid}}", self._object)
        app.router.add_get("/images/{kind}/{name}", self._image)
        app.router.add_get("/admin/stats", self._admin_stats)
        app.router.add_post("/admin/faults", self._admin_faults)
        app.router.add_post("/admin/reset", self._admin_reset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # ~10k record dicts make full GC passes long enough (100+ ms) to bunch arrival timestamps and
        # skew the rate-limit measurement; move everything alive now out of the collector's reach.
        gc.freeze()
        self._runner = web.AppRunner(self.make_app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{port}{API_PREFIX}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeMetApi:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def reset_stats(self) -> None:
        self.stats = FakeStats()
        self._window: deque[float] = deque()
        self._t0 = time.monotonic()
        self._rng = random.Random(self.faults.seed)

    # --- middleware: rate limit, arrivals, faults ----------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        if request.path.startswith("/admin/"):
            return await handler(request)
        f, st = self.faults, self.stats
        if request.path.startswith(API_PREFIX):
            now = time.monotonic()
            st.api_requests += 1
            sec = int(now - self._t0)
            st.per_second[sec] = st.per_second.get(sec, 0) + 1
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            self._window.append(now)
            st.max_window = max(st.max_window, len(self._window))
            if f.rate_limit and len(self._window) > f.rate_limit:
                st.rejected += 1
                return web.json_response({"message": "rate limit exceeded"}, status=403)
        else:
            st.image_requests += 1
        if f.latency_ms[1] > 0:
            await asyncio.sleep(self._rng.uniform(*f.latency_ms) / 1000)
        roll = self._rng.random()
        if roll < f.timeout_rate:
            self._count("timeout")
            await asyncio.sleep(f.hang_s)
        elif roll < f.timeout_rate + f.error_rate:
            self._count("5xx")
            headers = {"Retry-After": str(f.retry_after_s)} if f.retry_after_s is not None else {}
            return web.Response(status=self._rng.choice([500, 502, 503]), text="injected error",
                                headers=headers)
        resp = await handler(request)
        if self._rng.random() < f.truncate_rate and isinstance(resp, web.Response) and resp.body:
            self._count("truncated")
            return await self._truncated(request, resp)
        return resp

    def _count(self, fault: str) -> None:
        self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1

    @staticmethod
    async def _truncated(request: web.Request, resp: web.Response) -> web.StreamResponse:
        body = bytes(resp.body)
        out = web.StreamResponse(status=resp.status, headers={"Content-Type": resp.content_type})
        out.content_length = len(body)
        await out.prepare(request)
        await out.write(body[: len(body) // 2])
        request.transport.close()
        return out

    # --- API -----------------------------------------------------------------------------------------
    async def _departments(self, request: web.Request) -> web.Response:
        deps = [{"departmentId": d, "displayName": DISPLAY_NAMES[d]} for d in sorted(DISPLAY_NAMES)]
        return web.json_response({"departments": deps})

    async def _object_ids(self, request: web.Request) -> web.Response:
        raw = request.query.get("departmentIds", "")
        try:
            depts = [int(x) for x in raw.split("|") if x.strip()] if raw else list(self.by_department)
        except ValueError:
            return web.json_response({"message": "departmentIds must be integers"}, status=400)
        ids = sorted(oid for d in depts for oid in self.by_department.get(d, []))
        return web.json_response({"total": len(ids), "objectIDs": ids or None})

    async def _object(self, request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        if not oid.isdigit() or int(oid) not in self.records or self.withdrawn(int(oid)):
            return web.json_response({"message": "ObjectID not found"}, status=404)
        return web.Response(text=json.dumps(self._payload(int(oid), request)), content_type="application/json")

    def _payload(self, oid: int, request: web.Request) -> dict[str, Any]:
        p = dict(self.records[oid])
        root = f"{request.scheme}://{request.host}/images"
        if p["primaryImage"]:
            p["primaryImage"] = f"{root}/original/{oid}.jpg"
        if p["primaryImageSmall"]:
            p["primaryImageSmall"] = f"{root}/web-large/{oid}.jpg"
        p["additionalImages"] = [f"{root}/additional-{i}/{oid}.jpg" if u == IMAGE_PLACEHOLDER else u
                                 for i, u in enumerate(p["additionalImages"])]
        return p

    async def _image(self, request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        stem = name.rsplit(".", 1)[0]
        if not stem.isdigit() or int(stem) not in self.records:
            return web.Response(status=404, text="not found")
        oid = int(stem)
        rec = self.records[oid]
        if not rec["primaryImage"] or self.image_missing(oid):
            return web.Response(status=404, text="not found")
        if oid in self.images:
            body = await asyncio.to_thread(self.images[oid].read_bytes)
        else:
            side = self.image_long_side * (2 if kind == "original" else 1)
            body = await asyncio.to_thread(pattern_jpeg, oid, department_id(rec["department"]) or 0, side)
        return web.Response(body=body, content_type="image/jpeg")

    # --- admin ---------------------------------------------------------------------------------------
    async def _admin_stats(self, request: web.Request) -> web.Response:
        return web.Response(text=self.stats.model_dump_json(), content_type="application/json")

    async def _admin_faults(self, request: web.Request) -> web.Response:
        update = await request.json()
        self.faults = Faults.model_validate({**self.faults.model_dump(), **update})
        return web.Response(text=self.faults.model_dump_json(), content_type="application/json")

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})
