"""Fit the routing rule (streams.contract.routing.RoutingRule) on held-out validation predictions.

**Auto-routing threshold: Learn-then-Test** (Angelopoulos, Bates, Candès, Jordan, Lei 2021, "Learn then
Test: calibrating predictive algorithms to achieve risk control", arXiv:2110.01052; the selective-
classification example of Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction", 2021).
For each threshold λ of a fixed descending grid, the null hypothesis "the error rate of the decisions
with top-1 >= λ (and familiar) exceeds α = 1 - target" is tested with the exact binomial p-value
P(Binomial(n_λ, α) <= errors_λ) on the n_λ validation photos it would auto-route. Fixed-sequence
testing walks down the grid and stops at the first threshold it cannot reject; the lowest rejected λ is
the rule. Then, with probability at least 1 - δ over the draw of the validation photos, the accuracy of
auto-routed decisions on data like them is at least the target (family-wise error control of fixed-
sequence testing). Thresholds that select too few photos for any outcome to reject (fewer than
log δ / log(1 - α): 45 at α = 0.05, δ = 0.1) are skipped, not failed: that depends on the confidences
only, never on the labels. When no threshold is certified the rule never auto-routes.

**Prediction sets: split conformal, LAC score** (Sadinle, Lei & Wasserman 2019, "Least ambiguous
set-valued classifiers with bounded error levels"; Vovk et al. 2005): with s_i = 1 - p_{y_i}(x_i) on n
validation photos and q = the ceil((n+1)(1-ε))-th smallest s_i, the set {y : p_y >= 1 - q} holds the true
class with probability >= 1 - ε (marginally, over validation and a new photo). Never empty: at least the
top-1.

The temperature and the unfamiliarity threshold are fitted on the same validation photos first; the
guarantee is stated conditionally on them (one scalar and one quantile; docs/trust.md).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binom

from streams.contract.routing import RoutingRule, Validation

NEVER = 1.0000001  # a confidence threshold no probability reaches: nothing is auto-routed
# A fixed grid of top-1 thresholds, most conservative first: fine near 1, where the decisions are.
GRID = np.unique(np.concatenate([np.linspace(0.0, 0.9, 91), 0.9 + np.linspace(0.0, 0.099, 100),
                                 1.0 - np.logspace(-3, -6, 31)]))[::-1]


def min_testable(alpha: float, delta: float) -> int:
    """Fewest selected photos for which zero errors rejects at level delta: (1 - alpha)^n <= delta."""
    return math.ceil(math.log(delta) / math.log(1.0 - alpha))


def ltt_threshold(conf: np.ndarray, correct: np.ndarray, target: float, delta: float,
                  eligible: np.ndarray | None = None) -> tuple[float, float | None]:
    """(λ, p-value at λ): the lowest grid threshold certified by fixed-sequence testing, or (NEVER, None) when
    none is. `eligible`: photos that may be auto-routed at all (the familiar ones)."""
    alpha = 1.0 - target
    ok = np.ones(len(conf), bool) if eligible is None else eligible.astype(bool)
    n_min = min_testable(alpha, delta)
    best, best_p = NEVER, None
    for lam in GRID:
        sel = ok & (conf >= lam)
        n = int(sel.sum())
        if n < n_min:
            continue  # untestable: no outcome could reject; decided by confidences alone
        p = float(binom.cdf(int((~correct[sel]).sum()), n, alpha))
        if p > delta:
            break
        best, best_p = float(lam), p
    return best, best_p


def upper_bound(errors: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound of an error rate from `errors` of `n` (n >= 1)."""
    return 1.0 if errors >= n else float(beta.ppf(1 - delta, errors + 1, n - errors))


def conformal_set_threshold(probs: np.ndarray, targets: np.ndarray, coverage: float) -> float:
    """LAC: classes with p >= the returned threshold form sets holding the true class with prob >= coverage."""
    n = len(targets)
    if n == 0:
        return 0.0
    scores = 1.0 - probs[np.arange(n), targets]
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return 0.0  # too few photos for this coverage: every class
    q = float(np.sort(scores)[rank - 1])
    return max(0.0, 1.0 - q)


def fit_rule(probs: np.ndarray, targets: np.ndarray, classes: list[str], target_accuracy: float = 0.95,
             delta: float = 0.1, set_coverage: float | None = None, unfamiliarity: np.ndarray | None = None,
             unfamiliar_threshold: float | None = None, unfamiliar_false_alarm: float | None = None,
             split: str = "val") -> RoutingRule:
    """The LTT rule from calibrated validation probabilities (N, C) and targets (N,); with unfamiliarity scores
    and their threshold (trainer.unfamiliar.threshold_at), only familiar photos are eligible."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    familiar = None
    if unfamiliar_threshold is not None:
        familiar = np.asarray(unfamiliarity, dtype=np.float64) <= unfamiliar_threshold
    lam, _ = ltt_threshold(conf, correct, target_accuracy, delta, familiar)
    set_coverage = target_accuracy if set_coverage is None else set_coverage
    rule = RoutingRule(method="ltt", classes=classes, confidence_threshold=lam,
                       target_accuracy=target_accuracy, delta=delta,
                       set_threshold=conformal_set_threshold(probs, targets, set_coverage), set_coverage=set_coverage,
                       unfamiliar_threshold=unfamiliar_threshold, unfamiliar_false_alarm=unfamiliar_false_alarm)
    return rule.model_copy(update={"validation": measure(rule, probs, targets, unfamiliarity, split)})


def measure(rule: RoutingRule, probs: np.ndarray, targets: np.ndarray, unfamiliarity: np.ndarray | None = None,
            split: str = "val") -> Validation:
    """What the rule does on labelled photos: coverage, accuracy of the auto-routed, sets, unfamiliar share."""
    auto, reasons, sets = rule.apply_batch(probs, unfamiliarity if rule.unfamiliar_threshold is not None else None)
    n = len(targets)
    right = np.asarray(probs).argmax(axis=1) == np.asarray(targets)
    k = int(auto.sum())
    errors = int((auto & ~right).sum())
    delta = rule.delta or 0.1
    truth = [rule.classes[t] for t in targets]
    return Validation(
        split=split, n=n, auto_share=k / n if n else 0.0, auto_accuracy=(k - errors) / k if k else None,
        risk_bound=upper_bound(errors, k, delta) if k else None,
        unfamiliar_share=(sum(r == "unfamiliar" for r in reasons) / n) if rule.unfamiliar_threshold is not None and n else None,
        set_coverage=float(np.mean([t in s for t, s in zip(truth, sets)])) if n else None,
        mean_set_size=float(np.mean([len(s) for s in sets])) if n else None)


def risk_coverage(probs: np.ndarray, targets: np.ndarray, eligible: np.ndarray | None = None
                  ) -> dict[str, list[float]]:
    """The risk-coverage curve (Geifman & El-Yaniv 2017): photos sorted by top-1 probability, most confident
    first; for each k, coverage k/N and the error rate of those k. `eligible` False photos are never covered."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    if eligible is not None:
        conf = np.where(eligible, conf, -np.inf)
    order = np.argsort(-conf, kind="stable")
    wrong = (probs.argmax(axis=1) != np.asarray(targets))[order]
    k = np.arange(1, len(order) + 1)
    valid = np.isfinite(conf[order])
    cov, risk = (k / len(order))[valid], (np.cumsum(wrong) / k)[valid]
    return {"coverage": [round(float(c), 5) for c in cov], "risk": [round(float(r), 5) for r in risk],
            "threshold": [round(float(t), 6) for t in conf[order][valid]]}


def coverage_at_accuracy(curve: dict[str, list[float]], accuracy: float) -> float:
    """The largest coverage at which the curve's accuracy (1 - risk) is still >= `accuracy` (0 when never)."""
    ok = [c for c, r in zip(curve["coverage"], curve["risk"]) if 1 - r >= accuracy - 1e-12]
    return max(ok) if ok else 0.0
