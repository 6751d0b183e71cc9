"""Benchmark the whole pipeline against the model alone, in one run.

1. Starts the embedded stack with the served model, uploads N images (~800 px JPEGs, like the MET's
   web-large renditions) while no worker runs, then starts one worker and measures how fast it drains
   the backlog: pipeline images/s at saturation, and the mean Triton batch (from the worker's metrics).
2. With the worker idle, uploads M more at half that rate: upload->decision latency p50/p99.
3. Runs the same model file in-process with the same runtime (model.pt with torch for --triton-config
   cpu, model.onnx with onnxruntime for cpu-onnx) at the same batch size and thread count, on the idle
   stack before the pipeline phases and again after stopping it: raw model images/s (their mean). Writes
   JSON with the ratio pipeline/raw (target >= 0.85) and mean batch / max batch (target >= 0.9 at
   saturation).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from streams.contract.cli import UserError
from streams.contract.model import IMAGE
from streams.contract.triton_config import CPU_VARIANTS, MODEL_FILES
from streams.orchestration.profile import StageProfile
from streams.orchestration.harness import Upload, WorkerProcess, collect_outcomes, percentile, upload_all, wait_for
from streams.worker.settings import Settings
from streams.stack.processes import StackError, descendants, free_port, proc_stats
from streams.stack.servers import DEFAULT_CPU_VARIANT, check_model_repository
from streams.stack.stack import Stack, StackConfig


class BenchResult(BaseModel):
    images: int
    max_batch: int
    threads: int
    triton_config: str
    model: str
    model_version: str
    input_shape: list[int]
    pipeline_images_per_s: float
    raw_model_images_per_s: float
    raw_model_runs: list[float]
    ratio: float
    mean_batch: float
    batch_fill: float
    latency_images: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    lost: int
    cpu_ms_per_image: dict[str, float]  # first to last decision of the backlog, per process tree
    worker_stage_ms_per_image: dict[str, float] | None = None  # --profile: streams.orchestration.profile
    targets: dict[str, bool]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=384, help="backlog size for the saturation phase (default 384)")
    p.add_argument("--latency-images", type=int, default=64, help="uploads for the latency phase (default 64)")
    p.add_argument("--max-batch", type=int, default=16, help="ARTROUTE_MAX_BATCH for the worker and the raw run")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument("--triton-config", choices=CPU_VARIANTS, default=DEFAULT_CPU_VARIANT,
                   help="what Triton serves: cpu (model.pt, torch) or cpu-onnx (model.onnx, onnxruntime); "
                        f"the raw timing runs the same (default: {DEFAULT_CPU_VARIANT})")
    p.add_argument("--out", type=Path, default=Path("runs/bench/streams.json"), help="JSON result file")
    p.add_argument("--run-dir", type=Path, default=Path("runs/bench/stack"))
    p.add_argument("--profile", action="store_true",
                   help="also split the worker's CPU per image into stages (fetch, decode, batch, publish, commit) "
                        "with py-spy and per-thread CPU over the drain (streams/orchestration/profile.py); "
                        "py-spy's raw samples are left beside --out as .samples.txt")


def make_images(n: int, seed: int = 0, size=(800, 600)) -> list[bytes]:
    from trainer.synthetic import draw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        draw(i % 6, rng, size).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def scrape_batches(metrics_url: str) -> tuple[float, float]:
    """(sum, count) of the worker's artroute_batch_images histogram."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()  # noqa: S310 - loopback
    total = float(re.search(r"^artroute_batch_images_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^artroute_batch_images_count (\S+)$", text, re.M).group(1))
    return total, count


def raw_model_rate(version_dir: Path, config: str, shape: tuple[int, int, int], batch: int, images: int,
                   repeats: int = 3) -> tuple[float, int]:
    """Images/s of the version's model file in this process (median of `repeats` passes over `images`), run
    as the CPU Triton model (trainer/triton_python_model.py) runs it: model.pt with torch, channels_last
    (config cpu), or model.onnx with onnxruntime (config cpu-onnx), with torch's intra-op thread count."""
    import statistics

    import torch

    threads = torch.get_num_threads()
    x = np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)
    if config == "cpu-onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runner does
        session = ort.InferenceSession(str(version_dir / MODEL_FILES[config]), options,
                                       providers=["CPUExecutionProvider"])
        run = lambda: session.run(None, {IMAGE.name: x})  # noqa: E731
    else:
        model = torch.jit.load(str(version_dir / MODEL_FILES[config]), map_location="cpu").eval()
        model = model.to(memory_format=torch.channels_last)
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode():
                return model(xt)
    rates = []
    for _ in range(3):
        run()
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while n < images:
            run()
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), threads


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and all its descendants (from /proc)."""
    stats = proc_stats()
    tree = {pid} | descendants(pid, stats)
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Samples the CPU seconds of named process trees every `interval` s in a thread (epoch-stamped), so the
    CPU spent between two moments (the first and the last decision) can be read off afterwards."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2):
        import threading

        self.pids, self.interval, self.samples = pids, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), {k: cpu_seconds(p) for k, p in self.pids.items()}))
            self._stop.wait(self.interval)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float) -> dict[str, float]:
        a = min(self.samples, key=lambda s: abs(s[0] - t0))[1]
        b = min(self.samples, key=lambda s: abs(s[0] - t1))[1]
        return {k: b[k] - a[k] for k in self.pids}


async def _drain(settings: Settings, keys: list[str], timeout: float) -> tuple[float, float, int]:
    """(first decision time, last decision time, lost) for a backlog."""
    out = await collect_outcomes(settings, keys, timeout=timeout, linger=0.5, stall=120)
    times = sorted(out.received_at[k] for k in keys if k in out.received_at)
    lost = sum(1 for k in keys if not out.settled(k))
    if len(times) < 2:
        raise UserError(f"only {len(times)} of {len(keys)} uploads were decided; see the worker log")
    return times[0], times[-1], lost


def main(args: argparse.Namespace) -> int:
    try:
        models = check_model_repository(args.model_repository, args.triton_config)
    except StackError as e:
        raise StackError(f"{e} (`make demo` exports a quick one)") from None
    version_dir = lambda version: args.model_repository / models[0] / version  # noqa: E731
    run_dir = args.run_dir.resolve()
    stack = Stack(StackConfig(run_dir=run_dir, model_repository=args.model_repository,
                              triton_config=args.triton_config), Settings())
    metrics_port = free_port()
    raw_runs = []
    try:
        stack.start()
        endpoints = stack.write_endpoints(run_dir / "endpoints.json")
        settings = stack.settings_for_clients()
        from streams.worker.inference import TritonModel

        async def info():
            m = TritonModel(settings.triton_url, models[0])
            try:
                return await m.served()
            finally:
                await m.close()
        model_info = asyncio.run(info())
        version = max(model_info.versions, key=int)
        raw = lambda: raw_model_rate(version_dir(version), args.triton_config, model_info.input_shape,  # noqa: E731
                                     args.max_batch, max(args.images, 64))
        # The raw model is timed before and after the pipeline (idle stack) and averaged, so that drift in
        # the machine's speed during the run affects both sides of the ratio alike.
        raw_runs.append(raw())
        backlog = [Upload(f"bench/backlog/{i:05d}.jpg", d) for i, d in enumerate(make_images(args.images))]
        print(f"uploading a backlog of {len(backlog)} images ...", flush=True)
        upload_all(settings, backlog)
        env = {"ARTROUTE_STACK_FILE": str(endpoints), "ARTROUTE_MAX_BATCH": str(args.max_batch),
               "ARTROUTE_BATCH_WINDOW_S": "0.05", "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4",
               "ARTROUTE_METRICS_PORT": str(metrics_port), "ARTROUTE_MODEL_NAME": models[0]}
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        with WorkerProcess(env, log_path=run_dir / "logs" / "bench-worker.log") as worker:
            print("worker draining the backlog ...", flush=True)
            procs = {"worker": worker.proc.pid, "triton": stack.triton.process.pid, "s3": stack.s3.process.pid,
                     "kafka": stack.kafka.process.pid}
            profile = StageProfile(worker.proc.pid, keep=args.out.with_suffix(".samples.txt")) if args.profile else None
            if profile:  # from the first Triton batch on (not the worker's start-up)
                def start_profile() -> None:
                    if wait_for(lambda: _batches(metrics_url) > 0, 600, interval=0.1):
                        profile.start()
                threading.Thread(target=start_profile, daemon=True).start()
            with CpuSampler(procs) as sampler:
                t_first, t_last, lost = asyncio.run(_drain(settings, [u.key for u in backlog], timeout=1800))
            stages = profile.stop(len(backlog)) if profile else None
            rate = (len(backlog) - 1) / max(t_last - t_first, 1e-6)
            cpu_ms = {k: round(1000 * v / (len(backlog) - 1), 2) for k, v in sampler.between(t_first, t_last).items()}
            wait_for(lambda: _ok(metrics_url), 30)
            total, count = scrape_batches(metrics_url)
            mean_batch = total / max(count, 1)
            print(f"pipeline {rate:.1f} images/s, mean batch {mean_batch:.1f}; measuring latency ...", flush=True)
            probe = [Upload(f"bench/latency/{i:05d}.jpg", d) for i, d in enumerate(make_images(args.latency_images, 1))]
            upload_all(settings, probe, rate=max(1.0, rate / 2), threads=2)
            out = asyncio.run(collect_outcomes(settings, [u.key for u in probe], timeout=600, linger=0.5, stall=120))
            latencies = [out.received_at[u.key] - u.uploaded_at for u in probe if u.key in out.received_at]
            lost += sum(1 for u in probe if not out.settled(u.key))
    finally:
        stack.stop()
    raw_runs.append(raw())
    raw_rate, threads = sum(r for r, _ in raw_runs) / len(raw_runs), raw_runs[0][1]
    result = BenchResult(
        images=args.images, max_batch=args.max_batch, threads=threads, triton_config=args.triton_config,
        model=models[0], model_version=version,
        input_shape=list(model_info.input_shape), pipeline_images_per_s=round(rate, 2),
        raw_model_images_per_s=round(raw_rate, 2),
        raw_model_runs=[round(r, 2) for r, _ in raw_runs], ratio=round(rate / raw_rate, 3),
        mean_batch=round(mean_batch, 2),
        batch_fill=round(mean_batch / args.max_batch, 3), latency_images=len(latencies),
        latency_p50_s=percentile(latencies, 0.5, 4), latency_p99_s=percentile(latencies, 0.99, 4), lost=lost,
        cpu_ms_per_image=cpu_ms, worker_stage_ms_per_image=stages,
        targets={"ratio>=0.85": rate / raw_rate >= 0.85, "batch_fill>=0.9": mean_batch / args.max_batch >= 0.9})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(result.model_dump_json(indent=2))
    print(result.model_dump_json(indent=2))
    return 0


def _batches(url: str) -> float:
    try:
        return scrape_batches(url)[1]
    except (OSError, AttributeError):  # not up yet, or no batch observed yet
        return 0.0


def _ok(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200  # noqa: S310
    except OSError:
        return False
