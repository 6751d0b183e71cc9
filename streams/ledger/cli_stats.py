"""Print the ledger's counts and live accuracy per model version and department (JSON).

Counts: objects by current outcome (decided, in review, audit, pending, reviewed, dead letters), decision
and verdict rows. Accuracy: coverage, agreement with curators (reviewed and audit sample), top-3 hit
rate, review backlog and the age of its oldest item (docs/ledger.md). ARTROUTE_LEDGER_URL names the
database.
"""
from __future__ import annotations

import argparse
import json

from streams.ledger.runner import load_settings
from streams.ledger.service import Ledger


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", help="counts only for object keys with this prefix")
    p.add_argument("--model-name", help="accuracy only for this model")


def main(args: argparse.Namespace) -> int:
    ledger = Ledger.open(load_settings())
    out = {"counts": ledger.counts(args.prefix).model_dump(),
           "stats": ledger.stats(args.model_name).model_dump(mode="json")}
    print(json.dumps(out, indent=2))
    return 0
