"""The unfamiliarity score (trainer/unfamiliar.py) and its test sets (trainer/shift.py)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from trainer import shift, unfamiliar
from trainer.models import create_model


def test_knn_distance_is_zero_on_the_bank_and_grows_away_from_it():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, 16)).astype(np.float32) + 5.0  # a cluster away from the origin
    scorer = unfamiliar.fit(bank, k=1)
    near = scorer(torch.from_numpy(bank[:10])).numpy()
    assert np.allclose(near, 0.0, atol=1e-5)
    far = scorer(torch.from_numpy(-bank[:10])).numpy()  # the opposite direction: cosine distance ~ 2
    assert (far > 1.5).all()
    k10 = unfamiliar.fit(bank, k=10)(torch.from_numpy(bank[:10])).numpy()
    assert (k10 > near).all() and unfamiliar.fit(bank[:3], k=10).k == 3


def test_threshold_keeps_the_false_alarm_rate_and_auroc_is_mann_whitney():
    scores = np.arange(100, dtype=float)
    t = unfamiliar.threshold_at(scores, 0.05)
    assert (scores > t).mean() == pytest.approx(0.05)
    assert (scores > unfamiliar.threshold_at(scores, 0.0)).mean() == 0.0
    assert unfamiliar.auroc([0, 1, 2], [3, 4]) == 1.0 and unfamiliar.auroc([3, 4], [0, 1, 2]) == 0.0
    assert unfamiliar.auroc([0, 1], [1, 2]) == pytest.approx(0.875)  # one tie counted half: (4 - 0.5) / 4
    assert unfamiliar.auroc([], [1]) is None


def test_trusted_module_traces_to_the_same_two_outputs_and_saves(tmp_path):
    torch.manual_seed(0)
    model = create_model("tiny", 3).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert unfamiliar.default_taps(model) == []  # no stages: the head's input
    logits, feats = unfamiliar.logits_and_features(model, x)
    assert torch.equal(logits, model(x)) and feats.shape == (4, model.head.in_features)
    assert not model.head._forward_pre_hooks  # the hook is removed again
    scorer = unfamiliar.fit(torch.randn(30, feats.shape[1]).numpy(), k=5)
    trusted = unfamiliar.Trusted(model, 1.5, scorer).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(trusted, x)
    y = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    (p0, u0), (p1, u1) = trusted(y), traced(y)
    assert torch.allclose(p0, p1) and torch.allclose(u0, u1) and u1.shape == (7,)
    assert torch.allclose(p0, torch.softmax(model(y) / 1.5, dim=1))
    unfamiliar.save(scorer, tmp_path)
    again = unfamiliar.load(tmp_path)
    assert again.k == 5 and torch.equal(again.bank, scorer.bank) and again.taps == []
    assert unfamiliar.load(tmp_path / "nowhere") is None


def test_efficientnet_features_come_from_the_stages_before_the_last_and_trace():
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 3).eval()
    taps = unfamiliar.default_taps(model)
    assert taps == ["net.blocks.4", "net.blocks.5"]
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        logits, feats = unfamiliar.logits_and_features(model, x, taps)
        assert torch.equal(logits, model(x)) and feats.shape == (2, 112 + 192)
        assert torch.allclose(feats.norm(dim=1), torch.ones(2))
        trusted = unfamiliar.Trusted(model, 1.0, unfamiliar.fit(torch.randn(20, 304).numpy(), k=3, taps=taps)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(trusted, x)
        y = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(trusted(y), traced(y)))
    assert not any(m._forward_hooks for m in model.modules())


def photo(seed: int = 0) -> Image.Image:
    """A stand-in museum photo: an object on a graded backdrop, letterboxed with black bars."""
    rng = np.random.default_rng(seed)
    a = np.zeros((224, 224, 3), np.uint8)
    a[:, 30:194] = np.linspace(150, 210, 224)[:, None, None].astype(np.uint8)
    a[70:170, 80:150] = rng.integers(20, 120, size=(100, 70, 3))
    return Image.fromarray(a)


def test_shifts_are_reproducible_distinct_and_change_the_photo():
    img = photo()
    base = np.asarray(shift.trim_bars(img), dtype=float)
    assert base.shape == (224, 164, 3)  # the letterbox bars are not part of the photo
    for kind in shift.KINDS:
        a = np.asarray(shift.shift(img, kind, "k1"))
        assert np.array_equal(a, np.asarray(shift.shift(img, kind, "k1"))), kind
        assert not np.array_equal(a, np.asarray(shift.shift(img, kind, "k2"))), kind
        assert a.shape == base.shape and np.abs(a - base).mean() > 2, kind
    out = np.asarray(shift.shift(img, "background", "k1"), dtype=float)
    assert np.abs(out[70:170, 50:120] - base[70:170, 50:120]).mean() < 1  # the object stays
    assert np.abs(out[:40] - base[:40]).mean() > 10                     # the backdrop does not
    with pytest.raises(ValueError, match="unknown shift"):
        shift.shift(img, "sepia", "k")


def test_non_artwork_photos_are_real_rgb_photographs():
    photos = shift.non_artwork()
    assert len(photos) == len(shift.NON_ARTWORK) >= 12 and "coins" not in dict(photos)
    for name, im in photos:
        assert im.mode == "RGB" and min(im.size) >= 100, name
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        assert len(buf.getvalue()) > 10_000, name  # real content, not a flat image
