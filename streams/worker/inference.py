"""Triton over gRPC (tritonclient.grpc.aio): what the model is, and batched inference with retries.

Everything about the model comes from Triton: its input shape from the model metadata, its labels and
taxonomy from the `artroute_*` parameters of its config, the version from each response (Triton serves
the newest version unless ARTROUTE_MODEL_VERSION pins one). See docs/model-repository.md.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random

import numpy as np
import tritonclient.grpc.aio as grpcclient
from pydantic import BaseModel
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

INPUT_NAME = "IMAGE__0"
OUTPUT_NAME = "PROBS__0"


class ModelInfo(BaseModel):
    name: str
    versions: list[str]
    input_shape: tuple[int, int, int]  # (3, H, W)
    labels: list[str]
    taxonomy: str = ""
    max_batch_size: int

    @property
    def image_size(self) -> tuple[int, int]:
        return self.input_shape[1], self.input_shape[2]


class ModelUnavailable(RuntimeError):
    """Triton is not reachable or the model is not ready (retried by the caller)."""


class TritonModel:
    def __init__(self, url: str, model_name: str, model_version: str = "", timeout_s: float = 30.0,
                 retry_max_s: float = 60.0):
        self.url, self.model_name, self.model_version = url, model_name, model_version
        self.timeout_s, self.retry_max_s = timeout_s, retry_max_s
        self.client = grpcclient.InferenceServerClient(url)
        self.info: ModelInfo | None = None

    async def close(self) -> None:
        await self.client.close()

    async def load_info(self) -> ModelInfo:
        try:
            meta = await self.client.get_model_metadata(self.model_name, self.model_version, as_json=True)
            config = (await self.client.get_model_config(self.model_name, self.model_version, as_json=True))["config"]
        except InferenceServerException as e:
            raise ModelUnavailable(f"triton {self.url}: model {self.model_name!r}: {e.message()}") from e
        shape = [int(d) for d in meta["inputs"][0]["shape"]][-3:]
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "artroute_labels" not in params:
            raise ValueError(f"model {self.model_name!r} config has no artroute_labels parameter "
                             "(export it with `python -m trainer export`)")
        self.info = ModelInfo(name=meta["name"], versions=meta.get("versions", []), input_shape=tuple(shape),
                              labels=json.loads(params["artroute_labels"]), taxonomy=params.get("artroute_taxonomy", ""),
                              max_batch_size=int(config.get("max_batch_size", 0)))
        return self.info

    async def wait_ready(self, stop: asyncio.Event | None = None) -> ModelInfo:
        """Load the model info, retrying with backoff until Triton answers."""
        return await self._with_retries(self.load_info, "model info", stop)

    async def infer(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        """uint8 (N, 3, H, W) -> (probabilities (N, C), model version that answered). Raises ModelUnavailable."""
        inp = grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        out = grpcclient.InferRequestedOutput(OUTPUT_NAME)
        try:
            result = await self.client.infer(self.model_name, [inp], model_version=self.model_version,
                                             outputs=[out], client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise ModelUnavailable(f"triton {self.url}: {e.message()}") from e
        return result.as_numpy(OUTPUT_NAME), result.get_response().model_version

    async def infer_with_retries(self, images: np.ndarray, stop: asyncio.Event | None = None) -> tuple[np.ndarray, str]:
        """Infer, retrying with exponential backoff and jitter while Triton is unavailable; never drops."""
        return await self._with_retries(lambda: self.infer(images), "inference", stop)

    async def _with_retries(self, call, what: str, stop: asyncio.Event | None):
        delay = 0.2
        while True:
            try:
                return await call()
            except ModelUnavailable as e:
                if stop is not None and stop.is_set():
                    raise
                log.warning("triton unavailable for %s, retrying in %.1fs: %s", what, delay, e)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.retry_max_s)
