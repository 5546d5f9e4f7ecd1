"""Reference maps at a method's own resolution, and maps brought to one common resolution.

A deletion or insertion curve removes pixels in the order of a map. A map made of ``g x g``
constant cells removes whole cells at a time, which keeps the perturbed image closer to the
images the network knows than scattered single pixels do, and so scores differently for
reasons that have nothing to do with faithfulness. Two tools separate resolution from
faithfulness:

- :func:`random_maps`: uniform noise drawn on a ``g x g`` grid of equal cells and brought to
  the image size as the method brings its own map (nearest neighbour for constant cells,
  bilinear for methods upsampled bilinearly), optionally smoothed by a Gaussian; a method is
  then compared with the noise of its own resolution (e.g. Grad-CAM at a 3 x 3 layer with
  3 x 3 noise, 8 px patch maps of a 96 px image with 12 x 12 noise, the gradient with
  pixel noise, ``resolution=None``);
- :func:`pool_to_grid`: every map averaged over the cells of one common ``g x g`` grid and
  spread back to the image size, so that all methods are compared at the coarsest of their
  resolutions.

Maps are ``N x 1 x H x W`` (or ``N x H x W``); the grid's cells must divide the image exactly,
so every cell has the same number of pixels.
"""
import math
import numbers

import torch
import torch.nn.functional as F

from . import checks
from .blur import gaussian_blur
from .similarity import rescale

UPSAMPLING = ("nearest", "bilinear")


def random_maps(shape, *, resolution, seed, smooth_sigma=None, upsample="nearest",
                device=None, dtype=torch.float32):
    """Uniform noise maps drawn on a grid of equal cells: ``N x 1 x H x W`` in [0, 1].

    Args:
        shape: ``(N, H, W)`` or the images' shape ``(N, C, H, W)`` (the channels are ignored:
            one map per image).
        resolution: cells per side, an int ``g`` (``g x g`` cells) or a pair ``(rows,
            columns)``; each must divide the image side. ``None``: one cell per pixel.
        seed: seeds the noise (drawn on the CPU, so every device gets the same maps).
        smooth_sigma: when given, the upsampled noise is blurred with a Gaussian of this many
            pixels (edges replicated) and rescaled to [0, 1] per map: smooth noise with no
            cell boundaries, a reference for smooth maps.
        upsample: ``"nearest"`` (constant cells) or ``"bilinear"`` (as ``F.interpolate`` with
            ``align_corners=False``, the way Grad-CAM maps are brought to the image).
        device, dtype: of the result.
    """
    count, height, width = _map_shape(shape)
    rows, columns = _grid(resolution, height, width)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if upsample not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {', '.join(map(repr, UPSAMPLING))}; got "
                         f"{upsample!r}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((count, 1, rows, columns), generator=generator, dtype=torch.float64)
    if (rows, columns) != (height, width):
        noise = (F.interpolate(noise, size=(height, width), mode="nearest") if
                 upsample == "nearest" else
                 F.interpolate(noise, size=(height, width), mode="bilinear",
                               align_corners=False))
    if smooth_sigma is not None:
        noise = rescale(_blur(noise, smooth_sigma))
    return noise.to(device=device, dtype=dtype)


def pool_to_grid(maps, grid):
    """Average each map over the cells of a ``grid`` and spread the cell means back.

    Args:
        maps: ``N x 1 x H x W`` or ``N x H x W`` floating maps.
        grid: cells per side, an int or a pair ``(rows, columns)``; each must divide the side.

    Returns:
        Maps of the input's shape, dtype and device, constant on each cell and equal there to
        the map's mean over the cell. A map already constant on the cells is returned
        unchanged (up to the rounding of the mean).
    """
    checks.map_batch(maps, one_channel=True)
    height, width = maps.shape[-2:]
    rows, columns = _grid(grid, height, width, name="grid")
    cell = (height // rows, width // columns)
    batch = maps.reshape(-1, 1, height, width)
    means = F.avg_pool2d(batch, kernel_size=cell, stride=cell)
    spread = means.repeat_interleave(cell[0], dim=-2).repeat_interleave(cell[1], dim=-1)
    return spread.reshape(maps.shape)


def divisors(side):
    """The grid sizes that divide an image side of ``side`` pixels into equal cells."""
    return [g for g in range(1, side + 1) if side % g == 0]


def _grid(resolution, height, width, name="resolution"):
    """``(rows, columns)`` of a grid given as None (pixels), an int or a pair."""
    if resolution is None and name == "resolution":
        return height, width
    pair = resolution if isinstance(resolution, (tuple, list)) else (resolution, resolution)
    if len(pair) != 2 or not all(isinstance(g, numbers.Integral) and not isinstance(g, bool)
                                 and g > 0 for g in pair):
        allowed = "None, " if name == "resolution" else ""
        raise ValueError(f"{name} must be {allowed}a positive int or a pair (rows, columns) of "
                         f"them; got {resolution!r}")
    rows, columns = int(pair[0]), int(pair[1])
    if height % rows or width % columns:
        raise ValueError(f"{name} {resolution!r} does not divide the {height} x {width} image "
                         f"into equal cells; rows may be {divisors(height)}, columns "
                         f"{divisors(width)}")
    return rows, columns


def _map_shape(shape):
    try:
        sizes = tuple(int(s) for s in shape)
        valid = len(sizes) in (3, 4) and all(s > 0 for s in sizes) and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"shape must be (N, H, W) or (N, C, H, W) with positive ints; got "
                         f"{shape!r}")
    return sizes[0], sizes[-2], sizes[-1]


def _blur(maps, sigma):
    if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real)
            or not math.isfinite(sigma) or sigma <= 0):
        raise ValueError(f"smooth_sigma must be a positive number of pixels or None; got "
                         f"{sigma!r}")
    return gaussian_blur(maps, sigma)
