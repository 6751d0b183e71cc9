"""Serve an offline fake of the MET Collection API on 127.0.0.1 (real response shapes, generated images).

Records come from ../shared/data/met-api when present (topped up with generated ones), else are generated.
Point a harvest at it with --base-url http://127.0.0.1:PORT/public/collection/v1. Change faults while it
runs: curl -XPOST localhost:PORT/admin/faults -d '{"error_rate": 0.1}'; read server-side counts (rate
limit included) at /admin/stats.
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from trainer.metapi.fake import FakeMetApi, Faults

DEFAULT_MET_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "met-api"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1, 0 = any free one (default: 8080)")
    p.add_argument("--met-api-dir", default=str(DEFAULT_MET_DIR),
                   help="real records to serve, when the directory exists (default: ../shared/data/met-api)")
    p.add_argument("--generated", action="store_true", help="serve generated records only")
    p.add_argument("--min-per-department", type=int, default=40,
                   help="top departments up to this many records with generated ones (default: 40)")
    p.add_argument("--image-size", type=int, default=256,
                   help="long side of generated primaryImageSmall in pixels; primaryImage is 2x (default: 256)")
    p.add_argument("--rate-limit", type=int, default=80, help="API requests per sliding second, 0 = off (default: 80)")
    p.add_argument("--latency-ms", type=float, nargs=2, default=(0.0, 0.0), metavar=("MIN", "MAX"),
                   help="uniform extra latency per request (default: 0 0)")
    p.add_argument("--timeout-rate", type=float, default=0.0, help="fraction of requests that hang (default: 0)")
    p.add_argument("--hang", type=float, default=30.0, help="seconds a hanging request hangs (default: 30)")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500/502/503 (default: 0)")
    p.add_argument("--retry-after", type=int, default=None, help="Retry-After seconds sent with 5xx (default: none)")
    p.add_argument("--truncate-rate", type=float, default=0.0, help="fraction of bodies cut half-way (default: 0)")
    p.add_argument("--withdrawn-rate", type=float, default=0.0, help="fraction of objects that 404 (default: 0)")
    p.add_argument("--missing-image-rate", type=float, default=0.0,
                   help="fraction of public-domain objects whose image 404s (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the injected faults (default: 0)")


def faults_from_args(args: argparse.Namespace) -> Faults:
    return Faults(rate_limit=args.rate_limit, latency_ms=tuple(args.latency_ms), timeout_rate=args.timeout_rate,
                  hang_s=args.hang, error_rate=args.error_rate, retry_after_s=args.retry_after,
                  truncate_rate=args.truncate_rate, withdrawn_rate=args.withdrawn_rate,
                  missing_image_rate=args.missing_image_rate, seed=args.seed)


async def serve(args: argparse.Namespace) -> None:
    met_dir = None if args.generated else Path(args.met_api_dir)
    fake = FakeMetApi(met_api_dir=met_dir, faults=faults_from_args(args), image_long_side=args.image_size,
                      min_per_department=args.min_per_department)
    base = await fake.start("127.0.0.1", args.port)
    print(f"fake MET API: {base}  ({len(fake.records)} objects; admin: {base.split('/public')[0]}/admin/stats)",
          flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(args: argparse.Namespace) -> int:
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0
