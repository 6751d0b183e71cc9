"""Export a run as a new numbered version into the Triton model repository (docs/model-repository.md).

Traces the calibrated model (uint8 NCHW -> normalisation -> network -> /T -> softmax) to TorchScript,
checks it against the eager model, and writes model.pt, the python-backend runner model.py and
metadata.json into <repository>/<model>/<next version>/ (staged, then renamed, so Triton never sees half a
version), plus labels.txt, config.pbtxt (production GPU, pytorch_libtorch) and configs/cpu.pbtxt
(embedded stack, python backend) beside it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import BaseModel

from trainer.models import Calibrated, ModelError
from trainer.run import RunError, load_model, read_calibration, read_info, write_json

RUNNER = Path(__file__).with_name("triton_python_model.py")
INPUT, OUTPUT = "IMAGE__0", "PROBS__0"
PARITY_ATOL = 1e-4


class ModelMetadata(BaseModel):
    model_name: str
    version: int
    run: str
    arch: str
    taxonomy: str
    labels: list[str]
    input: dict            # {"name", "dtype", "shape": [3, H, W], "resize": "letterbox"}
    image_size: list[int]  # [H, W]
    mean: list[float]
    std: list[float]
    temperature: float
    metrics: dict
    training_data_sha256: str
    manifest: str
    created: str


def _pbtxt_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_pbtxt(model_name: str, labels: list[str], taxonomy: str, size: int, gpu: bool,
                 max_batch_size: int = 32) -> str:
    """config.pbtxt (gpu=True: pytorch_libtorch, KIND_GPU) or configs/cpu.pbtxt (python backend, KIND_CPU)."""
    engine = 'platform: "pytorch_libtorch"' if gpu else 'backend: "python"'
    params = {"artroute_labels": json.dumps(labels, ensure_ascii=False), "artroute_taxonomy": taxonomy,
              "artroute_resize": "letterbox"}
    if not gpu:
        params["torch_threads"] = "2"
    param_text = ",\n".join(f'  {{ key: "{k}" value: {{ string_value: {_pbtxt_string(v)} }} }}' for k, v in params.items())
    return f"""name: "{model_name}"
{engine}
max_batch_size: {max_batch_size}
input [
  {{ name: "{INPUT}" data_type: TYPE_UINT8 dims: [ 3, {size}, {size} ] }}
]
output [
  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {len(labels)} ] label_filename: "labels.txt" }}
]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ kind: {"KIND_GPU" if gpu else "KIND_CPU"} count: 1 }} ]
parameters [
{param_text}
]
"""


def trace(model: torch.nn.Module, size: int) -> torch.jit.ScriptModule:
    """torch.jit.trace on a uint8 batch, then a parity check on a fresh batch of another size."""
    g = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        check = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, generator=g)
        diff = (traced(check) - model(check)).abs().max().item()
    if diff >= PARITY_ATOL:
        raise ModelError(f"traced model differs from eager by {diff:.2e} (>= {PARITY_ATOL})")
    return traced


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def export_run(run_dir: str | Path, repository: str | Path = "model_repository", model_name: str = "artroute",
               max_batch_size: int = 32) -> Path:
    """Write the run as the next version of <repository>/<model_name>; returns the version directory."""
    run_dir, repository = Path(run_dir), Path(repository)
    info, model = load_model(run_dir)
    cal = read_calibration(run_dir)
    if cal is None:
        raise RunError(f"{run_dir}: no calibration.json (run `python -m trainer evaluate --run {run_dir}`)")
    served = Calibrated(model, cal.temperature).eval()
    traced = trace(served, info.image_size)

    eval_test = run_dir / "eval_test.json"
    metrics = {"val": info.final_val, "val_calibration": cal.model_dump()}
    if eval_test.is_file():
        m = json.loads(eval_test.read_text(encoding="utf-8"))["metrics"]
        metrics["test"] = {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "ece", "ece_uncalibrated")}

    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    meta = ModelMetadata(
        model_name=model_name, version=version, run=str(run_dir.resolve()), arch=info.arch, taxonomy=info.taxonomy,
        labels=info.classes, input={"name": INPUT, "dtype": "uint8", "shape": [3, info.image_size, info.image_size],
                                    "resize": "letterbox"},
        image_size=[info.image_size, info.image_size], mean=info.mean, std=info.std, temperature=cal.temperature,
        metrics=metrics, training_data_sha256=info.manifest_sha256, manifest=info.manifest,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    stage = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=model_dir))
    try:
        traced.save(str(stage / "model.pt"))
        shutil.copyfile(RUNNER, stage / "model.py")
        write_json(stage / "metadata.json", meta)
        stage.chmod(0o755)
        stage.rename(model_dir / str(version))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _write_text(model_dir / "labels.txt", "".join(f"{c}\n" for c in info.classes))
    _write_text(model_dir / "config.pbtxt",
                config_pbtxt(model_name, info.classes, info.taxonomy, info.image_size, True, max_batch_size))
    _write_text(model_dir / "configs" / "cpu.pbtxt",
                config_pbtxt(model_name, info.classes, info.taxonomy, info.image_size, False, max_batch_size))
    return model_dir / str(version)


def quick_train_and_export(corpus_dir: str | Path, repository: str | Path, model_name: str = "artroute",
                           taxonomy: str = "corpus", drop: list[str] | None = None, arch: str = "tiny",
                           image_size: int = 64, epochs: int = 3, max_images: int = 1500,
                           run_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Train a small model fast (tiny CNN from scratch, 64 px, 3 epochs: well under 2 min on 2 CPU cores for
    ~1,500 images) and export it; returns the version directory. For demos with an empty model repository."""
    from trainer.evaluate import evaluate_run
    from trainer.run import TrainConfig
    from trainer.train import train

    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="artroute-quick-"))
    cfg = TrainConfig(corpus=str(corpus_dir), out=str(run_dir), taxonomy=taxonomy, drop=drop or [], arch=arch,
                      pretrained=False, image_size=image_size, epochs=epochs, freeze_epochs=0, warmup_epochs=0.3,
                      batch_size=32, lr=3e-3, workers=0, seed=seed, device="cpu", max_images=max_images)
    train(cfg)
    try:
        evaluate_run(run_dir, "test", workers=0)
    except ValueError:  # a corpus without a test split: export with the val metrics only
        pass
    return export_run(run_dir, repository, model_name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `python -m trainer train`")
    p.add_argument("--repository", default="model_repository", help="Triton model repository (default: model_repository)")
    p.add_argument("--model-name", default="artroute", help="model name = directory in the repository (default: artroute)")
    p.add_argument("--max-batch-size", type=int, default=32, help="max_batch_size in both configs (default: 32)")


def main(args: argparse.Namespace) -> int:
    try:
        version_dir = export_run(args.run, args.repository, args.model_name, args.max_batch_size)
    except (ModelError, RunError, FileNotFoundError) as e:
        print(f"trainer export: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    meta = read_info(args.run)
    print(f"exported {args.run} ({meta.arch}, {len(meta.classes)} classes) -> {version_dir}")
    return 0
