"""Model zoo: CIFAR-style ResNets and VGG, every torchvision classifier, the shipped models.

Every entry knows its default input shape, so no command needs a shape flag::

    >>> from mrp_gpu.models import create_model, default_input_size
    >>> model = create_model("resnet20", num_classes=10)
    >>> default_input_size("resnet20")
    (3, 32, 32)

Weights come from a local file (``.safetensors``, or a state_dict read with
``torch.load(..., weights_only=True)``), from a torchvision weights enum name
(``IMAGENET1K_V2``), or, for the shipped models (``demo``: ResNet-20, ``vgg_demo``: a
plain VGG-style CNN, ``resnet56_demo``: ResNet-56, the paper's depth, ``vit_demo``: a
small torchvision ViT; all trained on Fashion-MNIST), from the files shipped with the package.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from .errors import ModelError, WeightsError

__all__ = [
    "create_model",
    "list_models",
    "default_input_size",
    "parse_input_size",
    "load_state_dict_file",
    "load_weights",
    "model_card",
    "support",
    "SHIPPED",
    "ZOO_DIR",
]

ZOO_DIR = Path(__file__).parent / "zoo"
# trained here; weights and model card in zoo/NAME.safetensors, NAME.json
SHIPPED = ("demo", "vgg_demo", "resnet56_demo", "vit_demo")


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    num_classes: int


_REGISTRY: dict[str, _Entry] = {}


def _register(name: str, input_size=(3, 32, 32), num_classes: int = 10):
    def wrap(fn):
        _REGISTRY[name] = _Entry(fn, tuple(input_size), num_classes)
        return fn

    return wrap


# --------------------------------------------------------------------------- CIFAR ResNet
class BasicBlock(nn.Module):
    """3x3-3x3 residual block; a 1x1 conv + BN projection where the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 images (He et al. 2016, section 4.2): depth = 6n + 2."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


for _depth in (20, 32, 44, 56, 110):
    _register(f"resnet{_depth}")(
        lambda num_classes=10, in_chans=3, _d=_depth: CifarResNet(_d, num_classes, in_chans)
    )


# --------------------------------------------------------------------------- VGG
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# A plain CNN for 28x28 Fashion-MNIST: no shortcuts, widths growing to 256, 37M MACs,
# 1.17M parameters (4.7 MB of float32): the setting where layer-adaptive pruning has
# its classic wins (the wide late layers carry most parameters and little signal).
_VGG_DEMO = (32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256)


class VGG(nn.Module):
    """VGG with BatchNorm: 3x3 convs and 2x2 max-pools as ``cfg`` says, one linear classifier."""

    def __init__(self, cfg=_VGG16, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        layers, c = [], in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_register("vgg16_cifar")(lambda num_classes=10, in_chans=3: VGG(_VGG16, num_classes, in_chans))
_register("demo", input_size=(1, 28, 28))(
    lambda num_classes=10, in_chans=1: CifarResNet(20, num_classes, in_chans)
)
_register("resnet56_demo", input_size=(1, 28, 28))(
    lambda num_classes=10, in_chans=1: CifarResNet(56, num_classes, in_chans)
)
_register("vgg_demo", input_size=(1, 28, 28))(
    lambda num_classes=10, in_chans=1: VGG(_VGG_DEMO, num_classes, in_chans)
)


def _vit_demo(num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """torchvision's VisionTransformer at Fashion-MNIST size: 7x7 patches (16 tokens and a
    class token), 4 blocks, 4 heads of 16 dims, MLP 256: the layers of ``vit_b_16``, at
    3.3 M MACs and 0.2 M parameters."""
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=28, patch_size=7, num_layers=4, num_heads=4, hidden_dim=64,
                              mlp_dim=256, num_classes=num_classes)
    if in_chans != 3:
        _adapt_stem(model, in_chans)
    return model


_register("vit_demo", input_size=(1, 28, 28))(_vit_demo)


# --------------------------------------------------------------------------- torchvision
def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _adapt_stem(model: nn.Module, in_chans: int) -> None:
    """Replace the first convolution that reads 3 channels by one that reads ``in_chans``."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            new = nn.Conv2d(in_chans, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, m.bias is not None)
            with torch.no_grad():  # keep what a pretrained stem learnt: mean over RGB
                new.weight.copy_(m.weight.mean(1, keepdim=True).expand_as(new.weight))
                if m.bias is not None:
                    new.bias.copy_(m.bias)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return
    raise ModelError(f"cannot adapt {type(model).__name__} to {in_chans} input channels: no 3-channel stem conv")


def list_models(pattern: str = "*") -> list[str]:
    """Names ``create_model`` accepts, matching a shell-style ``pattern``."""
    from fnmatch import fnmatch

    names = sorted(_REGISTRY) + [n for n in _torchvision_names() if n not in _REGISTRY]
    return [n for n in names if fnmatch(n, pattern)]


TIMM = "timm/"  # prefix of a timm architecture: ``timm/resnet50``, ``timm/vit_small_patch16_224``


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError('timm models need timm: pip install "mrp_gpu[timm]"') from None
    return timm


def _check_name(name: str) -> None:
    if name.startswith(TIMM):
        arch, timm = name[len(TIMM):], _timm()
        if not timm.is_model(arch):
            import difflib

            close = difflib.get_close_matches(arch, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join(TIMM + c for c in close)}?)" if close else ""
            raise ModelError(f"unknown timm model {arch!r}{hint}")
        return
    if name not in _REGISTRY and name not in _torchvision_names():
        import difflib

        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"unknown model {name!r}{hint}; `mrp-gpu models` lists them")


def default_input_size(name: str, in_chans: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) the model is built for: 3x32x32 CIFAR-style, 3x224x224 torchvision."""
    _check_name(name)
    if name.startswith(TIMM):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name[len(TIMM):])
        c, h, w = cfg.input_size if cfg is not None else (3, 224, 224)
    elif name in _REGISTRY:
        c, h, w = _REGISTRY[name].input_size
    else:
        c, h, w = 3, *((299, 299) if name == "inception_v3" else (224, 224))
    return (in_chans or c, h, w)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x64x64"`` -> (3, 64, 64); ``"64"`` -> (3, 64, 64)."""
    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ModelError(f"--input-size {text!r}: expected CxHxW or a side length, e.g. 3x64x64") from None
    if len(nums) == 1:
        nums = [3, nums[0], nums[0]]
    if len(nums) != 3 or min(nums) < 1:
        raise ModelError(f"--input-size {text!r}: expected CxHxW or a side length, e.g. 3x64x64")
    return tuple(nums)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict without unpickling: safetensors, or ``torch.load(weights_only=True)``.

    A checkpoint that wraps the state_dict under ``state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every reader fails differently on a corrupt file
        raise WeightsError(f"cannot read weights file {str(path)!r}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state_dict of tensors")
    return sd


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local state_dict into ``model``; a file of another architecture is refused whole."""
    sd = load_state_dict_file(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        def few(xs):
            return ", ".join(xs[:3]) + (f" (+{len(xs) - 3} more)" if len(xs) > 3 else "")

        problems = [f"missing keys: {few(missing)}" if missing else "",
                    f"unexpected keys: {few(unexpected)}" if unexpected else "",
                    f"shape mismatch (file vs model): {few(wrong)}" if wrong else ""]
        raise WeightsError(
            f"weights file {str(path)!r} does not fit {type(model).__name__}: "
            + "; ".join(p for p in problems if p))
    model.load_state_dict(sd)
    return model


def model_card(name: str) -> dict:
    """The card of a shipped model: how it was trained and how well it does."""
    if name not in SHIPPED:
        raise ModelError(f"{name!r} is not a shipped model; these are: {', '.join(SHIPPED)}")
    card = ZOO_DIR / f"{name}.json"
    if not card.is_file():
        raise ModelError(f"the model card {card} is missing from the installation")
    return json.loads(card.read_text())


def support() -> dict:
    """Each zoo model's status in the last committed zoo sweep (``benchmarks/zoo_sweep.py``):
    ``{"dates": {zoo: date}, "target", "models": {name: {"status", "reason"}}}``; empty when not shipped."""
    path = ZOO_DIR / "support.json"
    return json.loads(path.read_text()) if path.is_file() else {"models": {}}


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    weights: str | Path | None = "default",
) -> nn.Module:
    """Build a zoo model by name, in eval mode.

    Parameters
    ----------
    name : str
        ``resnet20/32/44/56/110``, ``vgg16_cifar``, the shipped ``demo``, ``vgg_demo``,
        ``resnet56_demo`` and ``vit_demo``, any torchvision
        classification model (``resnet50``, ``mobilenet_v2``, ...), or ``timm/<name>`` for
        any timm architecture (``pip install "mrp_gpu[timm]"``; weights from a local file).
    num_classes, in_chans : int, optional
        Output classes and input channels; the entry's defaults when None.
    weights : str or Path or None
        ``"default"``: the shipped weights of a shipped model, random initialisation
        otherwise; ``None``: random initialisation; a path: a local state_dict;
        any other string: a torchvision weights enum name such as ``IMAGENET1K_V2``
        (never downloaded for timm).
    """
    _check_name(name)
    is_file = weights not in (None, "default") and (
        Path(weights).suffix in {".safetensors", ".pt", ".pth", ".bin", ".ckpt"} or Path(weights).exists())
    if name.startswith(TIMM):
        if weights not in (None, "default") and not is_file:
            raise WeightsError(f"{name}: named timm weights would be downloaded; pass a local state_dict file "
                               f"(got {weights!r})")
        kwargs = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
        model = _timm().create_model(name[len(TIMM):], pretrained=False, **kwargs)
    elif name in _REGISTRY:
        entry = _REGISTRY[name]
        kwargs = {"num_classes": num_classes or entry.num_classes}
        if in_chans is not None:
            kwargs["in_chans"] = in_chans
        model = entry.builder(**kwargs)
        if weights == "default" and name in SHIPPED:
            shipped = ZOO_DIR / f"{name}.safetensors"
            if not shipped.is_file():
                raise WeightsError(f"the {name} weights {shipped} are missing from the installation")
            load_weights(model, shipped)
        elif weights not in (None, "default") and not is_file:
            raise WeightsError(f"{name} has no named weights; pass a local state_dict file (got {weights!r})")
    else:
        enum = None if (weights in (None, "default") or is_file) else str(weights)
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        try:
            model = torchvision.models.get_model(name, weights=enum, **kwargs)
        except Exception as e:  # unknown enum, no network, wrong num_classes for the weights
            raise WeightsError(
                f"cannot get torchvision weights {enum!r} for {name}: {type(e).__name__}: {e}. "
                "Without internet, pass a local state_dict file with --weights.") from None
        if in_chans not in (None, 3):
            _adapt_stem(model, in_chans)
    if is_file:
        load_weights(model, weights)
    return model.eval()
