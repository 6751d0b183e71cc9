"""The routing rule that ships with a model version: which decisions are auto-routed, which go to review.

`RoutingRule` is plain data (pydantic, JSON) fitted by the trainer (trainer/selective.py) on held-out
validation predictions and applied by the worker with numpy and plain Python (no torch here):

- **Unfamiliar photos first.** When the model also emits an unfamiliarity score (how unlike the training
  photos an image is; trainer/unfamiliar.py) and it is above `unfamiliar_threshold`, the image goes to
  review with reason `unfamiliar`, whatever its confidence. The threshold was set so that a share
  `unfamiliar_false_alarm` of the validation photos is above it.
- **Then confidence.** Auto-route when the top-1 calibrated probability is at least
  `confidence_threshold` (method "ltt": chosen by Learn-then-Test so that, on data like the validation
  data, the accuracy of auto-routed decisions is at least `target_accuracy` with probability at least
  1 - `delta`; see docs/trust.md) and the top-1 minus top-2 margin is at least `min_margin` (0 for
  "ltt"; method "global" is the explicit override with hand-set `confidence_threshold` and `min_margin`,
  no guarantee). Otherwise review with reason `low_confidence` or `small_margin`.
- **A prediction set for the curator.** Every image gets the classes whose probability is at least
  `set_threshold` (split-conformal LAC sets: on data like the validation data they hold the true class
  with probability at least `set_coverage`), most probable first and never empty, e.g. "Egyptian Art or
  Greek and Roman Art".
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

RouteReason = Literal["confident", "unfamiliar", "low_confidence", "small_margin"]
"""Why: "confident" (auto-routed); the others send the image to review."""


class Validation(BaseModel):
    """What the rule did on the photos it was fitted on: the reference for drift monitoring."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = "val"
    n: int = Field(ge=0, description="Validation photos the rule was fitted on.")
    auto_share: float = Field(ge=0, le=1, description="Share auto-routed (coverage).")
    auto_accuracy: float | None = Field(None, ge=0, le=1, description="Accuracy of the auto-routed ones.")
    risk_bound: float | None = Field(None, ge=0, le=1,
                                     description="Upper (1 - delta) confidence bound of their error rate.")
    unfamiliar_share: float | None = Field(None, ge=0, le=1, description="Share above unfamiliar_threshold.")
    set_coverage: float | None = Field(None, ge=0, le=1, description="Share whose set holds the true class.")
    mean_set_size: float | None = Field(None, ge=0)


class RoutingDecision(NamedTuple):
    auto_route: bool
    reason: RouteReason
    prediction_set: list[str]   # class names, most probable first; [top-1] when auto-routed by confidence


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    method: Literal["ltt", "global"] = Field(
        description="ltt: fitted threshold with a stated guarantee; global: hand-set thresholds (override).")
    classes: list[str] = Field(min_length=1, description="The model's output classes, in output order.")
    confidence_threshold: float = Field(ge=0, le=1.0000001, description="Auto-route at top-1 >= this (> 1: never).")
    min_margin: float = Field(0.0, ge=0, le=1, description="...and top-1 minus top-2 >= this.")
    target_accuracy: float | None = Field(None, gt=0, lt=1, description="ltt: required auto-routed accuracy.")
    delta: float | None = Field(None, gt=0, lt=1, description="ltt: the guarantee holds with probability 1 - delta.")
    set_threshold: float | None = Field(None, ge=0, le=1, description="Prediction set: classes with p >= this.")
    set_coverage: float | None = Field(None, gt=0, lt=1, description="Conformal coverage the set threshold targets.")
    unfamiliar_threshold: float | None = Field(None, description="Review as unfamiliar when the score > this.")
    unfamiliar_false_alarm: float | None = Field(None, ge=0, le=1,
                                                 description="Share of validation photos above the threshold.")
    validation: Validation | None = None

    @model_validator(mode="after")
    def _ltt_has_its_target(self):
        if self.method == "ltt" and (self.target_accuracy is None or self.delta is None):
            raise ValueError("an ltt rule needs target_accuracy and delta")
        return self

    @classmethod
    def global_thresholds(cls, classes: list[str], min_confidence: float = 0.75, min_margin: float = 0.15,
                          base: RoutingRule | None = None) -> RoutingRule:
        """The explicit override: hand-set thresholds; the unfamiliarity gate and sets of `base` are kept."""
        keep = base.model_dump(include={"set_threshold", "set_coverage", "unfamiliar_threshold",
                                        "unfamiliar_false_alarm"}) if base else {}
        return cls(method="global", classes=classes, confidence_threshold=min_confidence, min_margin=min_margin,
                   **keep)

    def apply_batch(self, probs: np.ndarray, unfamiliarity: np.ndarray | None = None
                    ) -> tuple[np.ndarray, list[RouteReason], list[list[str]]]:
        """probs (N, C) calibrated, unfamiliarity (N,) or None -> (auto_route (N,) bool, reasons, sets)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.classes):
            raise ValueError(f"probabilities of shape {p.shape} do not match {len(self.classes)} classes")
        n = len(p)
        order = np.argsort(-p, axis=1, kind="stable")
        top = np.take_along_axis(p, order, axis=1)
        conf = top[:, 0]
        margin = conf - (top[:, 1] if p.shape[1] > 1 else 0.0)
        unfamiliar = np.zeros(n, bool)
        if self.unfamiliar_threshold is not None:
            if unfamiliarity is None:
                raise ValueError("the rule has an unfamiliarity threshold but no unfamiliarity scores were given")
            u = np.asarray(unfamiliarity, dtype=np.float64).reshape(-1)
            if u.shape != (n,):
                raise ValueError(f"unfamiliarity of shape {u.shape} does not match {n} images")
            unfamiliar = ~(u <= self.unfamiliar_threshold)  # NaN counts as unfamiliar
        low = conf < self.confidence_threshold
        small = margin < self.min_margin
        auto = ~unfamiliar & ~low & ~small
        reasons: list[RouteReason] = ["unfamiliar" if unfamiliar[i] else "low_confidence" if low[i]
                                      else "small_margin" if small[i] else "confident" for i in range(n)]
        sets = []
        for i in range(n):
            k = 1 if auto[i] or self.set_threshold is None else max(1, int((top[i] >= self.set_threshold).sum()))
            sets.append([self.classes[j] for j in order[i, :k]])
        return auto, reasons, sets

    def apply(self, probs, unfamiliarity: float | None = None) -> RoutingDecision:
        """One image: probs (C,) calibrated, its unfamiliarity score (or None) -> (auto_route, reason, set).

        The same answer as `apply_batch` on a batch of one, in plain Python: the worker calls it once per
        decision, where numpy's per-call overhead on a vector of a few dozen classes cost more than the work."""
        p = [float(x) for x in probs]
        if len(p) != len(self.classes):
            raise ValueError(f"probabilities of shape ({len(p)},) do not match {len(self.classes)} classes")
        if not all(math.isfinite(x) for x in p):  # NaN has no place in a Python sort: numpy's order decides
            u = None if unfamiliarity is None else np.array([unfamiliarity], dtype=np.float64)
            auto, reasons, sets = self.apply_batch(np.asarray(p, dtype=np.float64)[None, :], u)
            return RoutingDecision(bool(auto[0]), reasons[0], sets[0])
        return self.apply_ordered(p, sorted(range(len(p)), key=p.__getitem__, reverse=True), unfamiliarity)

    def apply_ordered(self, p: list[float], order: list[int], unfamiliarity: float | None = None) -> RoutingDecision:
        """`apply` for finite probabilities `p` (a list, one per class) already ranked: `order` holds their
        indices most probable first, ties by the lower index (what `decide` has computed anyway)."""
        if len(p) != len(self.classes):
            raise ValueError(f"probabilities of shape ({len(p)},) do not match {len(self.classes)} classes")
        conf = p[order[0]]
        margin = conf - (p[order[1]] if len(p) > 1 else 0.0)
        unfamiliar = False
        if self.unfamiliar_threshold is not None:
            if unfamiliarity is None:
                raise ValueError("the rule has an unfamiliarity threshold but no unfamiliarity scores were given")
            unfamiliar = not float(unfamiliarity) <= self.unfamiliar_threshold  # NaN counts as unfamiliar
        low, small = conf < self.confidence_threshold, margin < self.min_margin
        reason: RouteReason = ("unfamiliar" if unfamiliar else "low_confidence" if low
                               else "small_margin" if small else "confident")
        auto = reason == "confident"
        k = 1 if auto or self.set_threshold is None else max(1, sum(x >= self.set_threshold for x in p))
        return RoutingDecision(auto, reason, [self.classes[j] for j in order[:k]])
