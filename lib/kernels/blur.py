"""Gaussian blur of image batches: the smooth baseline of perturbation metrics and Sobol maps,
and a regulariser of activation maximisation."""
import math
import numbers

import torch
import torch.nn.functional as F


def gaussian_blur(images, sigma):
    """Blur a ``B x C x H x W`` batch with a Gaussian of ``sigma`` pixels (edges replicated)."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number of pixels; got {sigma!r}")
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, rows, groups=channels)
    return F.conv2d(blurred, cols, groups=channels)
