"""Remove a local console account from ARTROUTE_CONSOLE_USERS_FILE; a session of that user ends at its
next request. Verdicts the user gave keep their name."""
from __future__ import annotations

import argparse
from pathlib import Path

from streams.console.users import AccountError, UserStore
from streams.ledger.runner import load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="user name")
    p.add_argument("--users-file", type=Path, help="default ARTROUTE_CONSOLE_USERS_FILE")


def main(args: argparse.Namespace) -> int:
    path = args.users_file or load_settings().console_users_file
    if not UserStore(path).remove(args.name):
        raise AccountError(f"no console user {args.name!r} in {path}")
    print(f"removed console user {args.name} from {path}")
    return 0
