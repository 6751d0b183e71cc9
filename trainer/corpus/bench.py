"""Benchmark a MET harvest against the fake API (run in its own process) with simulated latency.

Reports, measured by the fake server: API requests/s reached in steady state divided by the configured
limit (target >= 0.95), the largest count in any sliding 1 s window divided by the limit (must never
exceed 1.0), 403s received; and images/s downloaded (wall clock of the whole harvest). Writes JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from pydantic import BaseModel

from trainer.corpus.met import HarvestConfig, harvest
from trainer.metapi.client import MAX_RPS, ClientConfig


class BenchResult(BaseModel):
    limit_rps: int
    latency_ms: tuple[float, float]
    per_department: int
    images: int
    wall_s: float
    images_per_s: float
    api_requests: int
    steady_rps: float
    rps_ratio: float                 # steady_rps / limit_rps
    max_window: int
    max_window_ratio: float          # max_window / limit_rps, must be <= 1.0
    rejected_403: int
    per_second: dict[int, int]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="JSON file to write the result to (required)")
    p.add_argument("--per-department", type=int, default=20, help="images per department (default: 20)")
    p.add_argument("--rps", type=int, default=MAX_RPS, help=f"client and server limit (default: {MAX_RPS})")
    p.add_argument("--latency-ms", type=float, nargs=2, default=(50.0, 150.0), metavar=("MIN", "MAX"),
                   help="simulated latency per request (default: 50 150)")
    p.add_argument("--concurrency", type=int, default=64, help="objects in flight (default: 64)")
    p.add_argument("--margin-ms", type=float, default=40.0,
                   help="the client's headroom per 1 s window against event-loop lag on either side (ClientConfig."
                        "margin_s; default: 40, the client's own default; use more on an overloaded machine)")
    p.add_argument("--generated", action="store_true", help="fake serves generated records only")


async def _start_fake(args: argparse.Namespace) -> tuple[asyncio.subprocess.Process, str]:
    cmd = [sys.executable, "-m", "trainer", "fake-met-api", "--port", "0", "--rate-limit", str(args.rps),
           "--latency-ms", *map(str, args.latency_ms)] + (["--generated"] if args.generated else [])
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
    if "fake MET API: " not in line:
        proc.kill()
        raise RuntimeError(f"fake API did not start: {line!r}")
    return proc, line.split("fake MET API: ", 1)[1].split()[0]


async def run(args: argparse.Namespace) -> BenchResult:
    proc, base = await _start_fake(args)
    admin = base.split("/public")[0] + "/admin"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-harvest-") as tmp:
            cfg = HarvestConfig(out=Path(tmp), per_department=args.per_department, concurrency=args.concurrency,
                                progress=False, client=ClientConfig(base_url=base, rps=args.rps, image_rps=args.rps,
                                                                  margin_s=args.margin_ms / 1000))
            async with aiohttp.ClientSession() as s:
                await s.post(f"{admin}/reset")
            t0 = time.monotonic()
            rows, _ = await harvest(cfg)
            wall = time.monotonic() - t0
        async with aiohttp.ClientSession() as s:
            stats = await (await s.get(f"{admin}/stats")).json()
    finally:
        proc.terminate()
        await proc.wait()
    per_second = {int(k): v for k, v in stats["per_second"].items()}
    full = [per_second.get(sec, 0) for sec in range(min(per_second) + 1, max(per_second))]  # drop ramp ends
    steady = statistics.fmean(full) if full else float(stats["api_requests"]) / wall
    return BenchResult(limit_rps=args.rps, latency_ms=tuple(args.latency_ms), per_department=args.per_department,
                       images=len(rows), wall_s=round(wall, 3), images_per_s=round(len(rows) / wall, 2),
                       api_requests=stats["api_requests"], steady_rps=round(steady, 2),
                       rps_ratio=round(steady / args.rps, 4), max_window=stats["max_window"],
                       max_window_ratio=round(stats["max_window"] / args.rps, 4),
                       rejected_403=stats["rejected"], per_second=per_second)


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args))
    Path(args.out).write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result.model_dump(exclude={"per_second"}), indent=2))
    return 0 if result.max_window_ratio <= 1.0 and result.rejected_403 == 0 else 1
