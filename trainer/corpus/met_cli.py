"""Harvest a department-labelled training corpus from the MET Collection API.

Keeps public-domain objects with an image, samples up to N per department (seeded, stratified,
reproducible), downloads each image, checks that it decodes, and writes OUT/manifest.jsonl (label = the
department's canonical name) and OUT/corpus.json; see docs/manifest.md. Resumable: rerun the same
command after a crash or Ctrl-C and it continues where it stopped. Never more than 80 API requests/s.

example: python -m trainer corpus met --out corpora/met --per-department 200
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from pydantic import ValidationError

from streams.contract.cli import invalid_option
from trainer.corpus.common import CorpusInputError, jsonable_args
from trainer.corpus.met import HarvestConfig, format_summary, harvest
from trainer.metapi.client import DEFAULT_BASE_URL, MAX_RPS, ClientConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="corpus directory to create or resume (required)")
    p.add_argument("--departments", nargs="+", default=[], metavar="DEPT",
                   help="department ids or names (quote names with spaces); default: all 19")
    p.add_argument("--per-department", type=int, default=100, metavar="N",
                   help="images per department at most (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the train/val/test split hash (default: 0)")
    p.add_argument("--original", action="store_true",
                   help="download primaryImage (full size) instead of primaryImageSmall (default: small)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"API root (default: {DEFAULT_BASE_URL})")
    p.add_argument("--rps", type=int, default=MAX_RPS,
                   help=f"API requests per second, 1..{MAX_RPS} (default: {MAX_RPS})")
    p.add_argument("--image-rps", type=int, default=MAX_RPS,
                   help=f"image downloads per second, 1..{MAX_RPS} (default: {MAX_RPS})")
    p.add_argument("--concurrency", type=int, default=64,
                   help="objects in flight at once (default: 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP attempt (default: 30)")
    p.add_argument("--retries", type=int, default=6, help="retries per request (default: 6)")
    p.add_argument("--backoff", type=float, default=0.5,
                   help="first retry backoff in seconds, doubling, with jitter (default: 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> HarvestConfig:
    client = ClientConfig(base_url=args.base_url, rps=args.rps, image_rps=args.image_rps,
                          timeout_s=args.timeout, retries=args.retries, backoff_s=args.backoff)
    return HarvestConfig(out=Path(args.out), departments=args.departments, per_department=args.per_department,
                         seed=args.seed, split_seed=args.split_seed, original=args.original,
                         concurrency=args.concurrency, progress=not args.no_progress, client=client)


def main(args: argparse.Namespace) -> int:
    if str(args.out).startswith("s3://"):
        raise CorpusInputError("--out s3://… is not supported yet; harvest to a directory and copy it")
    try:
        cfg = config_from_args(args)
    except ValidationError as e:
        raise invalid_option(e) from None
    rows, summaries = asyncio.run(harvest(cfg, jsonable_args(args)))
    print(format_summary(summaries, rows))
    print(f"wrote {cfg.out / 'manifest.jsonl'} and {cfg.out / 'corpus.json'}")
    return 0
