"""Export a run as a new numbered version into the Triton model repository (docs/model-repository.md).

Writes <repository>/<model>/<next version>/ with model.pt (TorchScript), model.onnx (ONNX opset 20), the
python-backend runner model.py and contract.json (the version's `ModelContract`: labels in output order
with their department ids, input size, resize mode, temperature, training-data hash, metrics), staged and
renamed so Triton never sees half a version. Both model files return the contract's digest beside the
probabilities, and are checked against the eager model. Then it rewrites the model's configs (config.pbtxt
for pytorch_libtorch on GPU, configs/onnx.pbtxt, configs/cpu.pbtxt and configs/cpu-onnx.pbtxt for the
embedded stack), each indexing the contracts of every version in the directory.

With a target accuracy (the CLI's --target-accuracy, default 0.95) the version also gets its routing rule
and an unfamiliarity score (trainer/trust.py, docs/trust.md): the rule goes into its contract, the score
into the model files as a third output UNFAMILIAR__2. `--no-routing` exports without both: the worker then
applies its global thresholds to that version.

A new version may change the labels, their order or the taxonomy (the worker decides each response with
the contract of the version that answered), but not the input size or resize mode: every version of a
model name takes the same images. Export refuses such a version; use a new --model-name.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError

from streams.contract.cli import UserError
from streams.contract.model import Label, ModelContract, Unfamiliarity
from streams.contract.taxonomy import CORPUS, TaxonomyError, load_taxonomy
from streams.contract.triton_config import (CONTRACT_FILE, RUNNER_FILE, VARIANT_FILES, build_config, to_pbtxt)
from trainer.artifacts import Stamped, check_libtorch_readable, export_onnx, trace
from trainer.models import Calibrated
from trainer.trust import for_export
from trainer.unfamiliar import Trusted
from trainer.run import RunError, RunInfo, load_model, read_calibration

RUNNER = Path(__file__).with_name("triton_python_model.py")
DEFAULT_MAX_BATCH_SIZE = 32


class ExportError(UserError):
    """An export refused: the message names the problem and what to do instead."""


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def read_contracts(model_dir: Path) -> dict[int, ModelContract]:
    """version -> contract of every version directory; versions exported without one are refused."""
    out = {}
    for d in sorted((p for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        path = d / CONTRACT_FILE
        if not path.is_file():
            raise ExportError(f"{d}: no {CONTRACT_FILE} (exported before the model contract); remove that "
                              f"version or export under a new --model-name")
        try:
            contract = ModelContract.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            raise ExportError(f"{path}: not a model contract: {str(e).splitlines()[0]}") from None
        if contract.version != int(d.name):
            raise ExportError(f"{path}: says version {contract.version}, lies in {d.name}/ (copy a version to its "
                              "own number)")
        out[int(d.name)] = contract
    return out


def check_compatible(existing: dict[int, ModelContract], new: ModelContract) -> None:
    """Refuse a version the worker could not feed like the versions already there."""
    for version, old in sorted(existing.items()):
        problems = old.input_differences(new)
        if problems:
            raise ExportError(f"model {new.model_name!r} version {version} takes other images: "
                              f"{'; '.join(problems)} — export under a new --model-name")


def labels_of(info: RunInfo) -> list[Label]:
    """The run's classes in output order with their department ids (run.json; runs trained before it
    recorded them take the ids of their built-in taxonomy)."""
    ids = info.department_ids
    if not ids and info.taxonomy != CORPUS:
        try:
            ids = {c.name: c.department_ids for c in load_taxonomy(info.taxonomy).classes}
        except TaxonomyError:
            ids = {}
    return [Label(name=c, department_ids=ids.get(c, [])) for c in info.classes]


def _metrics(run_dir: Path, info: RunInfo, cal) -> dict:
    metrics = {"val": info.final_val, "val_calibration": cal.model_dump()}
    eval_test = run_dir / "eval_test.json"
    if eval_test.is_file():
        m = json.loads(eval_test.read_text(encoding="utf-8"))["metrics"]
        metrics["test"] = {k: m[k] for k in ("n", "top1", "top3", "macro_f1", "ece", "ece_uncalibrated")}
    return metrics


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_configs(model_dir: Path, contracts: list[ModelContract], max_batch_size: int) -> None:
    """Every variant's config, indexing these contracts (the versions in the directory)."""
    for variant, rel in VARIANT_FILES.items():
        _write_text(model_dir / rel, to_pbtxt(build_config(model_dir.name, contracts, variant, max_batch_size)))


def export_run(run_dir: str | Path, repository: str | Path = "model_repository", model_name: str = "artroute",
               max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, target_accuracy: float | None = None,
               delta: float = 0.1) -> Path:
    """Write the run as the next version of <repository>/<model_name>; returns the version directory. With
    `target_accuracy`: with the routing rule for it (and `delta`) and the unfamiliarity output."""
    run_dir, repository = Path(run_dir), Path(repository)
    info, model = load_model(run_dir)
    cal = read_calibration(run_dir)
    if cal is None:
        raise RunError(f"{run_dir}: no calibration.json (run `python -m trainer evaluate --run {run_dir}`)")
    model_dir = repository / model_name
    existing = read_contracts(model_dir) if model_dir.is_dir() else {}
    version = next_version(model_dir) if model_dir.is_dir() else 1
    rule, scorer = for_export(run_dir, target_accuracy, delta) if target_accuracy is not None else (None, None)
    contract = ModelContract(
        model_name=model_name, version=version, taxonomy=info.taxonomy, labels=labels_of(info),
        input_size=(info.image_size, info.image_size), temperature=cal.temperature,
        training_data_sha256=info.manifest_sha256, routing=rule,
        unfamiliarity=Unfamiliarity(k=scorer.k, taps=scorer.taps, bank_size=len(scorer.bank)) if scorer else None,
        arch=info.arch, run=str(run_dir.resolve()),
        manifest=info.manifest, mean=info.mean, std=info.std, metrics=_metrics(run_dir, info, cal),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    check_compatible(existing, contract)

    inner = Trusted(model, cal.temperature, scorer) if scorer else Calibrated(model, cal.temperature)
    served = Stamped(inner, contract.digest(), unfamiliar=scorer is not None).eval()
    traced = trace(served, info.image_size)
    model_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=model_dir))
    try:
        traced.save(str(stage / "model.pt"))
        check_libtorch_readable(stage / "model.pt")
        export_onnx(served, info.image_size, stage / "model.onnx")
        shutil.copyfile(RUNNER, stage / RUNNER_FILE)
        (stage / CONTRACT_FILE).write_text(contract.model_dump_json(indent=2) + "\n", encoding="utf-8")
        stage.chmod(0o755)
        stage.rename(model_dir / str(version))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    (model_dir / "labels.txt").unlink(missing_ok=True)  # written by exports before the contract: one list for all versions
    write_configs(model_dir, [*existing.values(), contract], max_batch_size)
    return model_dir / str(version)


def quick_train_and_export(corpus_dir: str | Path, repository: str | Path, model_name: str = "artroute",
                           taxonomy: str = "corpus", drop: list[str] | None = None, arch: str = "tiny",
                           image_size: int = 64, epochs: int = 3, max_images: int = 1500,
                           run_dir: str | Path | None = None, seed: int = 0, pretrained: bool = False,
                           freeze_epochs: int = 0, target_accuracy: float | None = None) -> Path:
    """Train a small model fast and export it; returns the version directory. For demos and tests with an empty
    model repository. Default: tiny CNN from scratch, 64 px, 3 epochs (well under 2 min on 2 CPU cores for
    ~1,500 images); `pretrained` with `freeze_epochs` >= `epochs` trains only the head on the packaged
    ImageNet backbone (frozen features). `target_accuracy`: export with the routing rule and the
    unfamiliarity output (fitted on the run's own val and train photos)."""
    from trainer.data import DataError
    from trainer.evaluate import evaluate_run
    from trainer.run import TrainConfig
    from trainer.train import train
    from trainer.trust import TrustConfig

    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="artroute-quick-"))
    cfg = TrainConfig(corpus=str(corpus_dir), out=str(run_dir), taxonomy=taxonomy, drop=drop or [], arch=arch,
                      pretrained=pretrained, image_size=image_size, epochs=epochs, freeze_epochs=freeze_epochs,
                      warmup_epochs=0.3,
                      batch_size=32, lr=3e-3, workers=0, seed=seed, device="cpu", max_images=max_images)
    train(cfg)
    try:
        evaluate_run(run_dir, "test", workers=0, trust_cfg=TrustConfig(target_accuracy=target_accuracy or 0.95,
                                                                       shifted=False))
    except DataError:  # a corpus without a test split: export with the val metrics only
        pass
    return export_run(run_dir, repository, model_name, target_accuracy=target_accuracy)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `python -m trainer train`")
    p.add_argument("--repository", default="model_repository", help="Triton model repository (default: model_repository)")
    p.add_argument("--model-name", default="artroute", help="model name = directory in the repository (default: artroute)")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                   help=f"max_batch_size in every config (default: {DEFAULT_MAX_BATCH_SIZE})")
    p.add_argument("--target-accuracy", type=float, default=0.95,
                   help="accuracy the auto-routed decisions of this version must reach on data like the val photos; "
                        "its routing rule is fitted for it (default: 0.95)")
    p.add_argument("--delta", type=float, default=0.1,
                   help="the target holds with probability 1 - delta over the val photos (default: 0.1)")
    p.add_argument("--no-routing", action="store_true",
                   help="export without routing rule and unfamiliarity output (the worker's global thresholds apply)")


def main(args: argparse.Namespace) -> int:
    if not args.no_routing and not (0 < args.target_accuracy < 1 and 0 < args.delta < 1):
        raise ExportError("--target-accuracy and --delta must lie strictly between 0 and 1")
    version_dir = export_run(args.run, args.repository, args.model_name, args.max_batch_size,
                             None if args.no_routing else args.target_accuracy, args.delta)
    contract = ModelContract.model_validate_json((version_dir / CONTRACT_FILE).read_text(encoding="utf-8"))
    print(f"exported {args.run} ({contract.arch}, {len(contract.labels)} classes) -> {version_dir}")
    if contract.routing:
        r, v = contract.routing, contract.routing.validation
        print(f"routing rule: auto-route at top-1 >= {r.confidence_threshold:.4f} for accuracy >= {r.target_accuracy} "
              f"(delta {r.delta}); on val: auto-routed {v.auto_share:.1%}, unfamiliar {v.unfamiliar_share or 0:.1%}"
              if v else f"routing rule {r.method}")
    return 0
