"""Regularisers: MixUp/CutMix mixing is what the loss assumes, EMA follows its formula, TrivialAugment is
seeded, and a run with all of them on resumes exactly and keeps the EMA weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.trainer.test_train import LABELS, tiny, weights
from trainer.data import augment
from trainer.models import ModelError, create_model
from trainer.regularize import Ema, mix_batch
from trainer.run import read_info
from trainer.synthetic import write_corpus
from trainer.train import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), LABELS, per_class=24)


def batch(n=8, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 4


def test_mixup_blends_two_images_with_weight_lam():
    images, targets = batch()
    x, other, lam = mix_batch(images, targets, mixup=0.4, cutmix=0.0, g=torch.Generator().manual_seed(3))
    assert 0.0 < lam < 1.0
    # find the partner of each image: x = lam * a + (1 - lam) * b
    for i in range(len(x)):
        j = [k for k in range(len(x)) if torch.allclose(x[i], lam * images[i].float() + (1 - lam) * images[k].float(),
                                                        atol=1e-3)]
        assert j and int(targets[j[0]]) == int(other[i])


def test_cutmix_lam_is_the_area_left_of_the_original():
    images, _ = batch()
    targets = torch.arange(len(images))  # so `other` is the permutation itself
    g = torch.Generator().manual_seed(5)
    x, other, lam = mix_batch(images, targets, mixup=0.0, cutmix=1.0, g=g)
    moved = [i for i in range(len(x)) if int(other[i]) != i]
    assert lam < 1.0 and moved
    for i in moved:
        kept = (x[i] == images[i].float()).all(dim=0).float().mean().item()  # pixels still its own
        pasted = (x[i] == images[int(other[i])].float()).all(dim=0).float().mean().item()
        assert abs(kept - lam) < 0.01 and abs(pasted - (1 - lam)) < 0.01, (kept, pasted, lam)
    again = mix_batch(images, targets, 0.0, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(x, again[0]) and torch.equal(other, again[1]) and lam == again[2]


def test_no_mixing_returns_the_batch_untouched():
    images, targets = batch()
    x, other, lam = mix_batch(images, targets, 0.0, 0.0, torch.Generator())
    assert x is images and lam == 1.0 and torch.equal(other, targets)


def test_ema_follows_the_warmed_up_decay():
    model = torch.nn.Linear(3, 2)
    ema = Ema(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # step 0: decay_t = min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * start + 0.9 * (start + 1.0))
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.module.weight, model.weight, atol=1e-6)
    assert not ema.module.weight.requires_grad


def test_trivial_augment_is_seeded_and_changes_the_image():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    def aug(policy, seed):
        return augment(img, (32, 32), torch.Generator().manual_seed(seed), policy)
    a, b = aug("trivial", 7), aug("trivial", 7)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(aug("trivial", s), aug("basic", s)) for s in range(4))
    before = torch.random.get_rng_state()
    aug("trivial", 8)
    assert torch.equal(before, torch.random.get_rng_state())  # the global generator is untouched


def test_drop_path_is_for_timm_backbones_only():
    with pytest.raises(ModelError, match="timm backbones only"):
        create_model("resnet18", 4, drop_path=0.1)


def test_run_with_every_regulariser_resumes_exactly_and_keeps_the_ema(corpus, tmp_path):
    kw = dict(epochs=3, ema_decay=0.8, mixup=0.2, cutmix=1.0, augment="trivial", backbone_lr_scale=0.5)
    full = train(tiny(corpus, tmp_path / "full", **kw))
    cfg = tiny(corpus, tmp_path / "split", **kw)
    train(cfg, stop_after=2)
    train(cfg, resume=True)
    a, b = weights(full), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_info(full).final_val == read_info(cfg.out).final_val
    state = torch.load(full / "checkpoint.pt", weights_only=False)
    assert not torch.equal(state["model"]["net.fc.weight"], state["train_model"]["net.fc.weight"])
    steps_per_epoch = -(-read_info(full).counts["train"] // 16)
    assert state["ema"]["steps"] == 3 * steps_per_epoch


def test_freeze_bn_keeps_batchnorm_statistics_while_the_weights_learn(corpus, tmp_path):
    kw = dict(arch="mobilenet_v3_small", epochs=1, warmup_epochs=0.0, max_images=32)
    free = weights(train(tiny(corpus, tmp_path / "free", **kw)))
    kept = weights(train(tiny(corpus, tmp_path / "kept", freeze_bn=True, **kw)))
    torch.manual_seed(0)
    init = create_model("mobilenet_v3_small", len(LABELS)).state_dict()
    stats = [k for k in init if k.endswith("running_mean")]
    assert stats and all(torch.equal(kept[k], init[k]) for k in stats)
    assert not all(torch.equal(free[k], init[k]) for k in stats)
    conv = next(k for k in init if k.endswith("weight") and init[k].ndim == 4)
    assert not torch.equal(kept[conv], init[conv])


def test_drop_hardest_masks_exactly_the_highest_losses():
    from trainer.train import keep_mask

    losses = torch.tensor([0.1, 5.0, 0.3, 2.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert keep_mask(losses, 0.2).tolist() == [1, 0, 1, 0, 1, 1, 1, 1, 1, 1]
    assert keep_mask(losses, 0.05).tolist() == [1] * 10  # less than one sample: nothing dropped
