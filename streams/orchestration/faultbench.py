"""Fault bench: uploads streaming into the embedded stack while things break; every upload must end as a
decision or a dead letter (lost = 0 in every scenario).

Starts one durable stack (`stack up --durable`: the broker survives a restart) with the served model, then
runs each scenario with its own key prefix, its own workers (`python -m streams worker`, one consumer group
for the whole run, stopped cleanly between scenarios) and a bounded time:

  worker_sigkill_x2    one worker, SIGKILLed twice mid-stream and restarted
  slow_batch_sigkill   120 MP 16-bit scans among photos; the worker SIGKILLed while one decodes
  rebalance            two workers, one SIGKILLed, a third joining (partitions move twice)
  triton_sigstop_20s   Triton stopped (SIGSTOP) for 20 s
  triton_restart       Triton SIGKILLed and started again (model load included)
  store_sigstop_15s    the store (SeaweedFS) stopped for 15 s; uploads wait too
  store_refuse_10s     the worker's store connections refused for 10 s (a TCP proxy)
  broker_restart       the broker (tansu, durable) SIGKILLed and started again
  poison_mix           50 poison messages mixed into 500 uploads
  burst_1000           1,000 uploads at once

Per scenario: uploads, decided, dead_lettered, lost (no outcome at the end), duplicate outcome records,
recovery_s (end of the fault until everything uploaded before it had an outcome), worker peak RSS. A
scenario whose lost is not 0 gets one reconcile pass (`python -m streams reconcile`, grace 0) and reports
`lost_before_reconcile` too. With --soak-s, a soak at 80 % of measured capacity: RSS and lag sampled,
flat within +-10 % after warm-up. JSON to --out; a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from streams.contract.cli import UserError
from streams.orchestration.bench import make_images
from streams.orchestration.faults import (SCAN_SIZE, TcpProxy, paused, peak_rss_bytes, poison_messages, rss_bytes,
                                         scan16_png)
from streams.orchestration.harness import Outcomes, Upload, WorkerProcess, collect_outcomes, upload_all, wait_for
from streams.stack.processes import StackError, free_port
from streams.stack.servers import check_model_repository
from streams.stack.stack import Stack, StackConfig
from streams.worker.publisher import Publisher
from streams.worker.reconcile import KafkaOutcomes, reconcile
from streams.worker.settings import Settings


class ScenarioResult(BaseModel):
    name: str
    fault: str
    uploads: int
    decided: int
    dead_lettered: int
    lost: int
    lost_before_reconcile: int
    duplicates: int
    recovery_s: float | None
    worker_peak_rss_mb: float
    seconds: float
    poison_dead_letters: int | None = None


class SoakResult(BaseModel):
    seconds: float
    capacity_images_per_s: float
    rate_images_per_s: float
    uploads: int
    lost: int
    samples: list[dict]
    rss_flat: bool
    lag_flat: bool
    rss_spread: float
    lag_max: int


class FaultBenchResult(BaseModel):
    scenarios: list[ScenarioResult]
    soak: SoakResult | None = None
    lost_total: int
    model: str
    images_px: list[int]


@dataclass
class Run:
    """One scenario's bookkeeping: its uploads, when its fault ended, the peak RSS of its workers."""
    name: str
    uploads: list[Upload] = field(default_factory=list)
    fault_end: float | None = None
    peak_rss: int = 0


class Bench:
    def __init__(self, stack: Stack, endpoints: Path, images: list[bytes], log_dir: Path):
        self.stack, self.endpoints, self.images, self.log_dir = stack, endpoints, images, log_dir
        self.settings = stack.settings_for_clients()
        self.workers: list[WorkerProcess] = []
        self.run: Run | None = None
        self._sampling = threading.Event()

    # --- workers and uploads ---------------------------------------------------------------------------
    def worker(self, **env: str) -> WorkerProcess:
        full = {"ARTROUTE_STACK_FILE": str(self.endpoints), "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4",
                "ARTROUTE_MAX_BATCH": "16", "ARTROUTE_METRICS_PORT": str(free_port()), "ARTROUTE_LOG_LEVEL": "WARNING",
                "ARTROUTE_MAX_OBJECT_BYTES": str(16 * 2**20), **env}
        w = WorkerProcess(full, log_path=self.log_dir / f"{self.run.name}-worker{len(self.workers)}.log").start()
        self.workers.append(w)
        return w

    def uploads(self, n: int, start: int = 0) -> list[Upload]:
        p = f"faults/{self.run.name}/"
        return [Upload(f"{p}{start + i:05d}.jpg", self.images[(start + i) % len(self.images)]) for i in range(n)]

    def stream(self, uploads: list[Upload], rate: float) -> threading.Thread:
        """Upload in the background at `rate` per second (retrying a PUT while the store is away)."""
        self.run.uploads += uploads

        def go() -> None:
            for i in range(0, len(uploads), max(1, int(rate))):
                t0 = time.monotonic()
                chunk = uploads[i:i + max(1, int(rate))]
                while True:
                    try:
                        upload_all(self.settings, chunk, threads=4)
                        break
                    except Exception:  # noqa: BLE001 - the store is down in some scenarios: try again
                        time.sleep(1.0)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t

    def midstream(self, fault: Callable[[], None], n: int = 200, rate: float = 15, after: int = 40,
                  **worker_env: str) -> None:
        """One worker, n uploads streaming at `rate`; `fault()` once `after` are decided; then the rest."""
        self.worker(**worker_env)
        t = self.stream(self.uploads(n), rate=rate)
        self.decided_at_least(after)
        fault()
        self.run.fault_end = time.time()
        t.join()

    def decided_at_least(self, n: int, timeout: float = 180) -> None:
        keys = [u.key for u in self.run.uploads]
        asyncio.run(collect_outcomes(self.settings, keys, timeout=timeout, linger=0, at_least=min(n, len(keys))))

    def _sample(self) -> None:
        while self._sampling.is_set():
            for w in self.workers:
                if w.proc and w.proc.poll() is None:
                    self.run.peak_rss = max(self.run.peak_rss, peak_rss_bytes(w.proc.pid))
            time.sleep(0.5)

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.proc and w.proc.poll() is None:
                self.run.peak_rss = max(self.run.peak_rss, peak_rss_bytes(w.proc.pid))
            w.stop()
        self.workers = []

    # --- one scenario ----------------------------------------------------------------------------------
    def scenario(self, name: str, fault: str, body: Callable[["Bench"], object], settle_s: float = 300
                 ) -> ScenarioResult:
        """Run `body` (it starts workers, streams uploads, injects its fault), wait for every outcome, stop the
        workers. A body returning a set of Kafka keys (poison messages) gets their dead letters counted."""
        self.run, t0 = Run(name), time.monotonic()
        self._sampling.set()
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            poison_keys = body(self)
            keys = [u.key for u in self.run.uploads]
            out = asyncio.run(collect_outcomes(self.settings, keys, timeout=settle_s, linger=2.0, stall=30))
            lost_before = sum(not out.settled(k) for k in keys)
            if lost_before:  # the reconciler is part of the system: give it one pass
                asyncio.run(reconcile(self.settings, KafkaOutcomes(self.settings), prefix=f"faults/{name}/",
                                      grace_s=0))
                out = asyncio.run(collect_outcomes(self.settings, keys, timeout=120, linger=2.0, stall=60))
            poison = asyncio.run(_count_poison(self.settings, poison_keys)) if isinstance(poison_keys, set) else None
        finally:
            self.stop_workers()
            self._sampling.clear()
            sampler.join()
        return ScenarioResult(
            name=name, fault=fault, uploads=len(keys), decided=sum(k in out.decisions for k in keys),
            dead_lettered=sum(k in out.dead_letters and k not in out.decisions for k in keys),
            lost=sum(not out.settled(k) for k in keys), lost_before_reconcile=lost_before,
            duplicates=sum(len(out.decisions.get(k, [])) + len(out.dead_letters.get(k, [])) - 1
                           for k in keys if out.settled(k)),
            recovery_s=_recovery(self.run, out), worker_peak_rss_mb=round(self.run.peak_rss / 2**20, 1),
            seconds=round(time.monotonic() - t0, 1), poison_dead_letters=poison)


def _recovery(run: Run, out: Outcomes) -> float | None:
    """Seconds from the end of the fault until every upload made before it had its first outcome."""
    if run.fault_end is None:
        return None
    before = [out.received_at[u.key] for u in run.uploads if u.uploaded_at and u.uploaded_at <= run.fault_end
              and u.key in out.received_at]
    return round(max(0.0, max(before, default=run.fault_end) - run.fault_end), 1)


async def _count_poison(settings: Settings, keys: set[str]) -> int:
    """How many of the poison messages (by Kafka key) have a dead letter."""
    from aiokafka import AIOKafkaConsumer
    import json

    c = AIOKafkaConsumer(settings.deadletter_topic, group_id=None, auto_offset_reset="earliest",
                         **settings.kafka_client_kwargs())
    await c.start()
    found, idle = set(), time.monotonic()
    try:
        while time.monotonic() - idle < 3.0:
            for msgs in (await c.getmany(timeout_ms=500, max_records=10000)).values():
                for m in msgs:
                    idle = time.monotonic()
                    k = json.loads(m.value).get("original_key")
                    if k in keys:
                        found.add(k)
    finally:
        await c.stop()
    return len(found)


# --- the scenarios -----------------------------------------------------------------------------------------

def worker_sigkill_x2(b: Bench) -> None:
    w = b.worker()
    t = b.stream(b.uploads(240), rate=20)
    for n in (60, 150):
        b.decided_at_least(n)
        w.kill()
        time.sleep(1.0)
        w.start()
        b.run.fault_end = time.time()
    t.join()


def slow_batch_sigkill(b: Bench) -> None:
    scan = scan16_png(*SCAN_SIZE, colour=True)
    w = b.worker()
    photos = b.uploads(80)
    scans = [Upload(f"faults/{b.run.name}/scan-{i}.png", scan, "image/png") for i in range(2)]
    t = b.stream(photos[:30], rate=20)
    t.join()
    b.decided_at_least(10)
    b.stream(scans, rate=2).join()
    b.stream(photos[30:], rate=20)
    time.sleep(2.5)  # the fast batches overtake the scans, and are committed
    w.kill()
    w.start()
    b.run.fault_end = time.time()


def rebalance(b: Bench) -> None:
    a, _ = b.worker(), b.worker()
    t = b.stream(b.uploads(240), rate=20)
    b.decided_at_least(60)
    a.kill()
    b.decided_at_least(140)
    b.worker()
    b.run.fault_end = time.time()
    t.join()


def _pause(server, seconds: float) -> None:
    with paused(server.process.pid):
        time.sleep(seconds)


def triton_sigstop_20s(b: Bench) -> None:
    b.midstream(lambda: _pause(b.stack.triton, 20))


def triton_restart(b: Bench) -> None:
    b.midstream(lambda: b.stack.restart("triton"))


def store_sigstop_15s(b: Bench) -> None:
    b.midstream(lambda: _pause(b.stack.s3, 15))


def store_refuse_10s(b: Bench) -> None:
    def refuse() -> None:
        proxy.refuse()
        time.sleep(10)
        proxy.restore()

    with TcpProxy(b.stack.endpoints.s3_endpoint) as proxy:
        b.midstream(refuse, ARTROUTE_S3_ENDPOINT=proxy.address)
        b.decided_at_least(len(b.run.uploads), timeout=300)  # before the proxy goes away


def broker_restart(b: Bench) -> None:
    b.midstream(lambda: b.stack.restart("kafka", down_s=2.0), after=50)


def poison_mix(b: Bench) -> set[str]:
    b.worker()
    ups = b.uploads(500)
    poison = poison_messages(50, b.settings.bucket, f"faults/{b.run.name}/poison/")
    t = b.stream(ups, rate=50)

    async def inject() -> None:
        async with Publisher(b.settings.model_copy(update={"kafka_max_message_bytes": 4 * 2**20})) as pub:
            for key, value in poison:
                await pub.send_all([(b.settings.intake_topic, key, value)])
                await asyncio.sleep(0.2)
    asyncio.run(inject())
    t.join()
    return {k.decode() for k, _ in poison}


def burst_1000(b: Bench) -> None:
    b.worker()
    ups = b.uploads(1000)
    b.run.uploads += ups
    upload_all(b.settings, ups, threads=8)


SCENARIOS: dict[str, tuple[str, Callable]] = {
    "worker_sigkill_x2": ("worker SIGKILL x2, restarted", worker_sigkill_x2),
    "slow_batch_sigkill": ("slow 16-bit scans + SIGKILL", slow_batch_sigkill),
    "rebalance": ("2 workers, 1 SIGKILLed, a 3rd joins", rebalance),
    "triton_sigstop_20s": ("Triton SIGSTOP 20 s", triton_sigstop_20s),
    "triton_restart": ("Triton SIGKILL + restart", triton_restart),
    "store_sigstop_15s": ("store SIGSTOP 15 s", store_sigstop_15s),
    "store_refuse_10s": ("store refusing connections 10 s", store_refuse_10s),
    "broker_restart": ("broker SIGKILL + restart (durable)", broker_restart),
    "poison_mix": ("50 poison messages in 500 uploads", poison_mix),
    "burst_1000": ("1,000 uploads at once", burst_1000),
}


# --- soak ------------------------------------------------------------------------------------------------

class OutcomeTail:
    """Follows the outcome topics in a thread of its own and counts the keys under a prefix that have one."""

    def __init__(self, settings: Settings, prefix: str):
        self.settings, self.prefix = settings, prefix
        self.settled: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._follow()), daemon=True)

    async def _follow(self) -> None:
        import json

        from aiokafka import AIOKafkaConsumer

        s = self.settings
        c = AIOKafkaConsumer(s.decisions_topic, s.deadletter_topic, group_id=None, auto_offset_reset="earliest",
                             **s.kafka_client_kwargs())
        await c.start()
        try:
            while not self._stop.is_set():
                for msgs in (await c.getmany(timeout_ms=500, max_records=10000)).values():
                    for m in msgs:
                        key = json.loads(m.value).get("key") or ""
                        if key.startswith(self.prefix):
                            self.settled.add(key)
        finally:
            await c.stop()

    def __enter__(self) -> "OutcomeTail":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def soak(b: Bench, seconds: float, warmup: float = 0.2, every_s: float = 10.0) -> SoakResult:
    """Capacity from draining a backlog of 300; then uploads at 80 % of it for `seconds`, sampling the
    worker's RSS and the lag (uploaded, no outcome yet) every `every_s`; flat = within +-10 % after warm-up
    (RSS) and lag never above 2 x `every_s` of uploads."""
    b.run = Run("soak-capacity")
    backlog = b.uploads(300)
    upload_all(b.settings, backlog, threads=8)
    b.run.uploads = backlog
    w = b.worker()
    t0 = time.monotonic()
    b.decided_at_least(len(backlog), timeout=600)
    capacity = len(backlog) / (time.monotonic() - t0)  # includes the worker's start: a lower bound
    rate = max(1.0, 0.8 * capacity)
    b.run = Run("soak")
    samples, start = [], time.monotonic()
    with OutcomeTail(b.settings, "faults/soak/") as tail:
        t = b.stream(b.uploads(int(rate * seconds)), rate=rate)
        while t.is_alive():
            time.sleep(every_s)
            uploaded = sum(1 for u in b.run.uploads if u.uploaded_at)
            rss = rss_bytes(w.proc.pid) if w.proc.poll() is None else 0
            samples.append({"t_s": round(time.monotonic() - start), "rss_mb": round(rss / 2**20, 1),
                            "lag": uploaded - len(tail.settled)})
        keys = [u.key for u in b.run.uploads]
        wait_for(lambda: len(tail.settled) >= len(keys), 300, interval=1.0)
        lost = sum(k not in tail.settled for k in keys)
    b.stop_workers()
    steady = samples[int(len(samples) * warmup):] or samples
    rss = [s["rss_mb"] for s in steady]
    mean = statistics.mean(rss) if rss else 0.0
    spread = (max(rss) - min(rss)) / mean / 2 if mean else 0.0
    lag_max = max((s["lag"] for s in steady), default=0)
    return SoakResult(seconds=round(time.monotonic() - start, 1), capacity_images_per_s=round(capacity, 1),
                      rate_images_per_s=round(rate, 1), uploads=len(keys), lost=lost, samples=samples,
                      rss_flat=spread <= 0.10, rss_spread=round(spread, 3), lag_flat=lag_max <= 2 * rate * every_s,
                      lag_max=lag_max)


# --- CLI -------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset (default: all): {', '.join(SCENARIOS)}")
    p.add_argument("--soak-s", type=float, default=0.0,
                   help="also soak at 80%% of measured capacity for this many seconds (30 min: 1800; 0: no soak)")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument("--image-px", type=int, nargs=2, default=[320, 240], metavar=("W", "H"),
                   help="size of the uploaded photos (default 320 240)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/faults.json"), help="JSON result file")
    p.add_argument("--run-dir", type=Path, default=Path("runs/bench/faults-stack"))


def table(result: FaultBenchResult) -> str:
    rows = ["| scenario | fault | uploads | decided | dead-lettered | lost | duplicates | recovery s | worker peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in result.scenarios:
        lost = f"{s.lost}" + (f" ({s.lost_before_reconcile} before reconcile)" if s.lost_before_reconcile else "")
        rows.append(f"| {s.name} | {s.fault} | {s.uploads} | {s.decided} | {s.dead_lettered} | {lost} | "
                    f"{s.duplicates} | {'' if s.recovery_s is None else s.recovery_s} | {s.worker_peak_rss_mb} |")
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SCENARIOS]:
        raise UserError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    try:
        models = check_model_repository(args.model_repository)
    except StackError as e:
        raise UserError(f"{e} (`make demo` exports a quick one)") from e
    run_dir = args.run_dir.resolve()
    stack = Stack(StackConfig(run_dir=run_dir, model_repository=args.model_repository, durable=True),
                  Settings(kafka_session_timeout_s=4.0, consumer_group="artroute-faultbench"))
    results, soak_result = [], None
    try:
        stack.start()
        endpoints = stack.write_endpoints(run_dir / "endpoints.json")
        bench = Bench(stack, endpoints, make_images(32, size=tuple(args.image_px)), run_dir / "logs")
        for name in names:
            fault, body = SCENARIOS[name]
            print(f"scenario {name}: {fault} ...", flush=True)
            result = bench.scenario(name, fault, body)
            print(f"  {result.model_dump_json()}", flush=True)
            results.append(result)
        if args.soak_s:
            print(f"soak for {args.soak_s:.0f}s at 80% of capacity ...", flush=True)
            soak_result = soak(bench, args.soak_s)
    finally:
        stack.stop()
    result = FaultBenchResult(scenarios=results, soak=soak_result, model=models[0], images_px=args.image_px,
                              lost_total=sum(s.lost for s in results) + (soak_result.lost if soak_result else 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(result.model_dump_json(indent=2))
    print(table(result))
    return 0 if result.lost_total == 0 else 1
