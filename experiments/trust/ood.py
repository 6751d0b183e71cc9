"""Screen kNN vs Mahalanobis unfamiliarity on pretrained features: clean held-out photos vs skimage photos."""
import sys
import numpy as np, torch
from skimage import data
from PIL import Image
from streams.contract.imaging import to_model_input
from trainer.models import create_model
from head import folds
torch.set_num_threads(1)
arch, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
NAMES = ["astronaut", "camera", "chelsea", "clock", "coffee", "moon", "page", "rocket", "text", "hubble_deep_field",
         "immunohistochemistry", "retina", "brick", "grass", "gravel", "cell"]
m = create_model(arch, 4, pretrained=True).eval()
net = m.net
def feat(img):
    x = torch.from_numpy(to_model_input(img, (size, size)))[None].float()
    with torch.no_grad():
        return net.forward_head(net.forward_features((x - m.mean) / m.std), pre_logits=True)[0].numpy()
ood = []
for n in NAMES:
    a = getattr(data, n)()
    img = Image.fromarray(a).convert("RGB")
    ood.append(feat(img))
ood = np.array(ood)
d = np.load(path); Fe = d["F"].astype(np.float32)[:, 0, -1280:]
def auroc(neg, pos):
    # P(pos > neg)
    return float(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))
labels = d["labels"]; classes = sorted(set(labels)); y = np.array([classes.index(l) for l in labels])
res = {}
for k, sp in enumerate(folds()[:3]):
    tr, te = sp == "train", sp == "test"
    bank = Fe[tr] / np.linalg.norm(Fe[tr], axis=1, keepdims=True)
    def knn(X, kk):
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        s = np.sort(Xn @ bank.T, axis=1)[:, ::-1]
        return 1 - s[:, kk - 1]
    for kk in (1, 5, 10, 50):
        res.setdefault(f"knn{kk}", []).append(auroc(knn(Fe[te], kk), knn(ood, kk)))
    mu = Fe[tr].mean(0)
    X = Fe[tr] - mu
    for shrink in (0.1, 0.5, 0.9):
        cov = np.cov(X.T); cov = (1 - shrink) * cov + shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        P = np.linalg.inv(cov)
        means = np.stack([Fe[tr][y[tr] == c].mean(0) for c in range(4)])
        def maha(Z):
            dd = np.stack([np.einsum("nd,de,ne->n", Z - means[c], P, Z - means[c]) for c in range(4)], 1)
            return dd.min(1)
        res.setdefault(f"maha{shrink}", []).append(auroc(maha(Fe[te]), maha(ood)))
for k, v in res.items():
    print(arch, k, np.round(v, 4))
