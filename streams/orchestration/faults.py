"""Faults to inject on the embedded stack, for the fault bench and the tests: a TCP proxy that can refuse
connections (a store or Triton that is away), stopping and continuing a server (SIGSTOP: it accepts
connections but never answers), a memory limit for a worker (a real cgroup, as Kubernetes sets one), and
a worker's peak memory; and hostile inputs (huge 16-bit scans, bomb headers, poison messages). Loopback only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path

from streams.stack.processes import descendants


class TcpProxy:
    """127.0.0.1:port -> target. `refuse()` closes the listener and resets every open connection (clients
    get "connection refused"), `restore()` listens again on the same port."""

    def __init__(self, target: str, port: int = 0):
        host, _, tport = target.rpartition(":")
        self.target = (host or "127.0.0.1", int(tport))
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refusing = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "TcpProxy":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._listener, self.refusing = s, False
        threading.Thread(target=self._accept, args=(s,), daemon=True, name="proxy-accept").start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True, name="proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with self._lock:
                    self._conns.discard(s)
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def refuse(self) -> None:
        """From now on: connection refused; open connections are reset."""
        self.refusing = True
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(): a plain close() would leave the socket listening
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            _reset(c)

    def restore(self) -> None:
        if self._listener is None:
            self.start()

    def stop(self) -> None:
        self.refuse()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reset(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        s.close()
    except OSError:
        pass


@contextmanager
def paused(pid: int):
    """SIGSTOP a server's process group while in the block (it keeps its sockets but answers nothing)."""
    pgid = os.getpgid(pid)
    os.killpg(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pgid, signal.SIGCONT)


# --- memory ----------------------------------------------------------------------------------------------

def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of a process and its descendants, summed; 0 if it is gone."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int:
    """VmRSS (resident set now) of a process and its descendants, summed; 0 if it is gone."""
    return _status_bytes(pid, "VmRSS")


def _status_bytes(pid: int, field: str) -> int:
    total = 0
    for p in {pid} | descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class MemoryLimit:
    """A memory cgroup with a hard limit that processes can be moved into (cgroup v2, else v1).

    `available()` says whether this machine lets us create one (root, a writable cgroup hierarchy).
    `add(pid)` moves a process in; the kernel OOM-kills inside the group once it uses more than the limit,
    exactly as a container limit does. `peak_bytes()` is the group's high-water mark.
    """

    def __init__(self, limit_bytes: int, name: str | None = None):
        self.limit = limit_bytes
        self.name = name or f"artroute-{uuid.uuid4().hex[:8]}"
        self.path: Path | None = None
        self.version: int | None = None

    @staticmethod
    def _roots() -> list[tuple[int, Path]]:
        roots = []
        for v2 in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            if (v2 / "cgroup.controllers").is_file() and "memory" in (v2 / "cgroup.controllers").read_text():
                roots.append((2, v2))
        if (Path("/sys/fs/cgroup/memory") / "memory.limit_in_bytes").is_file():
            roots.append((1, Path("/sys/fs/cgroup/memory")))
        return roots

    @classmethod
    def available(cls) -> bool:
        probe = cls(2**30)
        try:
            probe.create()
        except OSError:
            return False
        probe.remove()
        return True

    def create(self) -> "MemoryLimit":
        errors = []
        for version, root in self._roots():
            path = root / self.name
            try:
                path.mkdir()
                if version == 2:
                    (path / "memory.max").write_text(str(self.limit))
                    (path / "memory.swap.max").write_text("0") if (path / "memory.swap.max").exists() else None
                else:
                    (path / "memory.limit_in_bytes").write_text(str(self.limit))
                    if (path / "memory.memsw.limit_in_bytes").exists():
                        try:
                            (path / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
                        except OSError:
                            pass
            except OSError as e:
                errors.append(e)
                if path.exists():
                    try:
                        path.rmdir()
                    except OSError:
                        pass
                continue
            self.path, self.version = path, version
            return self
        raise OSError(f"cannot create a memory cgroup: {errors or 'no cgroup hierarchy with memory'}")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak_bytes(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        f = self.path / name
        return int(f.read_text()) if f.exists() else 0

    def oom_kills(self) -> int:
        if self.version == 2:
            events = dict(line.split() for line in (self.path / "memory.events").read_text().splitlines())
            return int(events.get("oom_kill", 0))
        control = dict(line.split() for line in (self.path / "memory.oom_control").read_text().splitlines())
        return int(control.get("oom_kill", 0))

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)  # processes still leaving

    def __enter__(self) -> "MemoryLimit":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()


# --- hostile inputs --------------------------------------------------------------------------------------

SCAN_SIZE = (10900, 11000)
"""~120 MP: just under the default pixel guard (ARTROUTE_MAX_IMAGE_PIXELS)."""


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A tiny PNG whose header declares width x height, with almost no pixel data behind it."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b""))


def scan16_png(width: int, height: int, colour: bool = False) -> bytes:
    """A 16-bit greyscale (or RGBA) PNG of width x height, every row Paeth-filtered, so that the decoder
    unfilters every byte as it does for a real scan: at 120 MP 0.26 MB (RGBA 4 MB) and seconds to decode."""
    row = bytes([4]) + bytes(width * (8 if colour else 2))
    z = zlib.compressobj(1 if colour else 6)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 6 if colour else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")



def poison_messages(n: int, bucket: str, prefix: str) -> list[tuple[bytes, bytes]]:
    """n hostile intake messages (Kafka key, value), cycling through the kinds that broke the worker once:
    JSON nested 5,000 deep, a lone surrogate escape, NaN, binary and zero bytes, a 2 MB unterminated event, a
    message of 50 records for missing objects. Keys are `poison-<i>` (the dead letters' original_key)."""
    record = {"eventName": "s3:ObjectCreated:Put", "eventTime": "2025-01-01T00:00:00Z",
              "s3": {"bucket": {"name": bucket}, "object": {"key": "", "size": 10, "eTag": "0" * 32}}}

    def records(i: int, k: int) -> bytes:
        rs = [json.loads(json.dumps(record)) for _ in range(k)]
        for j, r in enumerate(rs):
            r["s3"]["object"]["key"] = f"{prefix}missing-{i}-{j}.jpg"
        return json.dumps({"Records": rs}).encode()

    kinds = [lambda i: b"[" * 5000,
             lambda i: records(i, 1).replace(b'missing-', b'\\ud800-'),
             lambda i: b'{"Records": [{"eventName": NaN}]}',
             lambda i: bytes(range(256)) * 4,
             lambda i: b"\x00" * 64,
             lambda i: b'{"Records": [{"junk": "' + b"x" * (2 * 2**20),
             lambda i: records(i, 50)]
    return [(f"poison-{i}".encode(), kinds[i % len(kinds)](i)) for i in range(n)]
