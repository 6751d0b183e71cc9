"""Child processes of the embedded stack: start with a log file, wait until ready, stop without orphans."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from streams.contract.cli import UserError

PR_SET_PDEATHSIG = 1


class StackError(UserError):
    """A configuration or start-up problem, reported to the user as one line."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the stack's own process is killed (even with SIGKILL), the kernel sends SIGTERM to this child:
    # no server outlives the stack that started it.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` readable by its owner only (0600, also while it is written): secrets inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # whatever the umask
    tmp.replace(path)
    return path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def require_free(port: int, what: str) -> None:
    if not port_is_free(port):
        raise StackError(f"port {port} for {what} is already taken (is another stack running? "
                         f"`python -m streams stack down`, or choose other ports)")


def free_port(grpc_offset: int | None = None, taken: set[int] | None = None) -> int:
    """A free loopback port; with grpc_offset, one whose port+offset is free too (SeaweedFS's gRPC ports)."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in taken:
            continue
        if grpc_offset is not None:
            if port + grpc_offset > 65535 or port + grpc_offset in taken or not port_is_free(port + grpc_offset):
                continue
            taken.add(port + grpc_offset)
        taken.add(port)
        return port
    raise StackError("no free loopback port found")


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: "ManagedProcess | None" = None,
               interval: float = 0.2) -> None:
    """Poll check() until it returns True; fail fast with the log's last line if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.exited():
            raise StackError(f"{what} exited during start-up (code {proc.returncode}): {proc.last_log_line()} "
                             f"— log: {proc.log_path}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        time.sleep(interval)
    tail = f": {proc.last_log_line()} — log: {proc.log_path}" if proc else ""
    raise StackError(f"{what} not ready after {timeout:.0f}s{tail}")


class ManagedProcess:
    """One server process in its own process group, stdout+stderr to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None):
        self.name, self.argv, self.log_path, self.cwd, self.env = name, argv, log_path, cwd, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if not Path(self.argv[0]).exists():
            raise StackError(f"{self.name}: binary missing: {self.argv[0]} (run `make venv` to install it)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.cwd, env=self.env, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash), and wait until it is gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.05)
        self.proc.poll()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after timeout."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                self.proc.poll()
                time.sleep(0.1)
            if not _group_alive(pgid):
                break
        self.proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts as a group member until reaped; reap if it is ours.
    try:
        pid, _ = os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pid = 0
    if pid == pgid:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
    return _members_alive(pgid)


def _members_alive(pgid: int) -> bool:
    """True if any non-zombie process is in the group."""
    return any(f[2] == str(pgid) and f[0] != "Z" for f in proc_stats().values())


def proc_stats() -> dict[int, list[str]]:
    """/proc/<pid>/stat of every process, the fields after the command name: [0] state, [1] ppid,
    [2] pgid, [11] utime, [12] stime (clock ticks)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    return stats


def descendants(pid: int, stats: dict[int, list[str]] | None = None) -> set[int]:
    """Every process below pid (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for p, fields in (stats if stats is not None else proc_stats()).items():
        children.setdefault(int(fields[1]), []).append(p)
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out
