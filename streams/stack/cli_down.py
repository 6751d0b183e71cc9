"""Stop a stack started in the background (`stack up --detach`, or `stack up &`).

Sends SIGTERM to the `stack up` process named in the endpoints file and waits until it has stopped every
server and exited.
"""
from __future__ import annotations

import argparse
import os
import signal
import time

from streams.worker.settings import endpoints_file
from streams.stack.processes import StackError
from streams.stack.stack import read_endpoints


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop (default 60)")


def main(args: argparse.Namespace) -> int:
    path = endpoints_file()
    pid = read_endpoints(path).pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        print(f"stack (pid {pid}) was not running; removed the stale endpoints file")
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stack (pid {pid}) stopped")
            return 0
        time.sleep(0.2)
    raise StackError(f"pid {pid} still running after {args.timeout:.0f}s")
