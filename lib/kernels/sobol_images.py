"""Sobol' maps of an image classifier: global sensitivity over a grid of image regions.

Global sensitivity analysis of a CNN over its pixels is out of reach (a Saltelli design needs
N (D + 2) model runs for D inputs, and an image has tens of thousands of pixels). Grouping the
pixels makes it affordable: cut the image into a ``g x g`` grid of regions and give region
``i`` one input ``u_i`` in [0, 1], how much of the region is kept (the Sobol attribution
method of Fel et al., NeurIPS 2021, which reports total indices only). Then

    x~(u) = x0 + U (x - x0),        U = the g x g values u, each spread over its region,

with ``x`` the image and ``x0`` a baseline of the same shape: a region with ``u_i = 1`` is the
image, ``u_i = 0`` the baseline, values in between a linear blend of the two. The Sobol'
inputs ``u`` are uniform and independent, so the indices answer: how much of the variance of
the class score under random partial removal of regions is due to region ``i`` alone
(first order ``S1``), and to region ``i`` with all its interactions with other regions
(total ``ST``). ``ST - S1`` is the share of variance that region ``i`` explains only together
with other regions (e.g. a lesion's margin that counts only when its centre is visible too).

The baseline is what "removed" means. For ultrasound the default is a Gaussian blur of the
image (``"blur"``), not black: black is in-distribution in B-mode images (anechoic cysts,
acoustic shadows and the background are black, and a dark region is itself a sign of a
lesion), so blending towards black could *add* evidence; a blur removes speckle, edges and
margins, what a region shows in detail, and keeps its mean brightness. A constant (e.g. 0 as
in Fel et al.'s "inpainting") or any tensor of the images' shape can be given instead.

One mask design, the Saltelli design of ``lib.sobol`` on the unit cube (D = g^2 inputs,
without second order: N (g^2 + 2) masks), is shared by a whole batch of images: every chunk
of (mask, image) pairs goes through the model in one forward on the device, and the indices
of all images come out of one call of ``lib.kernels.sobol.estimate_indices`` with the images as its
output axis, with bootstrap confidence intervals. The cost is N (g^2 + 2) forward passes per
image.
"""
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..hardware import device as default_device
from ..progress import progress
from . import checks, sobol
from .blocks import forward_block
from .blur import gaussian_blur

BASELINES = ("blur",)
OUTPUTS = ("logit", "probability")
UPSAMPLING = ("nearest", "bilinear")
INDICES = ("S1", "ST", "S1_conf", "ST_conf")
# Gaussian blur of the "blur" baseline, in pixels (lib.metrics uses the same default).
DEFAULT_BLUR_SIGMA = 5.0
# Perturbed images per forward on a GPU by default (on a CPU, lib.kernels.blocks.CPU_BLOCK);
# a user's chunk_size overrides it.
DEFAULT_CHUNK_SIZE = 128


# ----------------------------------------------------------------------------- the design

def allowed_grids(height: int, width: int) -> list:
    """The grid sizes ``g`` that cut an ``height x width`` image into equal square regions:
    the divisors of both sides (e.g. 1, 2, 4, 8, 16, 32 for 32 x 32)."""
    common = math.gcd(int(height), int(width))
    return [g for g in range(1, common + 1) if common % g == 0]


def check_grid(grid, height: int, width: int) -> int:
    """``grid`` if it divides both image sides, else a ValueError listing the allowed sizes."""
    allowed = allowed_grids(height, width)
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or grid not in allowed:
        raise ValueError(f"grid must be a positive integer that divides the image size "
                         f"{height} x {width}, so that every region is a {height}/g x "
                         f"{width}/g block; allowed: {allowed}; got {grid!r}")
    return int(grid)


def check_base_samples(N) -> int:
    """``N`` if it is a power of two >= 2 (the Sobol' sequence is balanced only then)."""
    if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 2 or N & (N - 1):
        raise ValueError(f"N (base samples) must be a power of two >= 2 (2, 4, ..., 64, ...): "
                         f"the Sobol' sequence loses its balance otherwise; got {N!r}")
    return int(N)


def forward_passes(grid: int, N: int) -> int:
    """Model evaluations per image: N (g^2 + 2)."""
    return N * sobol.rows_per_base_sample(grid * grid, calc_second_order=False)


def mask_design(grid: int, N: int, seed=None, device=None) -> torch.Tensor:
    """The Saltelli design of ``lib.sobol`` for D = g^2 regions: (N (g^2 + 2), g, g) masks.

    Row order as ``lib.sobol`` (per base sample: ``A``, ``AB_1 .. AB_D``, ``B``); region
    ``(r, c)`` is input ``r g + c``. Float32 on ``device`` (default ``lib.device()``).
    """
    grid = checks.positive_int("grid", grid)
    N = check_base_samples(N)
    unit = sobol.unit_design(grid * grid, N, calc_second_order=False, seed=seed)
    dev = torch.device(device) if device is not None else default_device()
    return torch.as_tensor(unit, dtype=torch.float32, device=dev).view(-1, grid, grid)


def upsample_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """(rows, g, g) masks -> (rows, 1, H, W): each value fills its H/g x W/g region."""
    height, width = size
    grid = masks.shape[-1]
    check_grid(grid, height, width)
    blocks = masks.unsqueeze(1)
    return blocks.repeat_interleave(height // grid, dim=-2) \
                 .repeat_interleave(width // grid, dim=-1)


def perturb(images: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``fill + masks (images - fill)``: the image where a mask is 1, the baseline where it
    is 0, a linear blend in between. ``masks`` (n, 1, H, W) broadcast over the channels."""
    return torch.lerp(fill, images, masks)


def baseline_images(images: torch.Tensor, baseline="blur",
                    blur_sigma: float = DEFAULT_BLUR_SIGMA) -> torch.Tensor:
    """The baseline images ``x0``: ``"blur"`` (a Gaussian blur of ``blur_sigma`` pixels), a
    number (a constant image), or a tensor of the images' shape (used as given)."""
    if isinstance(baseline, torch.Tensor):
        if tuple(baseline.shape) != tuple(images.shape):
            raise ValueError(f"a baseline tensor must have the images' shape "
                             f"{tuple(images.shape)} (N x C x H x W); got "
                             f"{tuple(baseline.shape)}")
        if not torch.isfinite(baseline).all():
            raise ValueError("the baseline tensor contains NaN or infinite values")
        return baseline.to(images)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"a constant baseline must be finite; got {baseline!r}")
        return torch.full_like(images, float(baseline))
    if isinstance(baseline, str) and baseline in BASELINES:
        return gaussian_blur(images, blur_sigma)
    raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINES))}, a number or "
                     f"a tensor of the images' shape {tuple(images.shape)}; got {baseline!r}")


# -------------------------------------------------------------------------- the estimator

@dataclass
class SobolMaps:
    """Sobol' indices of every region of a batch of images, and how they were obtained.

    ``S1``, ``ST``: first-order and total indices, (images, g, g) float64 tensors;
    ``S1_conf``, ``ST_conf``: bootstrap confidence half-widths (``conf_level``), same shape;
    ``target``: the class whose score was analysed, per image; ``grid``, ``N``: the design;
    ``forwards``: model evaluations per image, N (g^2 + 2).
    """

    S1: torch.Tensor
    ST: torch.Tensor
    S1_conf: torch.Tensor
    ST_conf: torch.Tensor
    target: torch.Tensor
    grid: int
    N: int
    conf_level: float

    @property
    def forwards(self) -> int:
        return forward_passes(self.grid, self.N)

    def to_image(self, key: str, size, mode: str = "nearest") -> torch.Tensor:
        """Index ``key`` (S1, ST, S1_conf or ST_conf) as (images, 1, H, W) maps.

        ``"nearest"`` fills each region with its value (the index belongs to the region);
        ``"bilinear"`` interpolates between region centres, as Grad-CAM maps are upsampled.
        """
        if key not in INDICES:
            raise ValueError(f"key must be one of {', '.join(INDICES)}; got {key!r}")
        if mode not in UPSAMPLING:
            raise ValueError(f"mode must be one of {', '.join(map(repr, UPSAMPLING))}; "
                             f"got {mode!r}")
        values = getattr(self, key).float()
        if mode == "nearest":
            return upsample_masks(values, size)
        return F.interpolate(values.unsqueeze(1), size=tuple(size), mode="bilinear",
                             align_corners=False)


def maps_from_outputs(outputs: torch.Tensor, grid: int, *, num_resamples: int = 100,
                      conf_level: float = 0.95, seed=None) -> dict:
    """S1, ST and their confidence half-widths, (images, g, g) each, from the model outputs
    (N (g^2 + 2), images) of ``mask_design`` rows, by ``lib.kernels.sobol.estimate_indices``."""
    checks.finite(outputs, "the model's score of the perturbed images", "image", axis=1)
    blocks = sobol.split_blocks(outputs, grid * grid, calc_second_order=False)
    indices = sobol.estimate_indices(blocks, num_resamples=num_resamples,
                                     conf_level=conf_level, seed=seed)
    return {key: indices[key].view(grid, grid, -1).permute(2, 0, 1).contiguous()
            for key in INDICES}


def sobol_maps(model, images, target=None, *, grid: int, N: int, baseline="blur",
               blur_sigma: float = DEFAULT_BLUR_SIGMA, output: str = "logit",
               num_resamples: int = 100, conf_level: float = 0.95, seed=None,
               chunk_size: int | None = None, show_progress: bool = True) -> SobolMaps:
    """First-order and total Sobol' maps, with bootstrap CIs, of a batch of images.

    Args:
        model: a classifier in eval mode on the device of ``images``, mapping
            ``n x C x H x W`` images to ``n x classes`` scores (logits).
        images: ``B x C x H x W`` floating tensor.
        target: the class analysed: ``None`` for each image's predicted class, an int, or
            one int per image.
        grid: ``g``, the regions per side; must divide ``H`` and ``W`` (see
            :func:`allowed_grids`).
        N: base samples of the design, a power of two; N (g^2 + 2) forwards per image.
        baseline: what a removed region becomes: ``"blur"``, a number, or a tensor of the
            images' shape (see the module notes and :func:`baseline_images`).
        output: the score analysed, ``"logit"`` or ``"probability"`` (softmax).
        num_resamples, conf_level: the bootstrap behind ``S1_conf`` and ``ST_conf``.
        seed: seeds the design's scrambling and the bootstrap.
        chunk_size: perturbed images per forward pass (None: 16 on a CPU,
            ``DEFAULT_CHUNK_SIZE`` on a GPU, see ``lib.kernels.blocks``); on a CUDA
            out-of-memory error it is halved and evaluation goes on.
        show_progress: a progress bar when the run takes more than one chunk.

    Returns:
        :class:`SobolMaps`, tensors on the images' device.
    """
    outputs, classes = design_outputs(model, images, target, grid=grid, N=N,
                                      baseline=baseline, blur_sigma=blur_sigma,
                                      output=output, seed=seed, chunk_size=chunk_size,
                                      show_progress=show_progress)
    indices = maps_from_outputs(outputs, grid, num_resamples=num_resamples,
                                conf_level=conf_level, seed=seed)
    return SobolMaps(**indices, target=classes, grid=grid, N=N, conf_level=conf_level)


def design_outputs(model, images, target=None, *, grid: int, N: int, baseline="blur",
                   blur_sigma: float = DEFAULT_BLUR_SIGMA, output: str = "logit", seed=None,
                   chunk_size: int | None = None, show_progress: bool = True):
    """The scores ``(N (g^2 + 2), B)`` of every image under every mask of the design of ``N``
    base samples, and the class analysed per image (arguments as :func:`sobol_maps`)."""
    checks.model_and_images(model, images, module_only=False)
    grid = check_grid(grid, *images.shape[-2:])
    N = check_base_samples(N)
    checks.choice("output", output, OUTPUTS)
    chunk_size = forward_block(chunk_size, images.device, DEFAULT_CHUNK_SIZE)
    fill = baseline_images(images, baseline, blur_sigma)
    masks = mask_design(grid, N, seed=seed, device=images.device)
    classes = classes_to_explain(model, images, target, chunk_size)
    outputs = evaluate_masks(model, images, fill, masks, classes, output=output,
                             chunk_size=chunk_size, show_progress=show_progress)
    return outputs, classes


@torch.no_grad()
def evaluate_masks(model, images, fill, masks, classes, *, output="logit",
                   chunk_size=None, show_progress=True) -> torch.Tensor:
    """Scores of class ``classes[b]`` for every mask applied to every image b: (masks, B).

    Each forward takes a block of masks times images (at most ``chunk_size`` pairs): the
    block's masks are upsampled once and applied to all its images by broadcasting. Blocks
    span the whole batch unless it holds more than ``chunk_size`` images.
    """
    chunk_size = forward_block(chunk_size, images.device, DEFAULT_CHUNK_SIZE)
    count, batch = masks.shape[0], images.shape[0]
    image_step = min(batch, chunk_size)
    row_step = max(1, chunk_size // image_step)
    scores = torch.empty((count, batch), dtype=torch.float32, device=images.device)
    bar = progress(total=count * batch, desc="sobol maps", unit="image", leave=False,
                   show=show_progress and count * batch > chunk_size)
    for first_row in range(0, count, row_step):
        rows = slice(first_row, min(first_row + row_step, count))
        upsampled = upsample_masks(masks[rows], images.shape[-2:])
        for first_image in range(0, batch, image_step):
            cols = slice(first_image, min(first_image + image_step, batch))
            scores[rows, cols] = _block_scores(model, images[cols], fill[cols], upsampled,
                                               classes[cols], output)
            bar.update(upsampled.shape[0] * (cols.stop - cols.start))
    bar.close()
    return scores


def _block_scores(model, images, fill, upsampled, classes, output) -> torch.Tensor:
    """(masks, images) scores of one block; on CUDA out-of-memory, in two halves."""
    try:
        return _forward_block(model, images, fill, upsampled, classes, output)
    except torch.cuda.OutOfMemoryError:
        if upsampled.shape[0] * images.shape[0] == 1:
            raise
        torch.cuda.empty_cache()
        if upsampled.shape[0] > 1:
            half = upsampled.shape[0] // 2
            return torch.cat([_block_scores(model, images, fill, part, classes, output)
                              for part in (upsampled[:half], upsampled[half:])])
        half = images.shape[0] // 2
        return torch.cat([_block_scores(model, images[part], fill[part], upsampled,
                                        classes[part], output)
                          for part in (slice(0, half), slice(half, None))], dim=1)


def _forward_block(model, images, fill, upsampled, classes, output) -> torch.Tensor:
    perturbed = perturb(images.unsqueeze(0), fill.unsqueeze(0), upsampled.unsqueeze(1))
    count, batch = perturbed.shape[:2]
    logits = checks.logits(model(perturbed.flatten(0, 1)), count * batch)
    if output == "probability":
        logits = logits.softmax(dim=1)
    picked = logits.view(count, batch, -1).gather(2, classes.view(1, -1, 1).expand(count, -1, 1))
    return picked.squeeze(2).float()


# ----------------------------------------------------------------------------- the checks

@torch.no_grad()
def classes_to_explain(model, images, target, chunk_size):
    """One class per image: the given ones (checked against the model's classes), or the
    predictions on the intact images."""
    logits = torch.cat([model(images[s:s + chunk_size])
                        for s in range(0, images.shape[0], chunk_size)])
    return checks.classes_or_predictions(target, logits)
