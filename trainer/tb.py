"""TensorBoard logging (rank 0 only, under RUN/tb): scalars per epoch, figures and hparams at the end."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def writer(run_dir: Path, main: bool):
    if not main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(run_dir) / "tb"))


def log_epoch(w, row: dict, val: dict, step: int) -> None:
    if w is None:
        return
    w.add_scalar("lr", row["lr"], step)
    w.add_scalar("train/loss", row["train_loss"], step)
    w.add_scalar("train/top1", row["train_top1"], step)
    w.add_scalar("train/images_per_s", row["images_per_s"], step)
    for k in ("loss", "top1", "top3", "macro_f1", "ece"):
        w.add_scalar(f"val/{k}", val[k], step)
    for name, pc in val["per_class"].items():
        w.add_scalar(f"val_f1/{name}", pc["f1"], step)
    w.flush()


def confusion_figure(cm: np.ndarray | list, classes: list[str], title: str = "confusion (val)"):
    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n))
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def predictions_figure(samples, probs: np.ndarray, classes: list[str], n: int = 16):
    """A grid of images with true label, prediction and confidence (green when right, red when wrong)."""
    n = min(n, len(samples))
    cols = 4
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(cols * 2.4, 2.6 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    step = max(1, len(samples) // n)
    for ax, i in zip(axes.flat, range(0, step * n, step)):
        with Image.open(samples[i].path) as im:
            ax.imshow(im.convert("RGB"))
        pred = int(probs[i].argmax())
        ok = pred == samples[i].target
        ax.set_title(f"{classes[samples[i].target][:18]}\n-> {classes[pred][:18]} {probs[i, pred]:.2f}",
                     fontsize=7, color="green" if ok else "red")
    fig.tight_layout()
    return fig


def log_final(w, cfg, info, val: dict, calibrated_probs: np.ndarray, val_samples, cal) -> None:
    if w is None:
        return
    step = info.epochs_done
    w.add_figure("val/confusion", confusion_figure(val["confusion"], info.classes), step)
    w.add_figure("val/predictions", predictions_figure(val_samples, calibrated_probs, info.classes), step)
    hparams = {k: v for k, v in cfg.model_dump().items() if isinstance(v, (int, float, str, bool))}
    metrics = {"hparam/val_top1": val["top1"], "hparam/val_top3": val["top3"],
               "hparam/val_macro_f1": val["macro_f1"], "hparam/val_ece": cal.val_ece_before,
               "hparam/val_ece_calibrated": cal.val_ece_after, "hparam/temperature": cal.temperature}
    w.add_hparams(hparams, metrics, run_name=".")
    w.flush()
