"""Triton model configs for artroute models, built and parsed as `model_config_pb2.ModelConfig` protobufs.

`trainer export` builds one config per serving variant from the contracts of every version in the
model's directory; the worker parses what Triton reports (`get_model_config`) with the same code. Triton
applies one config to all versions of a model, so the config holds what all versions share (tensors,
input size, batching) and an index of the per-version contracts: one parameter `artroute_contract.<N>`
per version N (its contract.json). The UNFAMILIAR__2 output is declared when every version has it (a
version exported without it would fail a request for it); the worker reads it only then. Which labels a response is in is decided per response, by the
CONTRACT__1 digest the model itself returns (streams.contract.model).

Variants (file under the model directory -> engine):

    config.pbtxt            pytorch_libtorch, KIND_GPU (production; model.pt)
    configs/onnx.pbtxt      onnxruntime_onnx, KIND_GPU (production alternative; model.onnx)
    configs/cpu.pbtxt       python backend running model.pt with torch, KIND_CPU (embedded stack)
    configs/cpu-onnx.pbtxt  python backend running model.onnx with onnxruntime, KIND_CPU (embedded stack)
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

from google.protobuf import text_format
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from streams.contract.model import CONTRACT, DIGEST_BYTES, IMAGE, PROBS, UNFAMILIAR, ModelContract, TensorSpec

Variant = Literal["gpu", "onnx", "cpu", "cpu-onnx"]
CpuVariant = Literal["cpu", "cpu-onnx"]
VARIANT_FILES: dict[str, str] = {"gpu": "config.pbtxt", "onnx": "configs/onnx.pbtxt",
                                 "cpu": "configs/cpu.pbtxt", "cpu-onnx": "configs/cpu-onnx.pbtxt"}
CPU_VARIANTS: tuple[str, ...] = get_args(CpuVariant)
"""What the embedded stack can serve (its tritonserver has only the python backend)."""
MODEL_FILES = {"gpu": "model.pt", "onnx": "model.onnx", "cpu": "model.pt", "cpu-onnx": "model.onnx"}
"""The file of a version each variant runs (the python variants run it from model.py)."""
RUNNER_FILE = "model.py"
CONTRACT_FILE = "contract.json"
CONTRACT_PARAMETER = "artroute_contract."
RUNTIME_PARAMETER = "artroute_runtime"      # python backend: "torchscript" or "onnxruntime"
THREADS_PARAMETER = "artroute_threads"      # python backend: intra-op threads of the runtime
CPU_THREADS = 2
MAX_QUEUE_DELAY_US = 2000


class ConfigError(ValueError):
    """A config that is not an artroute model's; the message is one line."""


def _tensor(spec: TensorSpec, dims: list[int]) -> dict:
    return {"name": spec.name, "data_type": mc.DataType.Value(f"TYPE_{spec.dtype}"), "dims": dims}


def build_config(model_name: str, contracts: Iterable[ModelContract], variant: Variant,
                 max_batch_size: int = 32) -> mc.ModelConfig:
    """The `variant` config of a model whose versions have these contracts (all with one input size)."""
    contracts = sorted(contracts, key=lambda c: c.version)
    if not contracts:
        raise ConfigError(f"model {model_name!r}: no version to configure")
    sizes = {tuple(c.input_size) for c in contracts}
    if len(sizes) != 1:
        raise ConfigError(f"model {model_name!r}: versions disagree on the input size: {sorted(sizes)}")
    h, w = contracts[0].input_size
    gpu = variant in ("gpu", "onnx")
    outputs = [mc.ModelOutput(**_tensor(PROBS, [-1])), mc.ModelOutput(**_tensor(CONTRACT, [DIGEST_BYTES]))]
    if all(c.unfamiliarity is not None for c in contracts):
        outputs.append(mc.ModelOutput(**_tensor(UNFAMILIAR, [1])))
    config = mc.ModelConfig(
        name=model_name, max_batch_size=max_batch_size,
        input=[mc.ModelInput(**_tensor(IMAGE, [3, h, w]))], output=outputs,
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
        instance_group=[mc.ModelInstanceGroup(
            kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU, count=1)])
    if variant == "gpu":
        config.platform, config.default_model_filename = "pytorch_libtorch", MODEL_FILES[variant]
    elif variant == "onnx":
        config.platform, config.default_model_filename = "onnxruntime_onnx", MODEL_FILES[variant]
    else:
        config.backend = "python"
        config.parameters[RUNTIME_PARAMETER].string_value = "torchscript" if variant == "cpu" else "onnxruntime"
        config.parameters[THREADS_PARAMETER].string_value = str(CPU_THREADS)
    for c in contracts:
        config.parameters[f"{CONTRACT_PARAMETER}{c.version}"].string_value = c.model_dump_json()
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config, as_utf8=True)


def parse_pbtxt(text: str, where: str = "config") -> mc.ModelConfig:
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as e:
        raise ConfigError(f"{where}: not a Triton model config: {e}") from None


def read_config(path: Path) -> mc.ModelConfig:
    return parse_pbtxt(path.read_text(encoding="utf-8"), str(path))


def contracts_of(config: mc.ModelConfig) -> dict[int, ModelContract]:
    """version -> contract, from the config's `artroute_contract.<N>` parameters."""
    out = {}
    for key, value in config.parameters.items():
        if not key.startswith(CONTRACT_PARAMETER):
            continue
        try:
            contract = ModelContract.model_validate_json(value.string_value)
        except ValidationError as e:
            raise ConfigError(f"model {config.name!r}: parameter {key}: not a contract: "
                              f"{str(e).splitlines()[0]}") from None
        out[contract.version] = contract
    return out


def served_input_size(config: mc.ModelConfig) -> tuple[int, int]:
    """(H, W) of IMAGE__0, checking the config declares the contract's tensors with the contract's types."""
    declared = {t.name: t for t in [*config.input, *config.output]}
    for spec in (IMAGE, PROBS, CONTRACT):
        t = declared.get(spec.name)
        if t is None:
            raise ConfigError(f"model {config.name!r} has no tensor {spec.name} "
                              "(not an artroute model? export it with `python -m trainer export`)")
        if mc.DataType.Name(t.data_type) != f"TYPE_{spec.dtype}":
            raise ConfigError(f"model {config.name!r}: {spec.name} is {mc.DataType.Name(t.data_type)}, "
                              f"the contract says TYPE_{spec.dtype}")
    dims = [int(d) for d in declared[IMAGE.name].dims]
    if len(dims) != 3 or dims[0] != 3 or min(dims) < 1:
        raise ConfigError(f"model {config.name!r}: {IMAGE.name} dims {dims}, the contract says [3, H, W]")
    return dims[1], dims[2]


def serves_unfamiliarity(config: mc.ModelConfig) -> bool:
    """Whether the config declares UNFAMILIAR__2 (FP32, one value per image)."""
    t = next((o for o in config.output if o.name == UNFAMILIAR.name), None)
    if t is None:
        return False
    if mc.DataType.Name(t.data_type) != f"TYPE_{UNFAMILIAR.dtype}" or [int(d) for d in t.dims] != [1]:
        raise ConfigError(f"model {config.name!r}: {UNFAMILIAR.name} is {mc.DataType.Name(t.data_type)} "
                          f"{list(t.dims)}, the contract says TYPE_{UNFAMILIAR.dtype} [1]")
    return True
