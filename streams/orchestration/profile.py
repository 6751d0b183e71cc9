"""Where the worker's CPU goes while it drains a backlog: per stage, in ms per image (`streams bench --profile`).

Two measurements of the worker process, over the same drain:

* the CPU time of each of its threads (/proc/<pid>/task/*/stat, named by `py-spy dump`): the decode pool's
  threads are all `decode`; the others but the main one (faust's consumer thread, which fetches the intake
  messages and sends the offset commits, and gRPC's poller) are counted as `batch`;
* py-spy samples of the main thread (`py-spy record --nonblocking`, idle waits dropped), which split its CPU
  time into the stages by the code each sample is in, nearest the leaf first:

  fetch    the S3 GET (streams.worker.s3http, store, loader, the byte budget, health)
  decode   handing images to the decode pool (the decoding itself is the decode threads')
  publish  decide, dead letters, serialising, the Kafka producer, metrics, the retry wrapper
  commit   acks (streams.worker.acks) and faust's offset commits
  batch    the rest of faust and its consumer (fetching intake messages, take_events), parsing,
           np.stack and the Triton gRPC call
  loop     the event loop itself (no frame of the above in the sample)
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

STAGES = ("fetch", "decode", "batch", "publish", "commit", "loop")
_SPECIFIC = [(name, re.compile(rx)) for name, rx in (
    ("commit", r"Consumer\.(commit|force_commit|_commit\w*|maybe_commit)|acks\.py|_new_offset|Event\.ack|Message\.ack"),
    ("fetch", r"s3http\.py|streams/worker/store\.py|minio/|urllib3/|budget\.py|health\.py|loader\.py|"
              r"_read_ready__get_buffer"),
    ("decode", r"imaging\.py|run_in_executor|concurrent/futures"),
    ("publish", r"decisions\.py|deadletters\.py|publisher\.py|aiokafka/producer|aiokafka/record|_publish \(|"
                r"model_dump_json|prometheus_client|_decide \(|retry\.py|tenacity"),
)]
_BATCH = re.compile(r"faust/|mode/|aiokafka/|tritonclient|grpc|scoring\.py|inference\.py|contracts\.py|numpy|"
                    r"router\.py|streams/worker/events\.py|streams/worker/app\.py")
_IDLE = re.compile(r"EpollSelector\.select|select \(selectors|_worker \(concurrent|wait \(threading|"
                   r"_wait_for_tstate_lock")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    tck, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tck
    return out


def main_thread_stages(raw: str) -> Counter:
    """py-spy raw samples ("thread;frame;...;frame count" lines) -> main-thread samples per stage."""
    counts: Counter = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0] or not n.isdigit():
            continue
        frames = frames[1:]
        if frames and _IDLE.search(frames[-1]):
            continue
        stage = next((name for f in reversed(frames) for name, rx in _SPECIFIC if rx.search(f)), None)
        if stage is None:
            stage = "batch" if any(_BATCH.search(f) for f in frames[-6:]) else "loop"
        counts[stage] += int(n)
    return counts


class StageProfile:
    """`start()` when the drain begins, `stop(images)` when it ends: ms of worker CPU per image by stage."""

    def __init__(self, pid: int, rate: int = 200, keep: Path | None = None):
        self.pid, self.rate, self.keep = pid, rate, keep  # keep: where to leave py-spy's raw samples
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self._dir = Path(tempfile.mkdtemp(prefix="artroute-profile-"))
        self._proc: subprocess.Popen | None = None
        self._cpu0: dict[int, float] = {}

    def start(self) -> None:
        self._cpu0, self._t0 = thread_cpu(self.pid), time.time()
        self._proc = subprocess.Popen([self.py_spy, "record", "-p", str(self.pid), "-r", str(self.rate),
                                       "--threads", "--nonblocking", "--format", "raw",
                                       "-o", str(self._dir / "samples.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, images: int) -> dict[str, float] | None:
        """The breakdown (None when the drain ended before `start`)."""
        if self._proc is None:
            return None
        cpu1 = thread_cpu(self.pid)
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
        self._proc.wait(60)
        dump = subprocess.run([self.py_spy, "dump", "-p", str(self.pid), "--nonblocking"],
                              capture_output=True, text=True, timeout=60).stdout
        names = {int(m.group(1), 0): m.group(2)
                 for m in re.finditer(r"Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): \"([^\"]*)\"", dump)}
        by_thread: Counter = Counter()
        for tid, cpu in cpu1.items():
            by_thread[re.sub(r"_\d+$", "", names.get(tid, "native"))] += cpu - self._cpu0.get(tid, 0.0)
        samples = main_thread_stages((self._dir / "samples.txt").read_text())
        if self.keep is not None:  # for a flame graph (e.g. flamegraph.pl, speedscope) or a closer look
            shutil.copyfile(self._dir / "samples.txt", self.keep)
        shutil.rmtree(self._dir, ignore_errors=True)
        main, total = by_thread.pop("MainThread", 0.0), sum(samples.values()) or 1
        ms = dict.fromkeys(STAGES, 0.0)
        for stage, n in samples.items():
            ms[stage] += 1000 * main * n / total / images
        ms["decode"] += 1000 * by_thread.pop("decode", 0.0) / images
        ms["batch"] += 1000 * sum(by_thread.values()) / images
        return {k: round(v, 2) for k, v in ms.items()}
