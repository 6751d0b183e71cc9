"""The served model files of one version: TorchScript (model.pt) and ONNX (model.onnx).

Both compute, from uint8 NCHW images, the calibrated probabilities (normalisation -> network -> /T ->
softmax) and the version's contract digest per row (`Stamped`), and, for a model with an unfamiliarity
score (`trainer.unfamiliar.Trusted`), the score per row as a third output, with the tensor names and
dtypes of `streams.contract.model`. Each file is checked against the eager model on a fresh batch of another size
than it was exported with (dynamic batch), and the TorchScript archive against what libtorch 2.5 (Triton
24.10's pytorch backend) reads.
"""
from __future__ import annotations

import contextlib
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streams.contract.model import CONTRACT, DIGEST_BYTES, IMAGE, PROBS, UNFAMILIAR
from trainer.models import ModelError

PARITY_ATOL = 1e-4
ONNX_OPSET = 20
LIBTORCH_2_5_MAX_FILE_FORMAT = 0xA
"""kMaxSupportedFileFormatVersion of libtorch 2.5 (caffe2/serialize/versions.h): the newest TorchScript
archive `version` record, and operator version, it loads."""


class Stamped(nn.Module):
    """(probabilities, contract digest per row[, unfamiliarity (N, 1)]): the served model says which contract
    its output is in. `unfamiliar`: `model` returns (probabilities, unfamiliarity (N,)) (`Trusted`)."""

    def __init__(self, model: nn.Module, digest: bytes, unfamiliar: bool = False):
        super().__init__()
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"digest of {len(digest)} bytes, expected {DIGEST_BYTES}")
        self.model, self.unfamiliar = model, unfamiliar
        self.register_buffer("digest", torch.tensor(list(digest), dtype=torch.uint8).view(1, DIGEST_BYTES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stamp = self.digest.expand(x.shape[0], DIGEST_BYTES)
        if self.unfamiliar:
            probs, u = self.model(x)
            return probs, stamp, u.float().view(-1, 1)
        return self.model(x), stamp

    @property
    def output_names(self) -> list[str]:
        return [PROBS.name, CONTRACT.name, *([UNFAMILIAR.name] if self.unfamiliar else [])]


def _batches(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)
    check = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, generator=g)
    return example, check


def _check_parity(what: str, got: tuple, want: tuple) -> None:
    probs, digest, *rest = (np.asarray(t) for t in got)
    if len(rest) != len(want) - 2:
        raise ModelError(f"{what} returns {len(got)} outputs, eager {len(want)}")
    for name, a, b in ((PROBS.name, probs, want[0]), *((UNFAMILIAR.name, rest[0], want[2]) for _ in rest)):
        diff = float(np.abs(a - b.numpy()).max())
        if a.shape != tuple(b.shape) or diff >= PARITY_ATOL:
            raise ModelError(f"{what}: {name} differs from eager by {diff:.2e} (>= {PARITY_ATOL}) or in shape")
    if digest.dtype != np.uint8 or not np.array_equal(digest, want[1].numpy()):
        raise ModelError(f"{what} does not return the contract digest of every row")


def trace(model: Stamped, size: int) -> torch.jit.ScriptModule:
    """torch.jit.trace on a uint8 batch of 2, checked against eager on a batch of 3."""
    example, check = _batches(size)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        _check_parity("traced model", tuple(t.numpy() for t in traced(check)), model(check))
    return traced


def export_onnx(model: Stamped, size: int, path: Path) -> None:
    """ONNX (opset 20, dynamic batch, one file), checked with onnxruntime against eager."""
    import onnxruntime as ort

    example, check = _batches(size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter narrates its steps
        torch.onnx.export(model, (example,), str(path), input_names=[IMAGE.name],
                          output_names=model.output_names, opset_version=ONNX_OPSET,
                          dynamic_shapes={"x": {0: batch}}, external_data=False, dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        _check_parity("ONNX model", tuple(session.run(model.output_names, {IMAGE.name: check.numpy()})),
                      model(check))


def torchscript_versions(path: Path) -> tuple[int, int]:
    """(the archive's `version` record, the highest operator version among the operators its code calls)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        record = int(z.read(next(n for n in names if n.count("/") == 1 and n.endswith("/version"))))
        code = "\n".join(z.read(n).decode("utf-8") for n in names if "/code/" in n and n.endswith(".py"))
    used = {f"aten::{op}" for op in re.findall(r"\b(?:torch|ops\.aten)\.(\w+)\(", code)}
    versions = [entry.bumped_at_version for op, entries in torch._C._get_operator_version_map().items()
                if op.split(".")[0] in used for entry in entries]
    return record, max(versions, default=0)


def check_libtorch_readable(path: Path) -> None:
    record, operators = torchscript_versions(path)
    if max(record, operators) > LIBTORCH_2_5_MAX_FILE_FORMAT:
        raise ModelError(f"{path.name}: TorchScript format {record} / operator version {operators} is newer than "
                         f"libtorch 2.5 reads ({LIBTORCH_2_5_MAX_FILE_FORMAT}): Triton 24.10 could not load it")
