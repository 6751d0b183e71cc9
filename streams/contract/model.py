"""The model contract: what a served artroute model takes and returns, stated once for both sides.

`trainer export` writes a `ModelContract` into every version directory (contract.json) and into the
model's Triton configs; the worker reads it back through Triton and decides with the contract of the
version that answered (docs/model-repository.md, "Rollout"). The tensors:

    IMAGE__0     uint8 [N, 3, H, W]  RGB, letterboxed to H x W (`streams.contract.imaging.to_model_input`)
    PROBS__0     fp32  [N, C]        calibrated class probabilities, in the order of `ModelContract.labels`
    CONTRACT__1  uint8 [N, 32]       `ModelContract.digest()` of the version that computed the row
    UNFAMILIAR__2 fp32 [N, 1]        how unlike the training photos the image is (only versions whose
                                     contract has `unfamiliarity`; higher = stranger)

The names follow the libtorch backend's `<name>__<index>` convention (the index is the position in the
model's inputs / outputs), so one set of names serves pytorch_libtorch, onnxruntime_onnx and the python
backend. CONTRACT__1 is baked into the model file at export: every response says which labels its
probabilities are in, whatever config Triton happens to hold.

A version may also carry its routing rule (`routing`: `streams.contract.routing.RoutingRule`, fitted at
export for a target accuracy, with the unfamiliarity threshold) and say that its model file returns
UNFAMILIAR__2 (`unfamiliarity`). Versions exported before either have neither: the worker then falls back
to the global thresholds of its settings (docs/trust.md).
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streams.contract.routing import RoutingRule

DIGEST_BYTES = 32
RESIZE_MODES = ("letterbox",)
"""Resize modes the serving side implements (`streams.contract.imaging.letterbox`)."""


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    dtype: Literal["UINT8", "FP32"]   # Triton's names (config: TYPE_<dtype>; client: the dtype itself)

    @property
    def numpy_dtype(self) -> str:
        return {"UINT8": "uint8", "FP32": "float32"}[self.dtype]


IMAGE = TensorSpec(name="IMAGE__0", dtype="UINT8")
PROBS = TensorSpec(name="PROBS__0", dtype="FP32")
CONTRACT = TensorSpec(name="CONTRACT__1", dtype="UINT8")
UNFAMILIAR = TensorSpec(name="UNFAMILIAR__2", dtype="FP32")
INPUTS = (IMAGE,)
OUTPUTS = (PROBS, CONTRACT)
"""What every version returns; UNFAMILIAR where the contract has `unfamiliarity`."""


class Unfamiliarity(BaseModel):
    """How the version's UNFAMILIAR__2 output is computed (trainer/unfamiliar.py); its review threshold is
    the routing rule's `unfamiliar_threshold`."""
    model_config = ConfigDict(frozen=True, extra="forbid")
    method: Literal["knn-cosine"] = "knn-cosine"
    k: int = Field(ge=1, description="Distance to the k-th nearest training photo.")
    taps: list[str] = Field(description="Modules whose pooled outputs are the features ([]: the head's input).")
    bank_size: int = Field(ge=1, description="Training photos in the bank.")


class Label(BaseModel):
    """One output class: its name (what a decision's `department` says) and the institution's department
    id(s) it stands for (from the taxonomy YAML, or the corpus' rows; several when it merges departments)."""
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    department_ids: list[int] = []

    @property
    def department_id(self) -> int | None:
        """The one department this label routes to, or None (no id known, or a merge of several)."""
        return self.department_ids[0] if len(self.department_ids) == 1 else None


class ModelContract(BaseModel):
    """One exported version: what its output means and where it came from (contract.json)."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    model_name: str
    version: int = Field(ge=1)
    taxonomy: str
    labels: list[Label] = Field(min_length=1, description="In output index order.")
    input_size: tuple[int, int] = Field(description="(H, W) of IMAGE__0.")
    resize: str = "letterbox"
    temperature: float = Field(gt=0, description="Calibration temperature (applied inside the model).")
    training_data_sha256: str
    routing: RoutingRule | None = Field(None, description="The version's routing rule; None: global thresholds.")
    unfamiliarity: Unfamiliarity | None = Field(None, description="Set when the model file returns UNFAMILIAR__2.")
    # provenance: shown to people, not part of the digest
    arch: str = ""
    run: str = ""
    manifest: str = ""
    mean: list[float] = []
    std: list[float] = []
    metrics: dict = {}
    created: str = ""

    @property
    def label_names(self) -> list[str]:
        return [lb.name for lb in self.labels]

    @model_validator(mode="after")
    def _rule_is_over_the_labels(self):
        if self.routing is not None and self.routing.classes != self.label_names:
            raise ValueError(f"the routing rule's classes {self.routing.classes} are not the labels {self.label_names}")
        if self.routing is not None and self.routing.unfamiliar_threshold is not None and self.unfamiliarity is None:
            raise ValueError("the routing rule has an unfamiliarity threshold but the version no unfamiliarity output")
        return self

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (*OUTPUTS, UNFAMILIAR) if self.unfamiliarity else OUTPUTS

    def interface(self) -> dict:
        """What the worker relies on to read and route this version's output; the digest covers exactly this
        (contracts without a rule or unfamiliarity keep the digest they were exported with)."""
        out = {"schema_version": self.schema_version, "taxonomy": self.taxonomy,
               "labels": [lb.model_dump() for lb in self.labels], "input_size": list(self.input_size),
               "resize": self.resize, "tensors": [t.model_dump() for t in (*INPUTS, *self.outputs)]}
        if self.routing is not None:
            out["routing"] = self.routing.model_dump(mode="json")
        if self.unfamiliarity is not None:
            out["unfamiliarity"] = self.unfamiliarity.model_dump(mode="json")
        return out

    def digest(self) -> bytes:
        """sha256 of the canonical JSON of `interface()`: equal digests read outputs the same way."""
        text = json.dumps(self.interface(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).digest()

    def input_differences(self, other: ModelContract) -> list[str]:
        """Why `other` cannot be served under the same model name (the worker prepares an image before
        it knows which version will answer): differing input size or resize mode."""
        out = []
        if tuple(self.input_size) != tuple(other.input_size):
            out.append(f"input size {list(other.input_size)} differs from {list(self.input_size)}")
        if self.resize != other.resize:
            out.append(f"resize {other.resize!r} differs from {self.resize!r}")
        return out

    def servable_problem(self, input_size: tuple[int, int]) -> str | None:
        """Why the worker cannot use this contract for images of `input_size`, or None."""
        if self.resize not in RESIZE_MODES:
            return f"resize mode {self.resize!r} is not implemented here ({', '.join(RESIZE_MODES)})"
        if tuple(self.input_size) != tuple(input_size):
            return f"contract input {list(self.input_size)} differs from the served input {list(input_size)}"
        return None
