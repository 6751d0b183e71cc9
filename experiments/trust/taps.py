"""Screen: unfamiliarity AUROC (kNN k=10) of a fine-tuned run from different feature taps."""
import sys
import numpy as np, torch
from torch.utils.data import DataLoader
from trainer.run import load_model
from trainer.data import load_corpus, load_split, ImageDataset
from trainer.evaluate import run_taxonomy
from trainer.trust import ImageList
from trainer import shift, unfamiliar
torch.set_num_threads(2)
run = sys.argv[1]
info, model = load_model(run)
net = model.net
size = (info.image_size,) * 2
taps = {}
for i in range(len(net.blocks)):
    net.blocks[i].register_forward_hook(lambda m, a, o, i=i: taps.__setitem__(f"b{i}", o.mean((2, 3))))
model.head.register_forward_pre_hook(lambda m, a: taps.__setitem__("head_in", a[0]))
def feats(ds):
    out = {}
    with torch.no_grad():
        for x, _, _ in DataLoader(ds, batch_size=32):
            model(x)
            for k, v in taps.items():
                out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
rows, base = load_corpus(info.manifest)
tax = run_taxonomy(info)
F = {s: feats(ImageDataset(load_split(rows, base, tax, s), size, train=False)) for s in ("train", "test")}
photos = shift.non_artwork()
F["ood"] = feats(ImageList(len(photos), lambda i: photos[i][1], size))
test_samples = load_split(rows, base, tax, "test")
n = len(test_samples)
F["shift"] = feats(ImageList(n * 6, lambda i: shift.shift(__import__("trainer.trust", fromlist=["x"]).load_rgb(test_samples[i % n].path, size), shift.KINDS[i // n], test_samples[i % n].path.name), size))
def auc(key, k=10):
    s = unfamiliar.fit(F["train"][key], k)
    sc = lambda X: s(torch.from_numpy(X)).numpy()
    return unfamiliar.auroc(sc(F["test"][key]), sc(F["ood"][key])), unfamiliar.auroc(sc(F["test"][key]), sc(F["shift"][key]))
for key in F["train"]:
    print(run, key, F["train"][key].shape[1], "non-artwork %.3f shifted %.3f" % auc(key), flush=True)
def cat(keys):
    for s in F:
        F[s]["+".join(keys)] = np.concatenate([F[s][k] / np.linalg.norm(F["train"][k], axis=1).mean() for k in keys], 1)
    return "+".join(keys)
for keys in (["b4", "b5"], ["b5", "head_in"], ["b4", "b5", "head_in"], ["b3", "b4", "b5", "b6"]):
    key = cat(keys)
    print(run, key, "non-artwork %.3f shifted %.3f" % auc(key), flush=True)
