"""Print the worker's settings: the ARTROUTE_* environment variables with defaults and meaning (as the
Markdown table the README carries), or with --current the values this environment resolves to."""
from __future__ import annotations

import argparse
import json

from pydantic import SecretStr

from streams.worker.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--current", action="store_true", help="show resolved values (secrets masked) as JSON")


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shown = "" if default is None else str(default)
        rows.append(f"| `ARTROUTE_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    if args.current:
        values = Settings().model_dump(mode="json")
        for k, v in Settings.model_fields.items():
            if v.annotation in (SecretStr, SecretStr | None) and values.get(k):
                values[k] = "********"
        print(json.dumps(values, indent=2))
    else:
        print(settings_table())
    return 0
