"""The embedded local stack: Kafka (tansu) -> S3 (SeaweedFS, notifying Kafka) -> Triton (CPU).

`Stack` is used by `python -m streams stack up`, by `make demo` and, unchanged, by the pytest fixtures.
It starts the servers in dependency order on free loopback ports (or the ports configured), waits until
each is really ready, writes the endpoints to a JSON file the other commands read (its keys are
`streams.worker.settings.Settings` field names), and stops everything in reverse order.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.worker.settings import DEFAULT_STATE_DIR, Settings, endpoints_file
from streams.contract.triton_config import CpuVariant
from streams.stack.processes import StackError, free_port, require_free, write_private
from streams.stack.servers import DEFAULT_CPU_VARIANT, KafkaServer, S3Server, TritonServer

SEAWEED_GRPC_OFFSET = 10000
SEAWEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "iceberg", "lance")
BROKER_BUCKET = "tansu"


class StackConfig(BaseSettings):
    """How the embedded stack runs (env prefix ARTROUTE_STACK_). A port of 0 means: pick a free one."""
    model_config = SettingsConfigDict(env_prefix="ARTROUTE_STACK_", extra="ignore")

    run_dir: Path = Field(DEFAULT_STATE_DIR / "stack", description="Logs, data and the endpoints file.")
    model_repository: Path = Field(Path("model_repository"), description="Triton model repository to serve.")
    triton_config: CpuVariant = Field(
        DEFAULT_CPU_VARIANT, description="Which CPU config Triton serves: `cpu-onnx` runs model.onnx with "
                                         "onnxruntime, `cpu` model.pt with torch (both in the python backend).")
    kafka_port: int = Field(0, ge=0, le=65535, description="tansu listener port.")
    s3_port: int = Field(0, ge=0, le=65535, description="SeaweedFS S3 gateway port (+10000 is its gRPC port).")
    triton_grpc_port: int = Field(0, ge=0, le=65535, description="Triton gRPC port.")
    triton_http_port: int = Field(0, ge=0, le=65535, description="Triton HTTP port (health, metrics API).")
    kafka_storage: str = Field("memory://tansu/", description="tansu storage engine URL (ignored when durable).")
    durable: bool = Field(False, description="Keep the broker's data on an S3 store of its own (a second SeaweedFS, "
                          "no notifications) and the objects across restarts: nothing is lost when the broker "
                          "or the stack restarts.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Per-server start-up timeout.")
    with_triton: bool = Field(True, description="Start Triton (off for tests that need only Kafka and S3).")
    keep_s3_data: bool = Field(False, description="Keep SeaweedFS data from a previous run. Off by default: the "
                               "broker keeps events in memory, so old objects would have no events.")


class StackEndpoints(BaseModel):
    """What `stack up` writes: Settings field names plus where things are."""
    kafka_brokers: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool = False
    bucket: str
    intake_topic: str
    triton_url: str | None = None
    triton_http_url: str | None = None
    models: list[str] = []
    run_dir: str
    pid: int
    started_at: float


class Stack:
    def __init__(self, config: StackConfig | None = None, settings: Settings | None = None):
        self.config = config or StackConfig()
        # The stack decides its own endpoints: only names (topics, bucket, credentials) come from settings.
        self.settings = settings or Settings()
        self.run_dir = self.config.run_dir.resolve()
        self.kafka: KafkaServer | None = None
        self.broker_s3: S3Server | None = None
        self.s3: S3Server | None = None
        self.triton: TritonServer | None = None
        self.endpoints: StackEndpoints | None = None

    def _ports(self) -> dict[str, int]:
        c, taken = self.config, set()
        for port, what in ((c.kafka_port, "kafka"), (c.triton_grpc_port, "triton grpc"),
                           (c.triton_http_port, "triton http"), (c.s3_port, "s3")):
            if port:
                require_free(port, what)
                taken.add(port)
        if c.s3_port:
            require_free(c.s3_port + SEAWEED_GRPC_OFFSET, "s3 grpc (s3 port + 10000)")
            taken.add(c.s3_port + SEAWEED_GRPC_OFFSET)
        ports = {
            "kafka": c.kafka_port or free_port(taken=taken),
            "triton_grpc": c.triton_grpc_port or free_port(taken=taken),
            "triton_http": c.triton_http_port or free_port(taken=taken),
            "triton_metrics": free_port(taken=taken),
            "s3": c.s3_port or free_port(SEAWEED_GRPC_OFFSET, taken),
        }
        for comp in SEAWEED_COMPONENTS:
            if comp != "s3":
                ports[f"seaweed_{comp}"] = free_port(SEAWEED_GRPC_OFFSET, taken)
            if c.durable:
                ports[f"broker_{comp}"] = free_port(SEAWEED_GRPC_OFFSET, taken)
        return ports

    def start(self) -> StackEndpoints:
        s, c = self.settings, self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (c.keep_s3_data or c.durable):
            # A re-upload of an object SeaweedFS still holds is an update without a content change, which the
            # intake parser rightly ignores: with a fresh broker, start the store fresh too.
            shutil.rmtree(self.run_dir / "seaweedfs", ignore_errors=True)
        ports = self._ports()
        # Check the repository before starting anything: a bad one is a one-line error, not a hang.
        triton = TritonServer(self.run_dir, c.model_repository, ports["triton_http"], ports["triton_grpc"],
                              ports["triton_metrics"], c.triton_config) if c.with_triton else None
        try:
            storage, env = c.kafka_storage, None
            if c.durable:  # the broker's own store first: the main store needs the broker up before it starts
                self.broker_s3 = S3Server(self.run_dir, {comp: ports[f"broker_{comp}"] for comp in SEAWEED_COMPONENTS},
                                          None, None, s.s3_access_key, s.s3_secret_key.get_secret_value(),
                                          BROKER_BUCKET, name="broker-s3")
                self.broker_s3.start(c.startup_timeout_s)
                storage, env = f"s3://{BROKER_BUCKET}/", self.broker_s3.client_env()
            self.kafka = KafkaServer(self.run_dir, ports["kafka"], storage, env)
            topics = {t: s.topic_partitions for t in (s.intake_topic, s.decisions_topic, s.review_topic,
                                                      s.deadletter_topic)}
            self.kafka.start(c.startup_timeout_s, topics)
            seaweed_ports = {comp: ports["s3"] if comp == "s3" else ports[f"seaweed_{comp}"]
                             for comp in SEAWEED_COMPONENTS}
            self.s3 = S3Server(self.run_dir, seaweed_ports, self.kafka.bootstrap, s.intake_topic,
                               s.s3_access_key, s.s3_secret_key.get_secret_value(), s.bucket)
            self.s3.start(c.startup_timeout_s)
            if triton:
                self.triton = triton
                self.triton.start(c.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.endpoints = StackEndpoints(
            kafka_brokers=self.kafka.bootstrap, s3_endpoint=self.s3.endpoint, s3_access_key=s.s3_access_key,
            s3_secret_key=s.s3_secret_key.get_secret_value(), bucket=s.bucket, intake_topic=s.intake_topic,
            triton_url=self.triton.grpc_url if self.triton else None,
            triton_http_url=self.triton.http_url if self.triton else None,
            models=self.triton.models if self.triton else [], run_dir=str(self.run_dir), pid=os.getpid(),
            started_at=time.time())
        return self.endpoints

    def write_endpoints(self, path: Path | None = None) -> Path:
        """The endpoints file (it holds the S3 secret: owner-only, 0600)."""
        return write_private(path or endpoints_file(), self.endpoints.model_dump_json(indent=2))

    def settings_for_clients(self) -> Settings:
        """Settings pointing at this stack (what a worker or test client should use)."""
        e = self.endpoints
        return self.settings.model_copy(update={
            "kafka_brokers": e.kafka_brokers, "s3_endpoint": e.s3_endpoint, "s3_secure": False,
            "triton_url": e.triton_url or self.settings.triton_url})

    def restart(self, server: str, down_s: float = 0.0) -> float:
        """Kill one server ("kafka", "s3" or "triton") with SIGKILL, wait `down_s`, start it again on the same
        ports and data, and wait until it is ready; returns the seconds it was away."""
        target = {"kafka": self.kafka, "s3": self.s3, "triton": self.triton}[server]
        t0 = time.monotonic()
        target.process.kill()
        time.sleep(down_s)
        if server == "kafka":
            target.process.start()
            target.wait_ready(self.config.startup_timeout_s)
        elif server == "triton":
            target.remove_leftover_shm()
            target.start(self.config.startup_timeout_s)
        else:
            target.start(self.config.startup_timeout_s)
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop in reverse order; safe to call twice and after a failed start."""
        for server in (self.triton, self.s3, self.kafka, self.broker_s3):
            if server is not None:
                server.process.stop()
        if self.triton is not None:
            self.triton.remove_leftover_shm()

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def read_endpoints(path: Path | None = None) -> StackEndpoints:
    path = path or endpoints_file()
    if not path.is_file():
        raise StackError(f"no stack endpoints at {path}: start one with `python -m streams stack up`")
    return StackEndpoints.model_validate(json.loads(path.read_text()))
