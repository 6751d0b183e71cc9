"""Screen: 10-fold CV of a logistic-regression / MLP head on cached features (same folds as corpus folds)."""
import sys, json
import numpy as np, torch, torch.nn.functional as F
from trainer.data import load_corpus
torch.set_num_threads(1)

def folds():
    rows, _ = load_corpus("corpora/egyptian")
    out = []
    for k in range(10):
        r, _ = load_corpus(f"corpora/egyptian-cv{k}")
        out.append(np.array([x.split for x in r]))
    return out

def fit(X, y, Xv, yv, wd, w, hidden=0, epochs=300, seed=0):
    torch.manual_seed(seed)
    D, C = X.shape[1], int(y.max()) + 1
    X, y = torch.tensor(X), torch.tensor(y)
    if not hidden:
        m = torch.nn.Linear(D, C)
        opt = torch.optim.LBFGS(m.parameters(), lr=1, max_iter=300, line_search_fn="strong_wolfe")
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(m(X), y, weight=w) + wd * (m.weight ** 2).sum()
            loss.backward(); return loss
        opt.step(closure)
        return m.eval()
    m = torch.nn.Sequential(torch.nn.Linear(D, hidden), torch.nn.GELU(), torch.nn.Dropout(0.5), torch.nn.Linear(hidden, C))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=wd)
    for e in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 256):
            b = perm[i:i+256]
            loss = F.cross_entropy(m(X[b]), y[b], weight=w, label_smoothing=0.1)
            opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    return m

def run(path, sel, views_train, hidden, wds, epochs):
    d = np.load(path)
    Fall = d["F"].astype(np.float32)[:, :, sel]
    labels = d["labels"]; classes = sorted(set(labels)); y = np.array([classes.index(l) for l in labels])
    splits = folds()
    correct = np.zeros(len(y), bool); chosen = []
    for k, sp in enumerate(splits):
        tr, va, te = sp == "train", sp == "val", sp == "test"
        mu, sd = Fall[tr, 0].mean(0), Fall[tr, 0].std(0) + 1e-6
        Z = (Fall - mu) / sd
        Xtr = Z[tr][:, views_train].reshape(-1, Z.shape[2]); ytr = np.repeat(y[tr], len(views_train))
        cnt = np.bincount(y[tr], minlength=len(classes)); w = torch.tensor(len(y[tr]) / (len(classes) * cnt), dtype=torch.float32)
        best = None
        for wd in wds:
            m = fit(Xtr, ytr, None, None, wd, w, hidden, epochs)
            with torch.no_grad():
                pv = sum(F.softmax(m(torch.tensor(Z[va][:, v])), 1) for v in (0, 1)).argmax(1).numpy()
            acc = (pv == y[va]).mean()
            if best is None or acc > best[0]: best = (acc, wd, m)
        with torch.no_grad():
            pt = sum(F.softmax(best[2](torch.tensor(Z[te][:, v])), 1) for v in (0, 1)).argmax(1).numpy()
        correct[te] = pt == y[te]; chosen.append(best[1])
    return correct.mean(), chosen

if __name__ == "__main__":
    path = sys.argv[1]
    D = np.load(path)["F"].shape[2]
    head = slice(D - 1280, D)
    for name, sel, vt, hid, wds, ep in [
        ("linear head1280 plain+flip", head, [0, 1], 0, [1e-3, 1e-2, 1e-1], 0),

    ]:
        acc, ch = run(path, sel, vt, hid, wds, ep)
        print(f"{path} {name}: CV top1 {acc:.4f} wd {ch}", flush=True)
