"""Routing you can trust, for one run: fit the unfamiliarity score and the routing rule, and measure both.

`fit(...)` fits, from a run's own predictions, (1) the unfamiliarity score (trainer/unfamiliar.py: k-NN in
the features of the training photos), (2) its threshold at `false_alarm` on the validation photos and
(3) the routing rule (trainer/selective.py: Learn-then-Test threshold for `target_accuracy` with
probability 1 - `delta`, conformal prediction sets), and saves them in the run directory:

    RUN/unfamiliar.pt   the score's parameters (normalised training features, k): `trainer.unfamiliar.load`
    RUN/routing.json    the rule: `streams.contract.routing.RoutingRule`

`measure(...)` reports what they do on a labelled split (coverage, accuracy of auto-routed decisions,
risk-coverage curve, sets), on shifted copies of the split's photos (trainer/shift.py) and on
non-artwork photos (skimage.data): unfamiliarity AUROC against the clean split, share flagged,
auto-routed share and accuracy under the shift. `trainer evaluate` runs both (docs/trust.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from streams.contract.imaging import MAX_IMAGE_PIXELS, load_image, to_model_input, to_rgb
from streams.contract.routing import RoutingRule
from trainer import selective, shift, unfamiliar
from trainer.run import write_json

RULE_FILE = "routing.json"


class TrustConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_accuracy: float = Field(0.95, gt=0, lt=1)
    delta: float = Field(0.1, gt=0, lt=1)
    set_coverage: float | None = Field(None, gt=0, lt=1)   # default: target_accuracy
    false_alarm: float = Field(0.05, ge=0, lt=1)
    k: int = Field(unfamiliar.DEFAULT_K, ge=1)
    shifted: bool = True                                      # measure on shifted photos and non-artwork photos


class ImageList(Dataset):
    """(uint8 (3, H, W), 0, index) for PIL images made on demand by `make(i)` (a shift of a file, a photo)."""

    def __init__(self, n: int, make, size: tuple[int, int]):
        self.n, self.make, self.size = n, make, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.from_numpy(to_model_input(self.make(i), self.size)), 0, i


def load_rgb(path: str | Path, size: tuple[int, int]):
    return to_rgb(load_image(Path(path).read_bytes(), MAX_IMAGE_PIXELS, size))


@torch.no_grad()
def predict_features(model, dataset: Dataset, batch_size: int = 64, workers: int = 0,
                     device: str | torch.device = "cpu", taps: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's logits and unfamiliarity features (at `taps`, default `unfamiliar.default_taps`), in
    dataset order (one forward pass each)."""
    taps = unfamiliar.default_taps(model) if taps is None else taps
    model.eval().to(device, memory_format=torch.channels_last)
    logits, feats = [], []
    for images, _, _ in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        lo, fe = unfamiliar.logits_and_features(model, images, taps)
        logits.append(lo.float().cpu().numpy())
        feats.append(fe.float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def scores(scorer: unfamiliar.Unfamiliarity, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return scorer(torch.from_numpy(features)).numpy().astype(np.float64)


def fit(run_dir: str | Path, classes: list[str], train_features: np.ndarray, val_probs: np.ndarray,
        val_targets: np.ndarray, val_features: np.ndarray, cfg: TrustConfig,
        taps: list[str] = ()) -> tuple[RoutingRule, unfamiliar.Unfamiliarity]:
    """Fit and save (RUN/unfamiliar.pt, RUN/routing.json) the unfamiliarity score (features taken at `taps`)
    and the routing rule."""
    scorer = unfamiliar.fit(train_features, cfg.k, taps)
    val_u = scores(scorer, val_features)
    tau = unfamiliar.threshold_at(val_u, cfg.false_alarm)
    rule = selective.fit_rule(val_probs, val_targets, classes, cfg.target_accuracy, cfg.delta, cfg.set_coverage,
                              val_u, tau, cfg.false_alarm)
    unfamiliar.save(scorer, run_dir)
    write_json(Path(run_dir) / RULE_FILE, rule)
    return rule, scorer


def fit_run(run_dir: str | Path, cfg: TrustConfig | None = None, corpus: str | None = None, batch_size: int = 64,
            workers: int = 0, device: str = "cpu") -> tuple[RoutingRule, unfamiliar.Unfamiliarity]:
    """Fit (and save) the rule and the score of a finished run from its own train and val photos, with the
    run's temperature (calibration.json): what export calls for another --target-accuracy."""
    from trainer.calibration import softmax
    from trainer.data import ImageDataset, load_corpus, load_split
    from trainer.evaluate import run_taxonomy
    from trainer.run import RunError, load_model, read_calibration

    cfg = cfg or TrustConfig()
    info, model = load_model(run_dir)
    cal = read_calibration(run_dir)
    if cal is None:
        raise RunError(f"{run_dir}: no calibration.json; train or evaluate the run first")
    rows, base = load_corpus(corpus or info.manifest)
    size = (info.image_size, info.image_size)
    out = {}
    for split in ("train", "val"):
        samples = load_split(rows, base, run_taxonomy(info), split)
        logits, feats = predict_features(model, ImageDataset(samples, size, train=False), batch_size, workers, device)
        out[split] = (softmax(logits, cal.temperature), feats, np.array([s.target for s in samples]))
    return fit(run_dir, info.classes, out["train"][1], out["val"][0], out["val"][2], out["val"][1], cfg,
               unfamiliar.default_taps(model))


def for_export(run_dir: str | Path, target_accuracy: float, delta: float) -> tuple[RoutingRule, unfamiliar.Unfamiliarity]:
    """The rule for `target_accuracy`/`delta` and the score of a run: those `trainer evaluate` saved (the rule
    refitted from the stored val predictions when it was fitted for another target), else fitted now from the
    run's train and val photos (`fit_run`)."""
    import json

    rule, scorer = read_rule(run_dir), unfamiliar.load(run_dir)
    if rule is None or scorer is None:
        return fit_run(run_dir, TrustConfig(target_accuracy=target_accuracy, delta=delta))
    if (rule.target_accuracy, rule.delta) == (target_accuracy, delta):
        return rule, scorer
    for path in sorted(Path(run_dir).glob("eval_*.json")):
        ev = json.loads(path.read_text(encoding="utf-8"))
        if ev.get("val_predictions") and ev.get("trust", {}).get("rule") == rule.model_dump(mode="json"):
            return RoutingRule.model_validate(refit(ev, target_accuracy, delta)["trust"]["rule"]), scorer
    cfg = TrustConfig(target_accuracy=target_accuracy, delta=delta, set_coverage=rule.set_coverage,
                      false_alarm=rule.unfamiliar_false_alarm or TrustConfig().false_alarm, k=scorer.k)
    return fit_run(run_dir, cfg)


def read_rule(run_dir: str | Path) -> RoutingRule | None:
    path = Path(run_dir) / RULE_FILE
    return RoutingRule.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


def _rounded(p: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in p]


def val_predictions(samples, probs: np.ndarray, u: np.ndarray, classes: list[str]) -> list[dict]:
    """What the rule was fitted on, stored in eval_<split>.json so a rule for another target can be refitted
    without the images (`refit`)."""
    return [{"path": str(s.path), "target": classes[s.target], "probs": _rounded(p), "unfamiliarity": round(float(x), 6)}
            for s, p, x in zip(samples, probs, u)]


def refit(ev: dict, target_accuracy: float, delta: float) -> dict:
    """An eval_<split>.json dict with its rule refitted from its `val_predictions` for another target and delta
    (same unfamiliarity threshold and sets), and every stored decision re-made with it."""
    old = RoutingRule.model_validate(ev["trust"]["rule"])
    vp, targets, u = _val_arrays(ev)
    rule = selective.fit_rule(vp, targets, ev["classes"], target_accuracy, delta, old.set_coverage, u,
                              old.unfamiliar_threshold, old.unfamiliar_false_alarm)
    return redecide(ev, rule.model_copy(update={"set_threshold": old.set_threshold}))


def refit_pooled(evals: list[dict], target_accuracy: float, delta: float) -> tuple[float, list[dict]]:
    """One confidence threshold for a recipe's runs (e.g. the folds of a cross-validation), fitted by
    Learn-then-Test on their validation predictions pooled: ten folds pool ~10x the photos of one val split,
    so a target such as 95 % can be certified where ~100 photos cannot (docs/trust.md section 1). Each run
    keeps its unfamiliarity gate (which decides which of its val photos are eligible) and its sets.
    The guarantee is then about the recipe (a model trained so, with its rule) rather than one model.
    Returns (threshold, the evals re-decided with it)."""
    conf, correct, eligible = [], [], []
    rules = [RoutingRule.model_validate(ev["trust"]["rule"]) for ev in evals]
    for ev, rule in zip(evals, rules):
        vp, targets, u = _val_arrays(ev)
        conf.append(vp.max(axis=1))
        correct.append(vp.argmax(axis=1) == targets)
        eligible.append(u <= rule.unfamiliar_threshold if rule.unfamiliar_threshold is not None
                        else np.ones(len(u), bool))
    lam, _ = selective.ltt_threshold(np.concatenate(conf), np.concatenate(correct), target_accuracy, delta,
                                     np.concatenate(eligible))
    update = {"confidence_threshold": lam, "target_accuracy": target_accuracy, "delta": delta}
    return lam, [redecide(ev, rule.model_copy(update=update)) for ev, rule in zip(evals, rules)]


def _val_arrays(ev: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs (N, C), target indices (N,), unfamiliarity (N,)) of an eval's stored val predictions."""
    val, classes = ev["val_predictions"], ev["classes"]
    return (np.array([p["probs"] for p in val]), np.array([classes.index(p["target"]) for p in val]),
            np.array([p["unfamiliarity"] for p in val], dtype=np.float64))


def redecide(ev: dict, rule: RoutingRule) -> dict:
    """`ev` (an eval_<split>.json dict) with `rule` as its rule and every stored decision re-made with it."""
    out = dict(ev, trust=dict(ev["trust"], rule=rule.model_dump(mode="json")))
    for key in ("predictions", "shifted_predictions", "non_artwork_predictions"):
        preds = ev.get(key, [])
        if preds:
            made = decisions(rule, np.array([p["probs"] for p in preds]), np.array([p["unfamiliarity"] for p in preds]))
            out[key] = [dict(p, **d) for p, d in zip(preds, made)]
    return out


def decisions(rule: RoutingRule, probs: np.ndarray, u: np.ndarray) -> list[dict]:
    auto, reasons, sets = rule.apply_batch(probs, u)
    return [{"unfamiliarity": round(float(x), 6), "auto_route": bool(a), "reason": r, "prediction_set": s}
            for x, a, r, s in zip(u, auto, reasons, sets)]


def selective_summary(rule: RoutingRule, probs: np.ndarray, targets: np.ndarray, u: np.ndarray) -> dict:
    """Coverage/accuracy of auto-routed decisions at the rule, the risk-coverage curve, the sets."""
    v = selective.measure(rule, probs, targets, u)
    familiar = u <= rule.unfamiliar_threshold if rule.unfamiliar_threshold is not None else None
    curve = selective.risk_coverage(probs, targets, familiar)
    return {"n": v.n, "coverage": v.auto_share, "auto_accuracy": v.auto_accuracy,
            "auto_n": int(round(v.auto_share * v.n)), "risk_bound": v.risk_bound, "set_coverage": v.set_coverage,
            "mean_set_size": v.mean_set_size, "unfamiliar_share": v.unfamiliar_share,
            "coverage_at_target": selective.coverage_at_accuracy(curve, rule.target_accuracy or 0.95),
            "risk_coverage": curve}


def measure(model, rule: RoutingRule, scorer: unfamiliar.Unfamiliarity, probs: np.ndarray, targets: np.ndarray,
            features: np.ndarray, samples, size: tuple[int, int], temperature: float, cfg: TrustConfig,
            batch_size: int = 64, workers: int = 0, device="cpu") -> tuple[dict, list[dict], dict]:
    """(summary, per-sample decisions of the split, extra predictions {shifted, non_artwork})."""
    from trainer.calibration import softmax

    u = scores(scorer, features)
    summary = {"rule": rule.model_dump(mode="json"), "split": selective_summary(rule, probs, targets, u)}
    per_sample = decisions(rule, probs, u)
    extra: dict = {}
    if not cfg.shifted:
        return summary, per_sample, extra
    kinds = shift.KINDS
    n = len(samples)
    ds = ImageList(n * len(kinds), lambda i: shift.shift(load_rgb(samples[i % n].path, size), kinds[i // n],
                                                         Path(samples[i % n].path).name), size)
    s_logits, s_feats = predict_features(model, ds, batch_size, workers, device, scorer.taps)
    s_probs, s_u = softmax(s_logits, temperature), scores(scorer, s_feats)
    photos = shift.non_artwork()
    n_logits, n_feats = predict_features(model, ImageList(len(photos), lambda i: photos[i][1], size),
                                         batch_size, 0, device, scorer.taps)
    n_probs, n_u = softmax(n_logits, temperature), scores(scorer, n_feats)
    shifted, extra["shifted"] = {}, []
    s_dec = decisions(rule, s_probs, s_u)
    for j, kind in enumerate(kinds):
        part = slice(j * n, (j + 1) * n)
        right = s_probs[part].argmax(1) == targets
        auto = np.array([d["auto_route"] for d in s_dec[part]])
        shifted[kind] = {"n": n, "top1": float(right.mean()), "auto_share": float(auto.mean()),
                         "auto_accuracy": float(right[auto].mean()) if auto.any() else None,
                         "unfamiliar_share": float((s_u[part] > rule.unfamiliar_threshold).mean()),
                         "auroc": unfamiliar.auroc(u, s_u[part])}
        for i in range(n):
            p = s_probs[j * n + i]
            extra["shifted"].append({"path": str(samples[i].path), "kind": kind, "target": rule.classes[targets[i]],
                                     "pred": rule.classes[int(p.argmax())], "confidence": float(p.max()),
                                     "probs": _rounded(p), **s_dec[j * n + i]})
    s_right = s_probs.argmax(1) == np.tile(targets, len(kinds))
    s_auto = np.array([d["auto_route"] for d in s_dec])
    shifted["all"] = {"n": len(s_u), "top1": float(s_right.mean()), "auto_share": float(s_auto.mean()),
                      "auto_accuracy": float(s_right[s_auto].mean()) if s_auto.any() else None,
                      "unfamiliar_share": float((s_u > rule.unfamiliar_threshold).mean()),
                      "auroc": unfamiliar.auroc(u, s_u)}
    n_dec = decisions(rule, n_probs, n_u)
    extra["non_artwork"] = [{"name": name, "pred": rule.classes[int(p.argmax())], "confidence": float(p.max()),
                             "probs": _rounded(p), **d} for (name, _), p, d in zip(photos, n_probs, n_dec)]
    summary["shifted"] = shifted
    summary["non_artwork"] = {"n": len(photos), "auroc": unfamiliar.auroc(u, n_u),
                              "unfamiliar_share": float((n_u > rule.unfamiliar_threshold).mean()),
                              "auto_share": float(np.mean([d["auto_route"] for d in n_dec]))}
    return summary, per_sample, extra


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def summary_lines(t: dict) -> str:
    """The trust part of `trainer evaluate`'s printout."""
    r, s = t["rule"], t["split"]
    lines = [f"routing rule ({r['method']}, target {r['target_accuracy']}, delta {r['delta']}): auto-route at top-1 >= "
             f"{r['confidence_threshold']:.4f}; unfamiliar above {r['unfamiliar_threshold']:.4f} "
             f"({_pct(r['unfamiliar_false_alarm'])} of val); sets p >= {r['set_threshold']:.4f}",
             f"  split: auto-routed {s['auto_n']}/{s['n']} = {_pct(s['coverage'])} at accuracy {_pct(s['auto_accuracy'])}"
             f"; coverage at {_pct(r['target_accuracy'])} accuracy on the curve {_pct(s['coverage_at_target'])}; "
             f"sets hold the truth {_pct(s['set_coverage'])}, mean size {s['mean_set_size']:.2f}; "
             f"unfamiliar {_pct(s['unfamiliar_share'])}"]
    if "non_artwork" in t:
        na = t["non_artwork"]
        lines.append(f"  non-artwork photos ({na['n']}): AUROC {na['auroc']:.3f}, unfamiliar {_pct(na['unfamiliar_share'])}, "
                     f"auto-routed {_pct(na['auto_share'])}")
        for kind, v in t["shifted"].items():
            lines.append(f"  shifted {kind:12s} top1 {_pct(v['top1'])}, auto-routed {_pct(v['auto_share'])} at accuracy "
                         f"{_pct(v['auto_accuracy'])}, unfamiliar {_pct(v['unfamiliar_share'])}, AUROC {v['auroc']:.3f}")
    return "\n".join(lines)
