"""Calibration: expected calibration error and temperature scaling (Guo et al., 2017).

The temperature T is fitted on validation logits by minimising the negative log-likelihood of
softmax(logits / T); it is stored in the run (calibration.json) and baked into the exported model.

ECE measured on n images is never 0, even for a perfectly calibrated model: `ece_floor` says how large it
comes out by chance alone (so that 0.034 on 1,058 photos can be read against ~0.03 of pure noise).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def ece(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence| * weight."""
    if len(targets) == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def ece_floor(probs: np.ndarray, bins: int = 15, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(mean, 95th percentile) of the ECE that a perfectly calibrated model giving exactly these probabilities
    shows on this many images: each draw takes every image's label from its own probability vector, so the
    model is right with probability equal to its confidence, and `ece` measures only sampling noise."""
    if len(probs) == 0:
        return 0.0, 0.0
    probs = np.asarray(probs, dtype=np.float64)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    rng, total = np.random.default_rng(seed), np.zeros(draws)
    step = max(1, 4_000_000 // probs.size)   # draws per chunk: ~4M comparisons (tens of MB) at a time
    for start in range(0, draws, step):
        u = rng.random((min(step, draws - start), len(probs), 1))
        labels = np.minimum((u > cum[None]).sum(axis=2), probs.shape[1] - 1)   # inverse-CDF sampling
        correct = labels == pred[None]
        for b in np.unique(which):
            m = which == b
            total[start:start + len(u)] += m.mean() * np.abs(correct[:, m].mean(axis=1) - conf[m].mean())
    return float(total.mean()), float(np.percentile(total, 95))


def nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    x = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(x, torch.as_tensor(targets, dtype=torch.long)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 200) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T) (LBFGS on log T)."""
    if len(targets) == 0:
        return 1.0
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if np.isfinite(t) else 1.0
