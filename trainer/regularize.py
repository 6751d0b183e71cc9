"""Regularisers for small, noisy fine-tuning sets: weight EMA and MixUp/CutMix.

- `Ema`: an exponential moving average of the model's weights and BatchNorm statistics, updated after
  every optimizer step with timm's warm-up (decay_t = min(decay, (1 + t) / (10 + t))), so the first
  steps do not pin the average to the initial head. When on, the EMA model is what is evaluated each
  epoch and what the run keeps (`checkpoint.pt["model"]`).
- `mix_batch`: MixUp (blend two images) or CutMix (paste a box of one into the other), one of them per
  batch when both are on, with a mixing weight lam ~ Beta(alpha, alpha). The loss is then
  lam * CE(y) + (1 - lam) * CE(y_other). Randomness comes from a generator seeded by (seed, epoch, rank).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class Ema:
    """EMA of a module's state (floating tensors averaged, integer buffers copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for e, p in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(p.detach(), 1.0 - d)
            else:
                e.copy_(p)
        self.steps += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = state["steps"]


def mix_batch(images: torch.Tensor, targets: torch.Tensor, mixup: float, cutmix: float,
              g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mixed images as float 0..255, the other targets, lam); lam = 1 when neither is on."""
    if (mixup <= 0 and cutmix <= 0) or len(targets) < 2:
        return images, targets, 1.0
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand((), generator=g).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, g)
    perm = torch.randperm(len(targets), generator=g)
    x = images.float()
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(h, (), generator=g)), int(torch.randint(w, (), generator=g))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, targets[perm], lam


def _beta(alpha: float, g: torch.Generator) -> float:
    """Beta(alpha, alpha) from two Gamma draws of the seeded generator (torch's Beta takes no generator)."""
    a = torch._standard_gamma(torch.full((2,), alpha), generator=g)
    return float(a[0] / a.sum())
