"""One batch of images through Triton -> one outcome per image: its probabilities in the labels of the
version that computed them, or why it has none.

Transient failures (Triton or the model away) are retried inside `TritonModel.infer_with_retries`, so
nothing is dropped while a server is down. A permanent failure (`InferenceFailed`: Triton refused the
request, or the model raised) splits the batch in two and tries each half, down to the image at fault:
that image fails with stage "infer" and the real reason, its batch-mates are answered. A lone image
that fails is tried once more before it is given up (Triton's dynamic batcher may have merged it with
another request that failed).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from streams.contract.model import CONTRACT, PROBS, ModelContract
from streams.worker import metrics
from streams.worker.contracts import ContractBook, UnknownContract
from streams.worker.health import Health
from streams.worker.inference import InferenceFailed, TritonModel


@dataclass(frozen=True)
class Scored:
    probs: np.ndarray          # (C,) in the order of contract.labels
    version: str
    contract: ModelContract
    unfamiliarity: float | None = None   # where the model serves it (UNFAMILIAR__2)


@dataclass(frozen=True)
class Unscored:
    kind: str                  # dead-letter error kind: "inference" or "model_contract"
    message: str
    stage: str                 # "infer" or "decide"


async def score(model: TritonModel, book: ContractBook, images: np.ndarray,
                stop: asyncio.Event | None = None, health: Health | None = None) -> list[Scored | Unscored]:
    """One outcome per image of `images` (uint8 (N, 3, H, W)), in order. `health` hears of Triton failing
    (retries) and of calls that hang."""
    try:
        answer = await _infer(model, images, stop, health)
    except InferenceFailed as e:
        if len(images) > 1:
            mid = len(images) // 2
            return [*await score(model, book, images[:mid], stop, health),
                    *await score(model, book, images[mid:], stop, health)]
        try:
            answer = await _infer(model, images, stop, health)
        except InferenceFailed:
            return [Unscored("inference", str(e), "infer")]
    out: list[Scored | Unscored] = []
    u = answer.unfamiliarity if answer.unfamiliarity is not None else [None] * len(answer.probs)
    for probs, digest, unfamiliarity in zip(answer.probs, answer.digests, u):
        try:
            contract = await book.contract_for(bytes(np.asarray(digest, dtype=np.uint8)), answer.version)
        except UnknownContract as e:
            out.append(Unscored("model_contract", str(e), "decide"))
            continue
        out.append(Scored(probs, answer.version, contract,
                          None if unfamiliarity is None or contract.unfamiliarity is None else float(unfamiliarity)))
    return out


async def _infer(model: TritonModel, images: np.ndarray, stop: asyncio.Event | None, health: Health | None):
    t0 = time.perf_counter()
    if health is None:
        answer = await model.infer_with_retries(images, stop)
    else:
        with health.call("triton"):  # retrying or hanging past ARTROUTE_HEALTH_STUCK_S: not ready
            answer = await model.infer_with_retries(images, stop, on_retry=lambda e, _a, _w: health.failing("triton", e),
                                                    on_success=lambda: health.ok("triton"))
    metrics.INFERENCE_SECONDS.observe(time.perf_counter() - t0)
    metrics.BATCH_SIZE.observe(len(images))
    if answer.probs.ndim != 2 or len(answer.probs) != len(images) or answer.digests.shape != (len(images), 32) or (
            answer.unfamiliarity is not None and answer.unfamiliarity.shape != (len(images),)):
        raise InferenceFailed(f"the model answered {len(images)} images with {PROBS.name} {list(answer.probs.shape)} "
                              f"and {CONTRACT.name} {list(answer.digests.shape)}")
    return answer
