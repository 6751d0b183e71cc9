"""Start the embedded stack: Kafka (tansu), S3 (SeaweedFS) and Triton (CPU), on free loopback ports.

Waits until every server is really ready (Kafka metadata, the S3 bucket, each Triton model), prints the
endpoints and writes them to the endpoints file (default .artroute/stack/endpoints.json, or
$ARTROUTE_STACK_FILE) that the other commands read. Runs until Ctrl-C or SIGTERM, then stops every server.
With --detach it returns once the stack is ready; `python -m streams stack down` stops it.
Logs: <run-dir>/logs/{tansu,seaweedfs,triton}.log (and broker-s3.log with --durable).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from streams.worker.settings import endpoints_file
from pydantic import ValidationError

from streams.contract.cli import invalid_option
from streams.contract.triton_config import CPU_VARIANTS
from streams.stack.processes import StackError
from streams.stack.servers import DEFAULT_CPU_VARIANT
from streams.stack.stack import Stack, StackConfig, read_endpoints


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-repository", type=Path, help="Triton model repository (default: model_repository, "
                                                         "or $ARTROUTE_STACK_MODEL_REPOSITORY)")
    p.add_argument("--run-dir", type=Path, help="logs and data (default: .artroute/stack)")
    p.add_argument("--kafka-port", type=int, help="tansu port (default: a free one)")
    p.add_argument("--s3-port", type=int, help="S3 port; port+10000 must be free too (default: a free one)")
    p.add_argument("--triton-grpc-port", type=int, help="Triton gRPC port (default: a free one)")
    p.add_argument("--triton-http-port", type=int, help="Triton HTTP port (default: a free one)")
    p.add_argument("--triton-config", choices=CPU_VARIANTS, help="Triton's CPU config: cpu-onnx (model.onnx, "
                   f"onnxruntime) or cpu (model.pt, torch) (default: {DEFAULT_CPU_VARIANT}, or "
                   "$ARTROUTE_STACK_TRITON_CONFIG)")
    p.add_argument("--no-triton", action="store_true", help="start only Kafka and S3")
    p.add_argument("--durable", action="store_true",
                   help="keep the broker's data on an S3 store of its own (a second SeaweedFS) and the objects "
                        "across restarts: a broker or stack restart loses nothing")
    p.add_argument("--detach", action="store_true", help="return once ready; stop later with `stack down`")


def config_from_args(args: argparse.Namespace) -> StackConfig:
    overrides = {k: v for k, v in {
        "model_repository": args.model_repository, "run_dir": args.run_dir, "kafka_port": args.kafka_port,
        "s3_port": args.s3_port, "triton_grpc_port": args.triton_grpc_port,
        "triton_http_port": args.triton_http_port, "triton_config": args.triton_config}.items() if v is not None}
    if args.no_triton:
        overrides["with_triton"] = False
    if args.durable:
        overrides["durable"] = True
    try:
        return StackConfig(**overrides)
    except ValidationError as e:
        raise invalid_option(e) from None


def print_endpoints(path: Path) -> None:
    e = read_endpoints(path)
    print(f"kafka      {e.kafka_brokers}   (intake topic {e.intake_topic})")
    print(f"s3         http://{e.s3_endpoint}   bucket {e.bucket}   key {e.s3_access_key}")
    if e.triton_url:
        print(f"triton     grpc {e.triton_url}   http {e.triton_http_url}   models {', '.join(e.models)}")
    print(f"run dir    {e.run_dir}")
    print(f"endpoints  {path}")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    return _detach(args, config) if args.detach else _run(config)


def _run(config: StackConfig) -> int:
    path = endpoints_file()
    if path.is_file():
        try:
            pid = read_endpoints(path).pid
            os.kill(pid, 0)
            raise StackError(f"a stack is already running (pid {pid}); stop it with `python -m streams stack down`")
        except (ProcessLookupError, ValueError):
            pass  # stale file from a stack that died
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(config)
    try:
        stack.start()
        stack.write_endpoints(path)
        print_endpoints(path)
        print("stack is up; Ctrl-C stops it", flush=True)
        while not stop.wait(1.0):
            for server in (stack.broker_s3, stack.kafka, stack.s3, stack.triton):
                if server is not None and server.process.exited():
                    raise StackError(f"{server.process.name} exited unexpectedly: {server.process.last_log_line()}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean stop
        print("stopping the stack ...", flush=True)
        stack.stop()
        path.unlink(missing_ok=True)
        print("stack stopped", flush=True)
    return 0


def _detach(args: argparse.Namespace, config: StackConfig) -> int:
    argv = [sys.executable, "-m", "streams", "stack", "up"] + [a for a in sys.argv[1:]
                                                                if a not in ("stack", "up", "--detach")]
    log = config.run_dir / "logs" / "stack.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    path = endpoints_file()
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 4 * config.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise StackError(lines[-1].split(": error: ", 1)[-1] if lines else f"stack exited ({proc.returncode})")
        if path.is_file() and read_endpoints(path).pid == proc.pid:
            print_endpoints(path)
            print(f"stack is up in the background (pid {proc.pid}); stop it with `python -m streams stack down`")
            return 0
        time.sleep(0.3)
    proc.terminate()
    raise StackError(f"stack not ready in time; see {log}")
