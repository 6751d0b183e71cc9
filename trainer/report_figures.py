"""Figures of the run report, each rendered once as a PNG data URI (base64) and reused by report and slides.

Every function takes plain numbers (lists / arrays) and returns a `data:image/png;base64,...` string, so
the HTML that embeds it needs no other file. matplotlib runs headless (Agg backend).
"""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SPLITS = ("train", "val", "test")


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png_uri(buf.getvalue())


def image_uri(path: str, max_side: int = 160) -> str | None:
    """A thumbnail of an image file as a PNG data URI; None when the file cannot be read."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except OSError:
        return None
    return png_uri(buf.getvalue())


def class_counts(classes: list[str], counts: dict[str, dict[str, int]]) -> str:
    """Horizontal stacked bars: images per class and split (counts[class][split])."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(classes) + 1.2))
    left = np.zeros(len(classes))
    y = np.arange(len(classes))
    for split in SPLITS:
        n = np.array([counts[c].get(split, 0) for c in classes], dtype=float)
        ax.barh(y, n, left=left, label=split)
        left += n
    ax.set_yticks(y, classes)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="lower right")
    ax.set_title("Images per class and split")
    return figure_uri(fig)


def training_curves(history: list[dict]) -> str:
    """Loss (train, val) and top-1 (train, val) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    a.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    b.plot(epochs, [h["train_top1"] for h in history], "o-", label="train")
    b.plot(epochs, [h["val_top1"] for h in history], "o-", label="val")
    b.set(title="Top-1 accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    return figure_uri(fig)


def confusion_matrix(cm: list[list[int]], classes: list[str]) -> str:
    """Counts with row-normalised colour (rows = true class)."""
    m = np.array(cm, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = 1.2 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if len(classes) <= 25:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return figure_uri(fig)


def reliability_bins(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> tuple[np.ndarray, ...]:
    """Per equal-width confidence bin (same bins as trainer.calibration.ece): mean confidence, accuracy, count."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    safe = np.maximum(count, 1)
    return (np.bincount(which, conf, bins) / safe, np.bincount(which, correct.astype(float), bins) / safe,
            count, edges)


def reliability(before: np.ndarray, after: np.ndarray, targets: np.ndarray, ece_before: float,
                ece_after: float, temperature: float) -> str:
    """Reliability diagrams side by side: uncalibrated and temperature-scaled probabilities."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, probs, title, e in ((axes[0], before, "before (T = 1)", ece_before),
                                (axes[1], after, f"after (T = {temperature:.2f})", ece_after)):
        conf, acc, count, edges = reliability_bins(probs, targets)
        width = edges[1] - edges[0]
        shown = count > 0
        ax.bar(edges[:-1][shown], acc[shown], width=width, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot(conf[shown], acc[shown], "r.", label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(title=f"{title}: ECE {e:.3f}", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy")
    return figure_uri(fig)


def risk_coverage(coverage: list[float], risk: list[float], target_accuracy: float,
                  rule_point: tuple[float, float | None] | None) -> str:
    """Accuracy of the auto-routed photos against the share auto-routed (most confident first), with the
    target and the fitted rule's operating point."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(coverage, 1 - np.asarray(risk), "-", label="most confident first")
    ax.axhline(target_accuracy, color="k", ls="--", lw=1, label=f"target {target_accuracy:.0%}")
    if rule_point is not None and rule_point[1] is not None:
        ax.plot([rule_point[0]], [rule_point[1]], "ro", label=f"fitted rule: {rule_point[0]:.0%} auto-routed")
    ax.set(xlabel="share auto-routed (coverage)", ylabel="accuracy of auto-routed", xlim=(0, 1.01),
           ylim=(max(0.0, min([*(1 - np.asarray(risk)), target_accuracy]) - 0.05), 1.005),
           title="Risk-coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure_uri(fig)


def unfamiliarity(groups: dict[str, list[float]], threshold: float | None) -> str:
    """Histograms of the unfamiliarity score per photo set (split, shifted, non-artwork) and the threshold."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    values = [v for vs in groups.values() for v in vs]
    bins = np.linspace(min(values), max(values), 40) if values else 10
    for name, vs in groups.items():
        if vs:
            ax.hist(vs, bins=bins, alpha=0.5, density=True, label=f"{name} ({len(vs)})")
    if threshold is not None:
        ax.axvline(threshold, color="r", ls="--", label="unfamiliar above")
    ax.set(xlabel="unfamiliarity (k-NN cosine distance to the training photos)", ylabel="density",
           title="How unlike the training photos")
    ax.legend(fontsize=8)
    return figure_uri(fig)
