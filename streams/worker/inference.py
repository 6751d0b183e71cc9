"""Triton over gRPC (tritonclient.grpc.aio): what the served model is, and batched inference.

Everything about the model comes from Triton: its input size, max_batch_size and the contracts of its
versions from the model config (`streams.contract.triton_config`), and with every response the version
that answered and the digest of that version's contract (the CONTRACT__1 output). See
docs/model-repository.md.

Errors follow the one retry policy (streams.contract.retry): when the server or the model is not there
(gRPC UNAVAILABLE or DEADLINE_EXCEEDED, NOT_FOUND for a model not loaded) the call is retried until it succeeds; any
other error refuses this request (`InferenceFailed`) and is raised at once, so the caller can find the
image at fault (streams.worker.scoring).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from pydantic import BaseModel
from tritonclient.utils import InferenceServerException

from streams.contract.cli import UserError
from streams.contract.model import CONTRACT, IMAGE, PROBS, UNFAMILIAR, ModelContract
from streams.contract.retry import RetryPolicy, call_with_retries
from streams.contract.triton_config import ConfigError, contracts_of, served_input_size, serves_unfamiliarity

TRANSIENT_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND")
"""The server is away or slow, or the model is not loaded (NOT_FOUND: "unknown model", "has no available
versions"; yet, or while an operator reloads it): no image is at fault, so wait rather than dead-letter."""


class ModelUnavailable(RuntimeError):
    """Triton is not reachable or the model is not loaded: transient, retried."""


class InferenceFailed(RuntimeError):
    """Triton refused or failed this request (bad input, a model error): permanent for these images."""


class ModelMismatch(UserError):
    """The served model cannot be used with these settings (ARTROUTE_MAX_BATCH, its contract)."""


class ServedModel(BaseModel):
    name: str
    versions: list[str]                   # the versions Triton serves now
    input_size: tuple[int, int]           # (H, W) of IMAGE__0, the same for every version
    max_batch_size: int
    contracts: dict[int, ModelContract]   # version -> contract, from the config
    unfamiliarity: bool = False           # the config declares UNFAMILIAR__2 (every version returns it)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return 3, *self.input_size


@dataclass(frozen=True)
class Answer:
    """One response: probabilities (N, C), each row's contract digest (N, 32), the version that answered, and
    each row's unfamiliarity (N,) where the model serves it."""
    probs: np.ndarray
    digests: np.ndarray
    version: str
    unfamiliarity: np.ndarray | None = None


def _classify(url: str, e: InferenceServerException) -> Exception:
    message = e.message() or str(e)
    if e.status() in TRANSIENT_STATUS:
        return ModelUnavailable(f"triton {url}: {message}")
    return InferenceFailed(f"{e.status() or 'error'}: {message}")


def _is_transient(e: BaseException) -> bool:
    return isinstance(e, ModelUnavailable)


class TritonModel:
    def __init__(self, url: str, model_name: str, model_version: str = "", timeout_s: float = 30.0,
                 retry_max_s: float = 60.0):
        self.url, self.model_name, self.model_version = url, model_name, model_version
        self.timeout_s, self.retry_max_s = timeout_s, retry_max_s
        self.client = grpcclient.InferenceServerClient(url)
        self.unfamiliarity = False  # ask for UNFAMILIAR__2 (set from the config by `served`)

    async def close(self) -> None:
        await self.client.close()

    def policy(self, what: str) -> RetryPolicy:
        return RetryPolicy(what=f"{what} (triton {self.url}, model {self.model_name!r})", max_s=self.retry_max_s)

    async def served(self, timeout_s: float | None = None) -> ServedModel:
        """What Triton serves under this model name now. ModelUnavailable; ModelMismatch for a model whose
        config is not an artroute model's."""
        try:
            meta = await self.client.get_model_metadata(self.model_name, self.model_version, as_json=True,
                                                        client_timeout=timeout_s or self.timeout_s)
            config = (await self.client.get_model_config(self.model_name, self.model_version,
                                                         client_timeout=timeout_s or self.timeout_s)).config
        except InferenceServerException as e:
            err = _classify(self.url, e)
            raise err if isinstance(err, ModelUnavailable) else ModelMismatch(str(err)) from None
        try:
            size, contracts, unfamiliarity = served_input_size(config), contracts_of(config), serves_unfamiliarity(config)
        except ConfigError as e:
            raise ModelMismatch(str(e)) from None
        self.unfamiliarity = unfamiliarity
        return ServedModel(name=meta["name"], versions=meta.get("versions", []), input_size=size,
                           max_batch_size=int(config.max_batch_size), contracts=contracts, unfamiliarity=unfamiliarity)

    async def wait_ready(self, stop: asyncio.Event | None = None) -> ServedModel:
        """`served()`, retried while Triton or the model is not there."""
        return await call_with_retries(self.served, transient=_is_transient, policy=self.policy("model config"),
                                       stop=stop)

    async def infer(self, images: np.ndarray) -> Answer:
        """uint8 (N, 3, H, W) -> one Answer. Raises ModelUnavailable or InferenceFailed."""
        inp = grpcclient.InferInput(IMAGE.name, list(images.shape), IMAGE.dtype)
        inp.set_data_from_numpy(images)
        names = [PROBS.name, CONTRACT.name, *([UNFAMILIAR.name] if self.unfamiliarity else [])]
        outputs = [grpcclient.InferRequestedOutput(name) for name in names]
        try:
            result = await self.client.infer(self.model_name, [inp], model_version=self.model_version,
                                             outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise _classify(self.url, e) from None
        probs, digests = result.as_numpy(PROBS.name), result.as_numpy(CONTRACT.name)
        if probs is None or digests is None:
            raise InferenceFailed(f"the response lacks {PROBS.name} or {CONTRACT.name} (not an artroute model?)")
        u = result.as_numpy(UNFAMILIAR.name) if self.unfamiliarity else None
        if self.unfamiliarity and u is None:
            raise InferenceFailed(f"the response lacks {UNFAMILIAR.name}, which the model's config declares")
        return Answer(probs=probs, digests=digests, version=result.get_response().model_version,
                      unfamiliarity=None if u is None else np.asarray(u, dtype=np.float64).reshape(len(probs), -1)[:, 0])

    async def infer_with_retries(self, images: np.ndarray, stop: asyncio.Event | None = None,
                                 on_retry=None, on_success=None) -> Answer:
        """Infer, retrying while Triton or the model is not there (never drops); InferenceFailed at once.
        `on_retry` / `on_success`: the retry policy's hooks (the worker's health)."""
        return await call_with_retries(lambda: self.infer(images), transient=_is_transient,
                                       policy=self.policy("inference"), stop=stop, on_retry=on_retry,
                                       on_success=on_success)


def check_served(served: ServedModel, max_batch: int) -> None:
    """The start-up checks: ARTROUTE_MAX_BATCH fits the model's max_batch_size, and every version Triton
    serves now has a contract this worker can apply. Raises ModelMismatch (one line)."""
    if served.max_batch_size and max_batch > served.max_batch_size:
        raise ModelMismatch(f"ARTROUTE_MAX_BATCH={max_batch} exceeds max_batch_size {served.max_batch_size} of "
                            f"model {served.name!r}; lower ARTROUTE_MAX_BATCH or export with a larger "
                            "--max-batch-size")
    for version in served.versions:
        contract = served.contracts.get(int(version))
        if contract is None:
            raise ModelMismatch(f"model {served.name!r} version {version} has no contract in its config "
                                "(export it with `python -m trainer export`, then load the model again)")
        problem = contract.servable_problem(served.input_size)
        if problem:
            raise ModelMismatch(f"model {served.name!r} version {version}: {problem}")
