"""A small lazy sub-command dispatcher used by `python -m streams` and `python -m trainer`.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``; the
module's docstring (first line) is the one-line help. Modules are imported only when their command runs
or its ``--help`` is asked for, so ``--help`` at the top stays fast (no torch import).

One error path for every command: a command raises `UserError` (bad input, a missing file, a refused
operation) and the dispatcher prints it once as ``<prog> <command>: error: <first line>`` and exits 2.
Commands do not catch and print errors themselves; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class UserError(Exception):
    """An error the user can fix (bad input, missing file, refused operation): one line, exit status 2.

    Subclass it for a module's own errors (`TaxonomyError`, `ManifestError`, ...) so the dispatcher
    reports them without every command catching them."""


def invalid_option(e: ValidationError, prefix: str = "--") -> UserError:
    """The first error of options validated by a pydantic model, named like the option: `--batch-size: ...`
    (prefix "--", underscores as dashes) or like the setting: `ARTROUTE_MAX_BATCH: ...` (prefix "ARTROUTE_")."""
    err = e.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "value"
    name = f"--{name.replace('_', '-')}" if prefix == "--" else f"{prefix}{name.upper()}"
    return UserError(f"{name}: {err['msg']}")


def dispatch(prog: str, description: str, commands: dict[str, tuple[str, str]],
             argv: Sequence[str] | None = None) -> int:
    """commands: "name" or "group name" -> (module path, one-line help)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    groups: dict[str, dict[str, tuple[str, str]]] = {}
    for name, target in commands.items():
        head, _, tail = name.partition(" ")
        groups.setdefault(head, {})[tail] = target

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for head, members in groups.items():
        if list(members) == [""]:
            sub.add_parser(head, help=members[""][1], add_help=False)
        elif "" in members:  # a command that also heads a group: `bench` and `bench faults`
            others = ", ".join(f"{head} {t}" for t in members if t)
            sub.add_parser(head, help=f"{members[''][1]} (also: {others})", add_help=False)
        else:
            helps = ", ".join(members)
            sub.add_parser(head, help=f"{head} {{{helps}}}", add_help=False)

    if not argv or argv[0] in ("-h", "--help") or argv[0] not in groups:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_help(sys.stderr)
            print(f"\n{prog}: error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0 if argv else 2

    head, rest = argv[0], argv[1:]
    members = groups[head]
    if "" in members and not (rest and rest[0] in members):  # the head's own command
        module_path, help_ = members[""]
        name = head
    elif list(members) != [""]:
        gp = argparse.ArgumentParser(prog=f"{prog} {head}", description=f"{head} commands")
        gsub = gp.add_subparsers(dest="sub", metavar="SUBCOMMAND")
        for tail, (_, help_) in members.items():
            if tail:
                gsub.add_parser(tail, help=help_, add_help=False)
        if not rest or rest[0] not in members:
            gp.print_help(sys.stderr if rest and rest[0] not in ("-h", "--help") else sys.stdout)
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        module_path, help_ = members[rest[0]]
        name, rest = f"{head} {rest[0]}", rest[1:]
    else:
        module_path, help_ = members[""]
        name = head

    module = importlib.import_module(module_path)
    cmd = argparse.ArgumentParser(prog=f"{prog} {name}", description=(module.__doc__ or help_).strip(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(cmd)
    args = cmd.parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except UserError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"{prog} {name}: error: {first}", file=sys.stderr)
        return 2
