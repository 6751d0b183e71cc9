"""How unlike the training photos an image is: k-nearest-neighbour distance in the backbone's feature space.

The score (Sun, Ming, Zhu & Li 2022, "Out-of-distribution detection with deep nearest neighbors", ICML) is
1 - the cosine similarity of an image's features to its k-th nearest training photo: near 0 for a photo
like many training photos, larger the further it is from all of them. It needs no labels, no covariance
and no assumption about the shape of the classes.

The features are taken at `taps`: the globally pooled outputs of named modules of the classifier, each
L2-normalised, concatenated and scaled by 1/sqrt(len(taps)) (so the cosine similarity is the mean of the
taps' cosine similarities). For EfficientNet/MobileNet-style timm backbones the default taps are the two
stages before the last (`net.blocks.4`, `net.blocks.5` of EfficientNet-Lite): fine-tuning makes the last
stages and the head's input specific to the classes, and there a photo of a cat can look like an amulet
(docs/trust.md has the screen). Other backbones use the head's input (an empty `taps`).

`Unfamiliarity` is a torch module (features (N, D) -> score (N,)) holding the training features as a
buffer, so it can be traced into the exported model beside the classifier: `Trusted` computes logits and
features in one forward pass and returns (probabilities, unfamiliarity) — the served model's two outputs.
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
    """features (N, D) -> k-NN cosine distance to the training bank (N,), float32; `taps` says where the
    features come from (`logits_and_features`)."""

    def __init__(self, bank: torch.Tensor, k: int = DEFAULT_K, normalised: bool = False, taps: list[str] = ()):
        super().__init__()
        if bank.ndim != 2 or len(bank) == 0:
            raise ValueError(f"a feature bank of shape {tuple(bank.shape)} is not (M >= 1, D)")
        self.k = int(min(k, len(bank)))
        self.taps = list(taps)
        self.register_buffer("bank", bank.float() if normalised else F.normalize(bank.float(), dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(features.float(), dim=1) @ self.bank.T
        return 1.0 - sim.topk(self.k, dim=1).values[:, -1]


def default_taps(classifier: Classifier) -> list[str]:
    """The two stages before the last of a timm backbone with `blocks` (EfficientNet, MobileNet); else [] (the
    head's input)."""
    blocks = getattr(classifier.net, "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) >= 4:
        return [f"net.blocks.{len(blocks) - 3}", f"net.blocks.{len(blocks) - 2}"]
    return []


def logits_and_features(classifier: Classifier, x: torch.Tensor, taps: list[str] = ()
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features (N, D)) from one forward pass: the pooled, L2-normalised outputs of the `taps` modules
    concatenated (/ sqrt(len)), or with no taps the head's input. Forward hooks, so it traces."""
    captured: list[torch.Tensor] = []
    if taps:
        handles = [classifier.get_submodule(t).register_forward_hook(lambda _m, _a, out: captured.append(out))
                   for t in taps]
    else:
        handles = [classifier.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))]
    try:
        logits = classifier(x)
    finally:
        for h in handles:
            h.remove()
    if not taps:
        return logits, captured[0].flatten(1)
    parts = [F.normalize((c.mean((2, 3)) if c.ndim == 4 else c.flatten(1)).float(), dim=1) for c in captured]
    return logits, torch.cat(parts, dim=1) / math.sqrt(len(parts))


class Trusted(nn.Module):
    """uint8 NCHW images -> (calibrated probabilities softmax(logits / T) (N, C), unfamiliarity (N,))."""

    def __init__(self, classifier: Classifier, temperature: float, unfamiliarity: Unfamiliarity):
        super().__init__()
        self.classifier = classifier
        self.unfamiliarity = unfamiliarity
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = logits_and_features(self.classifier, x, self.unfamiliarity.taps)
        return torch.softmax(logits / self.temperature, dim=1), self.unfamiliarity(features)


MAX_BANK = 20_000  # training photos kept in the bank (a random subset beyond): 100 MB at 1280 features


def fit(train_features: np.ndarray | torch.Tensor, k: int = DEFAULT_K, taps: list[str] = (),
        max_bank: int = MAX_BANK, seed: int = 0) -> Unfamiliarity:
    """The score for these training photos' features (N, D) taken at `taps`; more than `max_bank`: a fixed
    random subset."""
    feats = np.asarray(train_features, dtype=np.float32)
    if len(feats) > max_bank:
        feats = feats[np.sort(np.random.default_rng(seed).choice(len(feats), max_bank, replace=False))]
    return Unfamiliarity(torch.from_numpy(feats), k, taps=taps)


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
    torch.save({"method": "knn-cosine", "k": scorer.k, "taps": scorer.taps, "bank": scorer.bank.cpu()}, tmp)
    tmp.replace(path)
    return path


def load(run_dir: str | Path) -> Unfamiliarity | None:
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return Unfamiliarity(state["bank"], state["k"], normalised=True, taps=state.get("taps", []))


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
