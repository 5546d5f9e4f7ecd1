"""VGG-16 and ResNet-18 for breast ultrasound: the architectures and their ImageNet weights.

Both networks take grayscale images in [0, 1] (N x 1 x H x W, or the same image already
replicated to three channels). Their first step replicates the gray channel to RGB and
normalises it with the ImageNet mean and standard deviation, so ImageNet weights stay usable
and every explanation method of the later chapters works on the image a clinician sees.

- ``vgg16`` is torchvision's ``vgg16_bn`` convolutional stack (batch normalisation makes the
  13-layer stack trainable from scratch on a few hundred images) with a compact head: global
  average pooling, then 512 -> 256 -> classes, instead of the 25088 x 4096 x 4096 layers.
  ``width`` scales its channel counts (0.5: the same layout with 32 to 256 channels, about a
  quarter of the parameters and of the arithmetic).
- ``resnet18`` is torchvision's ``resnet18`` with a new final layer, 512 -> classes.
"""
from pathlib import Path

import torch
import torchvision
from torch import nn


ARCHS = ("vgg16", "resnet18")
TITLES = {"vgg16": "VGG-16", "resnet18": "ResNet-18"}  # as the prose names them
WEIGHTS = (None, "imagenet")
# A chapter's ``init`` knob -> the ``weights`` of build and load_trained.
INITS = {"scratch": None, "imagenet": "imagenet"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The last convolutional block of each network, as a dotted name inside the built model:
# the ReLU after VGG's last convolution (before the final max-pool) and ResNet's layer4.
TARGET_LAYERS = {"vgg16": "net.features.42", "resnet18": "net.layer4"}

_TORCHVISION = {
    "vgg16": (torchvision.models.vgg16_bn, torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
}
VGG_HEAD_WIDTH = 256


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither in the torch cache nor downloadable."""


class GrayscaleToImageNet(nn.Module):
    """Replicate a gray channel to RGB and normalise with the ImageNet statistics."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images):
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape N x 1 x H x W (grayscale) or "
                             f"N x 3 x H x W, got {tuple(images.shape)}")
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std


class UltrasoundCNN(nn.Module):
    """A torchvision network (``net``) behind the grayscale input step (``prep``)."""

    def __init__(self, arch: str, net: nn.Module):
        super().__init__()
        self.arch = arch
        self.prep = GrayscaleToImageNet()
        self.net = net

    def forward(self, images):
        return self.net(self.prep(images))


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid architectures: "
                         f"{', '.join(ARCHS)}")
    return arch


def weights_for(init: str):
    """The ``weights`` argument for a chapter's ``init`` knob: ``None`` for ``"scratch"``
    (train from a random start), ``"imagenet"`` for ``"imagenet"``."""
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}; got {init!r}")
    return INITS[init]


def check_weights(weights):
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; valid weights: None (train from "
                         f"scratch) or 'imagenet'")
    return weights


def check_width_value(width) -> float:
    """``width`` as a float, or a ValueError: a channel multiplier in (0, 4]."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"width must be a number in (0, 4], got {width!r}")
    return float(width)


def check_width(arch: str, width, weights=None) -> float:
    """``width`` as a float, or a ValueError: a positive channel multiplier, other than 1
    only for VGG-16 trained from scratch (ImageNet weights fix the channel counts)."""
    width = check_width_value(width)
    if width != 1 and (arch != "vgg16" or weights is not None):
        raise ValueError(f"width {width} needs arch 'vgg16' and weights=None (ResNet-18 and "
                         f"ImageNet weights come at width 1 only); got arch {arch!r}, "
                         f"weights {weights!r}")
    if width != 1 and int(64 * width) < 1:
        raise ValueError(f"width {width} leaves VGG-16's first block without channels")
    return width


def build(arch: str, num_classes: int = 3, weights=None, width: float = 1.0) -> UltrasoundCNN:
    """A fresh network: ``weights=None`` trains from scratch, ``"imagenet"`` starts from
    torchvision's ImageNet weights (from the torch cache, downloaded there if missing).
    ``width`` scales VGG-16's channel counts (see the module docstring).

    Raises :class:`WeightsUnavailableError` when ImageNet weights are asked for offline and
    are not cached.
    """
    check_arch(arch)
    check_weights(weights)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    width = check_width(arch, width, weights)
    builder, imagenet = _TORCHVISION[arch]
    if weights == "imagenet":
        net = imagenet_network(arch)
    elif width != 1:
        net = _scaled_vgg16(width)
    else:
        net = builder(weights=None)
    _replace_head(arch, net, num_classes)
    return UltrasoundCNN(arch, net)


def _scaled_vgg16(width: float) -> nn.Module:
    """torchvision's VGG-16 layout with batch normalisation and ``width`` times its channels
    (same module names, so the target layer keeps its name)."""
    vgg = torchvision.models.vgg
    layout = [step if step == "M" else int(step * width) for step in vgg.cfgs["D"]]
    return vgg.VGG(vgg.make_layers(layout, batch_norm=True))


def _replace_head(arch: str, net: nn.Module, num_classes: int) -> None:
    if arch == "resnet18":
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    else:
        # Global pooling makes the head independent of the input size and ~100x smaller.
        channels = [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)][-1]
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(
            nn.Linear(channels, VGG_HEAD_WIDTH), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(VGG_HEAD_WIDTH, num_classes))


def weights_file(arch: str) -> Path:
    """Where torchvision keeps (or would keep) the ImageNet weights of ``arch``."""
    url = _TORCHVISION[check_arch(arch)][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def imagenet_weights_available(arch: str) -> bool:
    """True when the ImageNet weights of ``arch`` are already in the torch cache."""
    return weights_file(arch).exists()


def imagenet_network(arch: str) -> nn.Module:
    """torchvision's ImageNet-trained ``arch`` with its 1000-class head, downloaded if need be."""
    builder, imagenet = _TORCHVISION[arch]
    try:
        return builder(weights=imagenet)
    except OSError as error:  # URLError, timeouts, DNS failures: no way to download
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not in the torch cache and could not be "
            f"downloaded ({error}). Download them once on a machine with internet access "
            f"(torchvision.models.{builder.__name__}(weights='{imagenet.name}')) or copy "
            f"{imagenet.url} to {weights_file(arch)}; or use weights=None to train from "
            f"scratch on the ultrasound images.") from error


def target_layer(model: UltrasoundCNN) -> nn.Module:
    """The last convolutional block of ``model`` (see ``TARGET_LAYERS``)."""
    return model.get_submodule(TARGET_LAYERS[model.arch])


@torch.no_grad()
def target_layer_shape(model: UltrasoundCNN, size: int) -> tuple:
    """``(C, H, W)`` of the target layer's output for one ``size`` x ``size`` gray image."""
    seen = []
    hook = target_layer(model).register_forward_hook(
        lambda module, args, output: seen.append(tuple(output.shape[1:])))
    try:
        model.eval()(torch.zeros(1, 1, size, size, device=next(model.parameters()).device))
    finally:
        hook.remove()
    return seen[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, chunk_size: int = 256):
    """Class scores of ``images`` in chunks of ``chunk_size``, on the model's device."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dev = next(model.parameters()).device
    chunks = [model(images[start:start + chunk_size].to(dev))
              for start in range(0, len(images), chunk_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, device=dev)


def predict_proba(model: nn.Module, images: torch.Tensor, chunk_size: int = 256):
    """Class probabilities (softmax of the scores) of ``images``."""
    return predict_logits(model, images, chunk_size).softmax(dim=1)
