"""A real worker process (`python -m streams worker`) on the test stack, and image makers for uploads."""
from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from PIL import Image

from streams.orchestration.harness import WorkerProcess, collect_outcomes
from streams.stack.processes import free_port
from trainer.synthetic import draw

MAX_OBJECT_BYTES = 2 * 2**20


def jpeg(k: int, seed: int, size=(80, 60), mode="RGB", fmt="JPEG") -> bytes:
    img = draw(k, np.random.default_rng(seed), size)
    buf = io.BytesIO()
    (img.convert(mode) if mode != "RGB" else img).save(buf, fmt)
    return buf.getvalue()


def unique_prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}/"


@pytest.fixture(scope="session")
def worker_env(stack, tmp_path_factory) -> dict[str, str]:
    return {"ARTROUTE_STACK_FILE": str(stack.run_dir / "endpoints.json"),
            "ARTROUTE_KAFKA_SESSION_TIMEOUT_S": "4", "ARTROUTE_MAX_BATCH": "8", "ARTROUTE_BATCH_WINDOW_S": "0.1",
            "ARTROUTE_MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES), "ARTROUTE_LOG_LEVEL": "INFO",
            "ARTROUTE_METRICS_PORT": str(free_port())}


@pytest.fixture(scope="session")
def worker(stack, worker_env, tmp_path_factory):
    """The session's worker; tests may kill and restart it (same consumer group)."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    w = WorkerProcess(worker_env, log_path=log).start()
    yield w
    w.stop()


async def outcomes_for(settings, keys, timeout=120.0, linger=1.5):
    return await collect_outcomes(settings, keys, timeout=timeout, linger=linger)


async def own_topics(name: str, settings, model_name: str | None = None) -> tuple:
    """(settings, worker env) for a worker of its own: its own consumer group and topics, so it sees only the
    events a test publishes for it (the filer's notifications go to the main intake topic)."""
    from streams.stack.servers import create_topics

    env = {f"ARTROUTE_{kind.upper()}_TOPIC": f"{name}.{kind}" for kind in ("intake", "decisions", "review", "deadletter")}
    env["ARTROUTE_CONSUMER_GROUP"] = name
    env["ARTROUTE_METRICS_PORT"] = str(free_port())     # the session worker holds worker_env's port
    if model_name:
        env["ARTROUTE_MODEL_NAME"] = model_name
    await create_topics(settings.kafka_brokers, {t: 2 for k, t in env.items() if k.endswith("_TOPIC")})
    return settings.model_copy(update={k.removeprefix("ARTROUTE_").lower(): v for k, v in env.items()}), env


async def publish_intake(settings, uploads) -> None:
    """One S3 ObjectCreated event per upload onto `settings.intake_topic` (as the store would send it)."""
    from streams.worker.events import to_s3_event_json
    from streams.worker.publisher import Publisher

    async with Publisher(settings) as pub:
        await pub.send_all([(settings.intake_topic, u.key.encode(),
                             to_s3_event_json(settings.bucket, u.key, len(u.data), u.etag)) for u in uploads])


async def load_model(settings, name: str) -> None:
    """Triton's model-repository API (the stack runs it with explicit model control): (re)load `name`."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(settings.triton_url)
    try:
        await client.load_model(name)
    finally:
        await client.close()
