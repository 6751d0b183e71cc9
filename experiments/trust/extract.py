"""Screening: pooled backbone features (stage 5, stage 6, head 1280) of every Egyptian photo, per backbone,
views: 0 plain, 1 flip, 2..2+A-1 train augmentations (trainer.data.augment, basic policy)."""
import sys, time, json
from pathlib import Path
import numpy as np, torch
from PIL import Image
from trainer.data import load_corpus, ImageDataset, augment
from trainer.corpus.manifest import resolve_image
from streams.contract.imaging import to_model_input
from trainer.models import create_model

arch, size, A = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
rows, base = load_corpus("corpora/egyptian")
paths = [resolve_image(base, r) for r in rows]
m = create_model(arch, 4, pretrained=True).eval().to(memory_format=torch.channels_last)
net = m.net
taps = {}
for i in (4, 5):
    net.blocks[i].register_forward_hook(lambda mod, a, out, i=i: taps.__setitem__(i, out.mean((2, 3))))
def feats(x):
    with torch.no_grad():
        x = torch.from_numpy(np.stack(x)).contiguous(memory_format=torch.channels_last)
        f = net.forward_head(net.forward_features((x.float() - m.mean) / m.std), pre_logits=True)
        return torch.cat([taps[4], taps[5], f], 1).numpy()
ds = ImageDataset([], (size, size), train=False)
out = np.zeros((len(rows), 2 + A, 0), np.float32)
allf = []
t0 = time.time()
B = 16
for s in range(0, len(rows), B):
    batch_views = [[] for _ in range(2 + A)]
    for j in range(s, min(s + B, len(rows))):
        from streams.contract.imaging import load_image, to_rgb, MAX_IMAGE_PIXELS
        img = to_rgb(load_image(Path(paths[j]).read_bytes(), MAX_IMAGE_PIXELS, (size, size)))
        x = to_model_input(img, (size, size))
        batch_views[0].append(x); batch_views[1].append(np.ascontiguousarray(x[:, :, ::-1]))
        for a in range(A):
            g = torch.Generator().manual_seed(1000 * a + j)
            batch_views[2 + a].append(augment(img, (size, size), g))
    allf.append(np.stack([feats(v) for v in batch_views], 1))
    if s % 160 == 0:
        print(s, time.time() - t0, flush=True)
F = np.concatenate(allf).astype(np.float16)
Path("runs/screen").mkdir(parents=True, exist_ok=True)
np.savez(f"runs/screen/feat-{arch}-{size}.npz", F=F, labels=np.array([r.label for r in rows]),
         paths=np.array([str(p) for p in paths]), sha=np.array([r.sha256 for r in rows]))
print("done", F.shape, time.time() - t0)
