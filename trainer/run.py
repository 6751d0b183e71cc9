"""The run directory (runs/NAME): its pydantic records and how to read them back.

    config.json        TrainConfig: every training flag (what `--resume` continues with)
    run.json           RunInfo: classes, taxonomy, arch, input size, normalisation, data hash, final metrics
    checkpoint.pt      latest epoch: model, optimizer, scheduler state, epoch, history (resume + final weights)
    history.jsonl      one JSON line per epoch: lr, train loss/top-1, images/s, val loss/top-1/top-3/macro-F1/ECE
    calibration.json   temperature fitted on the val split, val ECE/NLL before and after
    eval_<split>.json  written by `python -m trainer evaluate` (metrics + per-sample predictions)
    tb/                TensorBoard event files
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from streams.contract.cli import UserError
from trainer.models import Classifier, create_model


class RunError(UserError):
    """A run directory that is missing or incomplete; the message is one line."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: str
    out: str
    taxonomy: str = "corpus"
    drop: list[str] = []
    arch: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    image_size: int = Field(224, ge=16)
    epochs: int = Field(10, ge=1)
    freeze_epochs: int = Field(0, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    batch_size: int = Field(32, ge=1)          # global: divided across DDP processes
    lr: float = Field(5e-4, gt=0)
    frozen_lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)  # backbone LR = lr * this (head at lr)
    augment: Literal["basic", "trivial", "photo"] = "basic"
    mixup: float = Field(0.0, ge=0)        # Beta alpha; 0 = off
    cutmix: float = Field(0.0, ge=0)       # Beta alpha; 0 = off
    drop_path: float = Field(0.0, ge=0, lt=1)
    ema_decay: float = Field(0.0, ge=0, lt=1)  # per-step weight EMA; 0 = off
    drop_hardest: float = Field(0.0, ge=0, lt=0.5)  # fraction of each batch's highest losses ignored
    freeze_bn: bool = False                # BatchNorm statistics stay pretrained while fine-tuning
    balance: Literal["loss", "none"] = "loss"
    workers: int = Field(2, ge=0)
    seed: int = 0
    device: str = "auto"
    max_images: int | None = Field(None, ge=1)  # cap per split (quick demo models)


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arch: str
    classes: list[str]
    taxonomy: str
    class_labels: dict[str, list[str]]   # class -> manifest labels it merges
    department_ids: dict[str, list[int]] = {}  # class -> the department ids it stands for (taxonomy / corpus rows)
    image_size: int
    mean: list[float]
    std: list[float]
    manifest: str
    manifest_sha256: str
    counts: dict[str, int]               # images per split after the taxonomy
    world_size: int
    created: str
    finished: str | None = None
    epochs_done: int = 0
    train_seconds: float = 0.0
    final_val: dict[str, float] = {}


class Calibration(BaseModel):
    temperature: float
    val_ece_before: float
    val_ece_after: float
    val_nll_before: float
    val_nll_after: float


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temp + rename): readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = obj.model_dump_json(indent=2) if isinstance(obj, BaseModel) else json.dumps(obj, indent=2)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.json)")
    return TrainConfig.model_validate_json(path.read_text(encoding="utf-8"))


def read_info(run_dir: str | Path) -> RunInfo:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run directory (no run.json)")
    return RunInfo.model_validate_json(path.read_text(encoding="utf-8"))


def read_calibration(run_dir: str | Path) -> Calibration | None:
    path = Path(run_dir) / "calibration.json"
    return Calibration.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_model(run_dir: str | Path, require_finished: bool = True) -> tuple[RunInfo, Classifier]:
    """The run's classifier with its latest weights (eval mode, CPU)."""
    info = read_info(run_dir)
    if require_finished and info.finished is None:
        raise RunError(f"{run_dir}: training has not finished (run.json has no 'finished'); resume it first")
    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise RunError(f"{run_dir}: no checkpoint.pt")
    model = create_model(info.arch, len(info.classes), pretrained=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return info, model.eval()
