"""Screen: selective scores beyond max-prob on a fine-tuned run: risk-coverage at 90/95 % (val and test)."""
import sys
import numpy as np, torch
from trainer.run import load_model, read_calibration
from trainer.data import load_corpus, load_split, ImageDataset
from trainer.evaluate import run_taxonomy
from trainer.trust import predict_features
from trainer.calibration import softmax
from trainer.selective import risk_coverage, coverage_at_accuracy
torch.set_num_threads(2)
run = sys.argv[1]
info, model = load_model(run)
T = read_calibration(run).temperature
rows, base = load_corpus(info.manifest); tax = run_taxonomy(info); size = (info.image_size,) * 2
out = {}
for s in ("train", "val", "test"):
    smp = load_split(rows, base, tax, s)
    ds = ImageDataset(smp, size, train=False)
    lo, fh = predict_features(model, ds, 32, 0, "cpu", [])
    _, ft = predict_features(model, ds, 32, 0, "cpu", ["net.blocks.4", "net.blocks.5"])
    out[s] = dict(p=softmax(lo, T), fh=fh / np.linalg.norm(fh, axis=1, keepdims=True), ft=ft, y=np.array([x.target for x in smp]))
np.savez(f"{run}/screen-feats.npz", **{f"{s}_{k}": v for s, d in out.items() for k, v in d.items()})
tr = out["train"]
for s in ("val", "test"):
    d = out[s]; pred = d["p"].argmax(1)
    def show(name, score):
        o = np.argsort(-score, kind="stable"); wrong = (pred != d["y"])[o]
        k = np.arange(1, len(o) + 1)
        c = {"coverage": list(k / len(o)), "risk": list(np.cumsum(wrong) / k)}
        print(run, s, name, "cov@95 %.3f cov@90 %.3f" % (coverage_at_accuracy(c, .95), coverage_at_accuracy(c, .90)), flush=True)
    show("maxprob", d["p"].max(1))
    show("margin", np.sort(d["p"], 1)[:, -1] - np.sort(d["p"], 1)[:, -2])
    for space in ("fh", "ft"):
        sim = d[space] @ tr[space].T
        for k in (10, 25):
            nn = np.argsort(-sim, 1)[:, :k]
            agree = (tr["y"][nn] == pred[:, None]).mean(1)
            show(f"agree-{space}-k{k}", agree)
            show(f"agree*maxprob-{space}-k{k}", agree * d["p"].max(1))
