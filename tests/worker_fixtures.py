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
