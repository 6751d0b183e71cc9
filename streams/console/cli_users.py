"""Add (or replace) a local console account: its role and argon2id password hash go into
ARTROUTE_CONSOLE_USERS_FILE (owner-only). The password is read from --password-file, or from stdin:
typed twice at a terminal, else the first line of what is piped in. Never from the command line (it
would show in `ps` and the shell history).

examples:
  python -m streams console add-user amy --role curator            # asks for the password
  printf '%s\\n' "$PASSWORD" | python -m streams console add-user root --role admin
  python -m streams console add-user amy --password-file /run/secrets/amy
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from streams.console.users import ROLES, AccountError, UserStore
from streams.ledger.runner import load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="user name (recorded in every verdict this user gives)")
    p.add_argument("--role", choices=ROLES, default="curator", help="curator: verdicts; admin: also export and "
                                                                    "re-publish (default curator)")
    p.add_argument("--password-file", type=Path, help="read the password from the first line of this file")
    p.add_argument("--users-file", type=Path, help="default ARTROUTE_CONSOLE_USERS_FILE")
    # Refused with a clear error (and never echoed): without it argparse would take `--password X` as an
    # abbreviation of --password-file and print X in its error.
    p.add_argument("--password", help=argparse.SUPPRESS)
    p.allow_abbrev = False


def read_password(path: Path | None) -> str:
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AccountError(f"--password-file {path}: {e.strerror}") from None
        return text.splitlines()[0] if text else ""
    if sys.stdin.isatty():
        first, second = getpass.getpass("password: "), getpass.getpass("again: ")
        if first != second:
            raise AccountError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def main(args: argparse.Namespace) -> int:
    if args.password is not None:
        raise AccountError("no passwords on the command line (ps and the shell history show them): pipe it to "
                           "stdin or use --password-file")
    path = args.users_file or load_settings().console_users_file
    store = UserStore(path)
    existed = store.add(args.name, args.role, read_password(args.password_file))
    print(f"{'updated' if existed else 'added'} console user {args.name} ({args.role}) in {path}")
    return 0
