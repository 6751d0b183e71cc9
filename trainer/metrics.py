"""Classification metrics from probabilities: top-k, macro-F1, per-class precision/recall, confusion."""
from __future__ import annotations

import numpy as np

from trainer.calibration import ece


def confusion(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """rows = true class, columns = predicted class."""
    return np.bincount(targets * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def top_k(probs: np.ndarray, targets: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    topk = np.argsort(-probs, axis=1)[:, :k]
    return float((topk == targets[:, None]).any(axis=1).mean()) if len(targets) else 0.0


def per_class(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])} for i, c in enumerate(classes)}


def summarize(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    """top1, top3, macro_f1 (over classes with support), per_class, confusion, ece."""
    cm = confusion(targets, probs.argmax(axis=1), len(classes))
    pc = per_class(cm, classes)
    f1s = [v["f1"] for v in pc.values() if v["support"] > 0]
    return {"n": int(len(targets)), "top1": top_k(probs, targets, 1), "top3": top_k(probs, targets, 3),
            "macro_f1": float(np.mean(f1s)) if f1s else 0.0, "ece": ece(probs, targets),
            "per_class": pc, "confusion": cm.tolist()}


def group_probs(probs: np.ndarray, groups: list[int], num_groups: int) -> np.ndarray:
    """Sum fine-class probabilities into coarser groups (groups[i] = group of fine class i)."""
    out = np.zeros((probs.shape[0], num_groups), dtype=probs.dtype)
    for i, g in enumerate(groups):
        out[:, g] += probs[:, i]
    return out
