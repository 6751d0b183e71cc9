"""Headless Chromium for the console's browser tests and benchmark: Debian's `chromium` package, driven
by Playwright for Python (`executable_path`; never `playwright install`, whose download needs the
internet). `chromium_path()` installs the package with apt-get when it is missing and we are root (CI),
as streams/stack/postgres.py does for PostgreSQL; otherwise it raises StackError with the command."""
from __future__ import annotations

import os
import shutil
import subprocess

from streams.stack.processes import StackError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError("Chromium is not installed: `sudo apt-get install -y chromium` (Debian/Ubuntu)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = None
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode == 0 and cmd[1] == "install":
            break
    found = shutil.which("chromium")
    if not found:
        raise StackError(f"apt-get install chromium failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return found


async def launch(playwright):
    """A headless Chromium browser (Playwright async API) from the system's package."""
    return await playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
