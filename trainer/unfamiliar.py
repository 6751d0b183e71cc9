"""How unlike the training photos an image is: k-nearest-neighbour distance in the backbone's feature space.

The score (Sun, Ming, Zhu & Li 2022, "Out-of-distribution detection with deep nearest neighbors", ICML) is
1 - the cosine similarity of an image's L2-normalised penultimate features (the head's input) to its k-th
nearest training photo: near 0 for a photo like many training photos, larger the further it is from all
of them. It needs no labels, no covariance and no assumption about the shape of the classes.

`Unfamiliarity` is a torch module (features (N, D) -> score (N,)) holding the normalised training
features as a buffer, so it can be traced into the exported model beside the classifier: `Trusted`
computes the features once and returns (probabilities, unfamiliarity) — the served model's two outputs.
Its parameters are saved in the run directory as `unfamiliar.pt` (`save` / `load`). The review threshold
is the (1 - false-alarm) quantile of the validation photos' scores (`threshold_at`), kept in the routing
rule (streams.contract.routing.RoutingRule.unfamiliar_threshold).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.models import Classifier

FILE = "unfamiliar.pt"
DEFAULT_K = 10


class Unfamiliarity(nn.Module):
    """features (N, D) -> k-NN cosine distance to the training bank (N,), float32."""

    def __init__(self, bank: torch.Tensor, k: int = DEFAULT_K, normalised: bool = False):
        super().__init__()
        if bank.ndim != 2 or len(bank) == 0:
            raise ValueError(f"a feature bank of shape {tuple(bank.shape)} is not (M >= 1, D)")
        self.k = int(min(k, len(bank)))
        self.register_buffer("bank", bank.float() if normalised else F.normalize(bank.float(), dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(features.float(), dim=1) @ self.bank.T
        return 1.0 - sim.topk(self.k, dim=1).values[:, -1]


def head_input(classifier: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features): one forward pass, the features being what the classifier's head receives (the pooled
    penultimate layer). Works for every backbone: a forward pre-hook on the head (traceable)."""
    captured: list[torch.Tensor] = []
    handle = classifier.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        logits = classifier(x)
    finally:
        handle.remove()
    return logits, captured[0].flatten(1)


class Trusted(nn.Module):
    """uint8 NCHW images -> (calibrated probabilities softmax(logits / T) (N, C), unfamiliarity (N,))."""

    def __init__(self, classifier: Classifier, temperature: float, unfamiliarity: Unfamiliarity):
        super().__init__()
        self.classifier = classifier
        self.unfamiliarity = unfamiliarity
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = head_input(self.classifier, x)
        return torch.softmax(logits / self.temperature, dim=1), self.unfamiliarity(features)


MAX_BANK = 20_000  # training photos kept in the bank (a random subset beyond): 100 MB at 1280 features


def fit(train_features: np.ndarray | torch.Tensor, k: int = DEFAULT_K, max_bank: int = MAX_BANK,
        seed: int = 0) -> Unfamiliarity:
    """The score for these training photos' features (N, D); more than `max_bank`: a fixed random subset."""
    feats = np.asarray(train_features, dtype=np.float32)
    if len(feats) > max_bank:
        feats = feats[np.sort(np.random.default_rng(seed).choice(len(feats), max_bank, replace=False))]
    return Unfamiliarity(torch.from_numpy(feats), k)


def threshold_at(val_scores: np.ndarray, false_alarm: float) -> float:
    """The score above which a share <= `false_alarm` of the validation photos lies (their review cost)."""
    s = np.sort(np.asarray(val_scores, dtype=np.float64))
    if len(s) == 0:
        raise ValueError("no validation scores to set the unfamiliarity threshold on")
    keep = min(len(s), math.ceil((1.0 - false_alarm) * len(s)))  # at least this many at or below
    return float(s[max(0, keep - 1)])


def save(scorer: Unfamiliarity, run_dir: str | Path) -> Path:
    path = Path(run_dir) / FILE
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"method": "knn-cosine", "k": scorer.k, "bank": scorer.bank.cpu()}, tmp)
    tmp.replace(path)
    return path


def load(run_dir: str | Path) -> Unfamiliarity | None:
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Unfamiliarity(state["bank"], state["k"], normalised=True)


def auroc(familiar: np.ndarray, unfamiliar: np.ndarray) -> float | None:
    """P(score of an unfamiliar image > score of a familiar one), ties counted half (Mann-Whitney)."""
    a, b = np.asarray(familiar, dtype=np.float64), np.asarray(unfamiliar, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return None
    ranks = _ranks(np.concatenate([a, b]))
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)
