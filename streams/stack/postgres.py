"""An embedded PostgreSQL server for the ledger's tests and benchmark: Debian's `postgresql` package.

Why Debian's package and not PyPI's pgserver: it is the same PostgreSQL build a museum's Debian/Ubuntu
server runs, it comes with the system's security updates, CI images install it with one `apt-get`, and
it needs no extra pin in the project. (pgserver bundles its own binaries in a wheel; its build lags the
PostgreSQL releases.)

The server runs from a fresh data directory (`initdb`) on a free loopback port, TCP only (no Unix
socket), SCRAM password authentication for TCP. PostgreSQL refuses to run as root: as root, it runs as
the `postgres` system user (or `nobody`) through `runuser`, with the data directory under /tmp owned by
that user. `ensure_installed()` installs the package with apt-get when the binaries are missing and we
are root (CI); otherwise it raises StackError with the command to run.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from streams.stack.processes import ManagedProcess, StackError, free_port, wait_until

PG_ROOT = Path("/usr/lib/postgresql")


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL bin directory (ARTROUTE_PG_BIN overrides), or None."""
    override = os.environ.get("ARTROUTE_PG_BIN")
    if override:
        return Path(override)
    versions = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if versions:
        return versions[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def ensure_installed() -> Path:
    """The bin directory, installing Debian's postgresql package first when missing (root only)."""
    found = find_bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError("PostgreSQL is not installed: `sudo apt-get install -y postgresql` (Debian/Ubuntu)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "postgresql"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "postgresql"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode == 0 and cmd[1] == "install":
            break
    found = find_bin_dir()
    if found is None:
        raise StackError(f"apt-get install postgresql failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return found


def _server_user() -> str | None:
    """The unprivileged user to run as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise StackError("running as root and neither a `postgres` nor a `nobody` user exists")


class PostgresServer:
    """`postgres` on 127.0.0.1:<port>; `url(db)` gives a SQLAlchemy URL (psycopg 3) with the password."""

    def __init__(self, run_dir: Path, port: int = 0, user: str = "artroute", password: str = "artroute-test",
                 durable: bool = True):
        self.run_dir, self.port, self.user, self.password = run_dir, port or free_port(), user, password
        self.durable = durable
        self.bin = ensure_installed()
        self.os_user = _server_user()
        # Under /tmp, not run_dir: pytest's temp dirs are 0700 root, which the server user cannot enter.
        self.data_root = Path(tempfile.mkdtemp(prefix="artroute-pg-"))
        self.data = self.data_root / "data"
        self.process: ManagedProcess | None = None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.os_user, "--", *argv] if self.os_user else argv

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        pwfile = self.data_root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.os_user:
            info = pwd.getpwnam(self.os_user)
            for p in (self.data_root, pwfile):
                os.chown(p, info.pw_uid, info.pw_gid)
        r = subprocess.run(self._as_server_user([
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "-E", "UTF8",
            "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"]),
            capture_output=True, text=True)
        pwfile.unlink()
        if r.returncode != 0:
            raise StackError(f"postgres initdb failed: {(r.stderr or r.stdout).strip()[-300:]}")
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=100"]
        if not self.durable:  # tests: no fsync (the benchmark measures a durable server)
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.process = ManagedProcess("postgres", self._as_server_user(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *settings]),
            self.run_dir / "logs" / "postgres.log", cwd=self.data_root)
        self.process.start()
        wait_until(self._ready, timeout, "postgres", self.process, interval=0.3)
        return self

    def _ready(self) -> bool:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
            return True

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} password={self.password} dbname={database}"

    def url(self, database: str = "postgres", with_password: bool = True) -> str:
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.data_root, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
