"""Write a run's self-contained HTML report and slide deck (figures embedded as base64 PNG, no other files).

Reads RUN/run.json, config.json, history.jsonl and eval_<split>.json (running `evaluate` on the split first
when that file is missing), and the corpus manifest for the per-class image counts. Writes OUT/report.html
(data per class, training curves, metrics, per-class precision/recall/F1, confusion matrix, reliability
before/after temperature scaling, most confident right and wrong examples with their images) and
OUT/slides.html (8 slides built from the same figures; arrow keys, PageUp/PageDown or scroll to navigate).
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from collections import Counter
from pathlib import Path
from string import Template

import numpy as np
from pydantic import BaseModel, ConfigDict

from trainer import report_figures as figs
from trainer.data import load_corpus, load_split
from trainer.run import RunError, RunInfo, TrainConfig, read_config, read_info

TEMPLATES = Path(__file__).with_name("templates")
EXAMPLES = 8  # per kind (most confident right, most confident wrong)


class Prediction(BaseModel):
    path: str
    label: str
    target: str
    pred: str
    confidence: float
    probs: list[float]
    unfamiliarity: float | None = None
    auto_route: bool | None = None
    reason: str | None = None
    prediction_set: list[str] | None = None


class Evaluation(BaseModel):
    """The part of eval_<split>.json the report reads (docs/training.md)."""
    model_config = ConfigDict(extra="ignore")

    run: str
    split: str
    classes: list[str]
    temperature: float
    metrics: dict
    predictions: list[Prediction]
    trust: dict | None = None                   # trainer/trust.py: rule, split, shifted, non_artwork
    shifted_predictions: list[dict] = []
    non_artwork_predictions: list[dict] = []


class ReportInputs(BaseModel):
    run_dir: str
    info: RunInfo
    config: TrainConfig
    history: list[dict]
    evaluation: Evaluation
    class_counts: dict[str, dict[str, int]]  # class -> split -> images (as trained: taxonomy, max_images)


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not rows:
        raise RunError(f"{run_dir}: no epochs in history.jsonl; train the run first")
    return rows


def read_evaluation(run_dir: Path, split: str, workers: int) -> Evaluation:
    """eval_<split>.json; evaluates the run first (trainer.evaluate.evaluate_run) when it is missing."""
    path = run_dir / f"eval_{split}.json"
    if not path.is_file():
        from trainer.evaluate import evaluate_run

        print(f"[report] {path.name} missing: evaluating the {split} split first", file=sys.stderr, flush=True)
        evaluate_run(run_dir, split, workers=workers)
    return Evaluation.model_validate_json(path.read_text(encoding="utf-8"))


def count_per_class(info: RunInfo, config: TrainConfig) -> dict[str, dict[str, int]]:
    """Images per class and split exactly as training selected them (the run's taxonomy and --max-images)."""
    from trainer.evaluate import run_taxonomy

    out = {c: {} for c in info.classes}
    try:
        rows, base = load_corpus(info.manifest)
    except (OSError, ValueError):  # the corpus moved: only the per-split totals of run.json are known
        return out
    tax = run_taxonomy(info)
    for split in figs.SPLITS:
        for target, n in Counter(s.target for s in load_split(rows, base, tax, split, config.max_images)).items():
            out[info.classes[target]][split] = n
    return out


def load_inputs(run_dir: str | Path, split: str = "test", workers: int = 0) -> ReportInputs:
    """Everything the report shows; RunError (one line) for a missing or unfinished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    info = read_info(run_dir)
    if info.finished is None:
        raise RunError(f"{run_dir}: training has not finished (run.json has no 'finished'); resume it first")
    config = read_config(run_dir)
    return ReportInputs(run_dir=str(run_dir), info=info, config=config, history=read_history(run_dir),
                        evaluation=read_evaluation(run_dir, split, workers),
                        class_counts=count_per_class(info, config))


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits) from the stored softmax(logits / T): log p = logits / T + const per row."""
    z = np.log(np.clip(probs, 1e-7, 1.0)) * temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def examples(preds: list[Prediction], correct: bool, k: int = EXAMPLES) -> list[Prediction]:
    """The k most confident predictions that are right (correct=True) or wrong."""
    chosen = [p for p in preds if (p.pred == p.target) == correct]
    return sorted(chosen, key=lambda p: -p.confidence)[:k]


def make_figures(r: ReportInputs) -> dict[str, str]:
    """Every figure once, as a data URI: counts, curves, confusion, reliability."""
    ev, m = r.evaluation, r.evaluation.metrics
    after = np.array([p.probs for p in ev.predictions], dtype=float)
    targets = np.array([ev.classes.index(p.target) for p in ev.predictions])
    out = {"curves": figs.training_curves(r.history),
           "confusion": figs.confusion_matrix(m["confusion"], ev.classes),
           "reliability": figs.reliability(uncalibrated(after, ev.temperature), after, targets,
                                           m["ece_uncalibrated"], m["ece"], ev.temperature)}
    if any(r.class_counts.values()):
        out["counts"] = figs.class_counts(r.info.classes, r.class_counts)
    t = ev.trust
    if t:
        s = t["split"]
        out["risk_coverage"] = figs.risk_coverage(s["risk_coverage"]["coverage"], s["risk_coverage"]["risk"],
                                                  t["rule"]["target_accuracy"] or 0.95,
                                                  (s["coverage"], s["auto_accuracy"]))
        out["unfamiliarity"] = figs.unfamiliarity(
            {f"{ev.split} photos": [p.unfamiliarity for p in ev.predictions if p.unfamiliarity is not None],
             "shifted photos": [p["unfamiliarity"] for p in ev.shifted_predictions],
             "non-artwork photos": [p["unfamiliarity"] for p in ev.non_artwork_predictions]},
            t["rule"]["unfamiliar_threshold"])
    return out


# --- HTML fragments ---------------------------------------------------------------------------------------

def esc(x) -> str:
    return html.escape(str(x))


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else esc(v)
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def img(uri: str, alt: str) -> str:
    return f'<img class="fig" src="{uri}" alt="{esc(alt)}">'


def summary_table(r: ReportInputs) -> str:
    m, cal = r.evaluation.metrics, r.info.final_val
    rows = [["top-1", m["top1"]], ["top-3", m["top3"]], ["macro-F1", m["macro_f1"]],
            ["ECE before temperature scaling", m["ece_uncalibrated"]], ["ECE after temperature scaling", m["ece"]],
            ["NLL before / after", f"{m['nll_uncalibrated']:.3f} / {m['nll']:.3f}"],
            ["temperature", r.evaluation.temperature], ["images", m["n"]]]
    if "ece_floor" in m:  # evaluations before it have none
        rows.insert(5, ["ECE of a perfectly calibrated model on as many images (mean / 95 % under)",
                        f"{m['ece_floor']:.3f} / {m['ece_floor_p95']:.3f}"])
    if cal:
        rows.append(["val top-1 (end of training)", cal.get("top1", float("nan"))])
    return table(["metric", f"{r.evaluation.split} split"], rows)


def per_class_table(r: ReportInputs) -> str:
    pc = r.evaluation.metrics["per_class"]
    return table(["class", "precision", "recall", "F1", "support"],
                 [[c, pc[c]["precision"], pc[c]["recall"], pc[c]["f1"], pc[c]["support"]] for c in r.evaluation.classes])


def data_table(r: ReportInputs) -> str:
    rows = [[c, *(r.class_counts[c].get(s, 0) for s in figs.SPLITS), sum(r.class_counts[c].values()),
             ", ".join(r.info.class_labels.get(c, []))] for c in r.info.classes]
    rows.append(["total", *(r.info.counts.get(s, 0) for s in figs.SPLITS), sum(r.info.counts.values()), ""])
    return table(["class", *figs.SPLITS, "all", "manifest labels"], rows)


def gallery(preds: list[Prediction], correct: bool) -> str:
    if not preds:
        return "<p>none</p>"
    items = []
    for p in preds:
        uri = figs.image_uri(p.path)
        picture = f'<img src="{uri}" alt="{esc(Path(p.path).name)}">' if uri else "<p>(image unreadable)</p>"
        items.append(f'<figure class="ex {"right" if correct else "wrong"}">{picture}<figcaption>'
                     f'true {esc(p.target)}<br>predicted <b>{esc(p.pred)}</b> ({p.confidence:.0%})<br>'
                     f'<span class="muted">{esc(Path(p.path).name)}</span></figcaption></figure>')
    return '<div class="examples">' + "".join(items) + "</div>"


def most_confused(r: ReportInputs) -> tuple[str, str, int] | None:
    cm = np.array(r.evaluation.metrics["confusion"])
    np.fill_diagonal(cm, 0)
    if cm.max() == 0:
        return None
    i, j = np.unravel_index(cm.argmax(), cm.shape)
    return r.evaluation.classes[i], r.evaluation.classes[j], int(cm[i, j])


def next_steps(r: ReportInputs) -> list[str]:
    """Suggestions read off the numbers: weakest classes, the largest confusion, calibration, data size."""
    pc = r.evaluation.metrics["per_class"]
    weakest = sorted((c for c in pc if pc[c]["support"]), key=lambda c: pc[c]["f1"])[:2]
    named = ", ".join(f"{c} ({pc[c]['f1']:.2f})" for c in weakest)
    steps = [f"Weakest classes by F1: {named}: more and more varied training photos for them."] if weakest else []
    pair = most_confused(r)
    if pair:
        steps.append(f"Most frequent confusion: {pair[0]} predicted as {pair[1]} ({pair[2]} images): check the "
                     "labels of both and whether the taxonomy should merge them.")
    m = r.evaluation.metrics
    steps.append(f"Calibration: ECE {m['ece_uncalibrated']:.3f} → {m['ece']:.3f} with T = "
                 f"{r.evaluation.temperature:.2f}; route automatically only above a confidence threshold "
                 "chosen on the reliability curve, send the rest to a curator.")
    steps.append(f"{r.info.counts.get('train', 0)} training images, {r.info.arch} at {r.info.image_size} px: a "
                 "larger corpus, a pretrained backbone or a larger input size are the next levers.")
    return steps


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def trust_bullets(r: ReportInputs) -> list[str]:
    t = r.evaluation.trust
    rule, s = t["rule"], t["split"]
    never = rule["confidence_threshold"] > 1
    out = [(f"Rule fitted on {rule['validation']['n']} val photos (Learn-then-Test): auto-route when the calibrated "
            f"top-1 is at least {rule['confidence_threshold']:.3f}, so that the accuracy of auto-routed decisions is "
            f"at least {_pct(rule['target_accuracy'])} with probability {_pct(1 - rule['delta'])}"
            if not never else
            f"No confidence threshold could be certified for {_pct(rule['target_accuracy'])} accuracy on "
            f"{rule['validation']['n']} val photos: nothing is auto-routed (more val photos or a lower target)"),
           f"{r.evaluation.split}: {s['auto_n']} of {s['n']} photos auto-routed ({_pct(s['coverage'])}), "
           f"{_pct(s['auto_accuracy'])} of them right; the curve reaches {_pct(rule['target_accuracy'])} accuracy "
           f"up to {_pct(s['coverage_at_target'])} coverage",
           f"Prediction sets for the curator (classes with p ≥ {rule['set_threshold']:.3f}): hold the true class for "
           f"{_pct(s['set_coverage'])}, {s['mean_set_size']:.2f} classes on average",
           f"Unfamiliar above {rule['unfamiliar_threshold']:.3f} ({_pct(rule['unfamiliar_false_alarm'])} of val): "
           f"{_pct(s['unfamiliar_share'])} of the {r.evaluation.split} photos"]
    if "non_artwork" in t:
        na, sh = t["non_artwork"], t["shifted"]["all"]
        out.append(f"Non-artwork photos ({na['n']}): unfamiliarity AUROC {na['auroc']:.3f}, {_pct(na['unfamiliar_share'])} "
                   f"flagged unfamiliar, {_pct(na['auto_share'])} auto-routed")
        out.append(f"Shifted photography ({sh['n']}): top-1 {_pct(sh['top1'])}, AUROC {sh['auroc']:.3f}, "
                   f"{_pct(sh['auto_share'])} auto-routed at accuracy {_pct(sh['auto_accuracy'])}")
    return out


def shifted_table(r: ReportInputs) -> str:
    sh = (r.evaluation.trust or {}).get("shifted")
    if not sh:
        return ""
    return table(["change of photography", "photos", "top-1", "auto-routed", "their accuracy", "unfamiliar", "AUROC"],
                 [[k, v["n"], _pct(v["top1"]), _pct(v["auto_share"]), _pct(v["auto_accuracy"]),
                   _pct(v["unfamiliar_share"]), f"{v['auroc']:.3f}"] for k, v in sh.items()])


def trust_section(r: ReportInputs, f: dict[str, str]) -> list[str]:
    if not r.evaluation.trust:
        return []
    return ["<h2>Routing you can trust</h2>", bullets(trust_bullets(r)),
            img(f["risk_coverage"], "risk-coverage curve"), shifted_table(r),
            img(f["unfamiliarity"], "unfamiliarity histograms"),
            '<p class="muted">Method and how to read these numbers: docs/trust.md.</p>']


def bullets(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def overview(r: ReportInputs) -> list[str]:
    c, i = r.config, r.info
    return [f"Architecture {i.arch} ({'pretrained' if c.pretrained else 'from scratch'}), input {i.image_size} px "
            "letterboxed, uint8 in, normalisation inside the model",
            f"{i.epochs_done} epochs ({c.freeze_epochs} frozen), batch {c.batch_size}, AdamW lr {c.lr:g}, "
            f"label smoothing {c.label_smoothing:g}, balance {c.balance}",
            f"Trained in {i.train_seconds / 60:.1f} min on {i.world_size} process(es); finished {i.finished}",
            f"Taxonomy {i.taxonomy}: {len(i.classes)} classes; corpus {i.manifest} (sha256 {i.manifest_sha256[:12]}…)"]


def render_report(r: ReportInputs, f: dict[str, str]) -> str:
    ev = r.evaluation
    parts = ["<h2>Model and training</h2>", bullets(overview(r)),
             "<h2>Data</h2>", data_table(r), img(f["counts"], "images per class") if "counts" in f else "",
             "<h2>Training curves</h2>", img(f["curves"], "training curves"),
             f"<h2>Results on the {esc(ev.split)} split</h2>", summary_table(r), per_class_table(r),
             img(f["confusion"], "confusion matrix"),
             "<h2>Calibration</h2>",
             "<p>Reliability diagrams of the split, before and after temperature scaling (the temperature is fitted "
             "on the val split). Bars: accuracy per confidence bin; the dashed diagonal is perfect calibration.</p>",
             img(f["reliability"], "reliability before and after temperature scaling"),
             *trust_section(r, f),
             "<h2>Most confident correct predictions</h2>", gallery(examples(ev.predictions, True), True),
             "<h2>Most confident mistakes</h2>", gallery(examples(ev.predictions, False), False),
             "<h2>Next steps</h2>", bullets(next_steps(r))]
    subtitle = (f"run {r.info.name} · {r.info.arch} · taxonomy {r.info.taxonomy} · evaluated on {ev.split} "
                f"({ev.metrics['n']} images) · top-1 {ev.metrics['top1']:.3f}")
    return Template((TEMPLATES / "report.html").read_text()).substitute(
        name=esc(r.info.name), subtitle=esc(subtitle), body="\n".join(parts))


def render_slides(r: ReportInputs, f: dict[str, str]) -> str:
    ev, m = r.evaluation, r.evaluation.metrics
    slides = [
        ("Routing artworks to departments", bullets([
            "A newly photographed object must reach the right curatorial department",
            f"This model predicts one of {len(r.info.classes)} classes ({r.info.taxonomy}) from the photo alone",
            "Served with calibrated probabilities: confident predictions route automatically, the rest go to a person"])),
        ("Data", data_table(r) + (img(f["counts"], "images per class") if "counts" in f else "")),
        ("Model and training", bullets(overview(r)[:2]) + img(f["curves"], "training curves")),
        (f"Results ({ev.split}, {m['n']} images)", bullets([
            f"top-1 {m['top1']:.3f} · top-3 {m['top3']:.3f} · macro-F1 {m['macro_f1']:.3f}"])
         + img(f["confusion"], "confusion matrix")),
        ("Per class", per_class_table(r)),
        ("Calibration", bullets([f"temperature {ev.temperature:.2f}: ECE {m['ece_uncalibrated']:.3f} → {m['ece']:.3f}"])
         + img(f["reliability"], "reliability before and after temperature scaling")),
        *([("Routing you can trust", bullets(trust_bullets(r)[:2]) + img(f["risk_coverage"], "risk-coverage curve")),
           ("Unfamiliar photos", bullets(trust_bullets(r)[3:]) + img(f["unfamiliarity"], "unfamiliarity histograms"))]
          if ev.trust else []),
        ("Examples: most confident right and wrong",
         gallery(examples(ev.predictions, True, 5), True) + gallery(examples(ev.predictions, False, 5), False)),
        ("Next steps", bullets(next_steps(r))),
    ]
    body = "\n".join(f'<section class="slide" id="s{i + 1}"><h2>{esc(title)}</h2>{content}</section>'
                     for i, (title, content) in enumerate(slides))
    return Template((TEMPLATES / "slides.html").read_text()).substitute(name=esc(r.info.name), slides=body)


def write_report(run_dir: str | Path, out: str | Path | None = None, split: str = "test",
                 workers: int = 0) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/slides.html (OUT defaults to RUN/report); returns both paths."""
    r = load_inputs(run_dir, split, workers)
    f = make_figures(r)
    out = Path(out) if out else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    report, slides = out / "report.html", out / "slides.html"
    report.write_text(render_report(r, f), encoding="utf-8")
    slides.write_text(render_slides(r, f), encoding="utf-8")
    return report, slides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="run directory written by `python -m trainer train`")
    p.add_argument("--out", help="output directory for report.html and slides.html (default: RUN/report)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split whose eval_<split>.json is reported; evaluated first when missing (default: test)")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader workers when the split must be evaluated first (default: 0)")


def main(args: argparse.Namespace) -> int:
    report, slides = write_report(args.run, args.out, args.split, args.workers)
    print(f"wrote {report}\nwrote {slides}")
    return 0
