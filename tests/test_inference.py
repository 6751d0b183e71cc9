"""Inference keeps retrying while Triton is down and succeeds once a real Triton comes up; what is
not transient is raised at once."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streams.worker.inference import ModelUnavailable, TritonModel
from streams.stack.processes import free_port
from streams.stack.servers import TritonServer

pytestmark = pytest.mark.stack


async def test_inference_waits_for_triton_to_come_up(tmp_path, served_model_repository):
    http, grpc, metrics = free_port(), free_port(), free_port()
    model = TritonModel(f"127.0.0.1:{grpc}", "artroute", retry_max_s=1.0)
    with pytest.raises(ModelUnavailable):
        await model.infer(np.zeros((1, 3, 64, 64), np.uint8))  # nothing listens yet
    images = np.random.default_rng(3).integers(0, 256, (4, 3, 64, 64), dtype=np.uint8)
    pending = asyncio.create_task(model.infer_with_retries(images))
    await asyncio.sleep(2.0)
    assert not pending.done()  # still retrying, not failed
    server = TritonServer(tmp_path, served_model_repository, http, grpc, metrics)
    try:
        await asyncio.to_thread(server.start, 120)
        answer = await asyncio.wait_for(pending, 60)
    finally:
        server.process.stop()
        server.remove_leftover_shm()
        await model.close()
    assert answer.probs.shape == (4, 4) and answer.version == "1" and answer.digests.shape == (4, 32)
    assert np.allclose(answer.probs.sum(axis=1), 1, atol=1e-5)
