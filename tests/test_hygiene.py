"""Operational hygiene of the worker and the stack: endpoints on loopback unless configured, secrets owner-only."""
from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.add(addr)
    return found


def test_metrics_and_health_listen_on_loopback_by_default(worker, worker_env):
    port = int(worker_env["ARTROUTE_METRICS_PORT"])
    deadline = time.monotonic() + 60
    while not listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert listening_addresses(port) == {"0100007F"}, "expected 127.0.0.1 only"


def test_files_holding_the_s3_secret_are_owner_only(stack):
    for path in (stack.run_dir / "endpoints.json", stack.run_dir / "seaweedfs" / "s3.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stack.endpoints.s3_secret_key in path.read_text()
