"""How alike two maps of the same image are: rank correlation and structural similarity.

- ``"spearman"`` (:func:`rank_correlation`): Spearman's rank correlation over all pixels (and
  channels), ties sharing their average rank; NaN when a map is constant (no ranking to
  correlate);
- ``"ssim"`` (:func:`ssim`): the structural similarity index of Wang et al. (2004) on the maps
  rescaled to [0, 1] each (min to 0, max to 1; a constant map becomes 0), with the standard
  choices: a Gaussian window of sigma 1.5 px truncated at 3.5 sigma (11 x 11), ``K1 = 0.01``,
  ``K2 = 0.03``, data range 1, population (not sample) variances, averaged over the window
  positions that lie wholly inside the map (and over channels). This equals
  ``skimage.metrics.structural_similarity(..., data_range=1, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)``. Maps must be at least 11 px on each side.
"""
import math

import torch
import torch.nn.functional as F

from . import checks

SIMILARITIES = ("spearman", "ssim")
# Wang et al. (2004): Gaussian window of sigma 1.5 px (11 x 11), K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
SSIM_K1, SSIM_K2 = 0.01, 0.03


def compare_maps(maps_a, maps_b, *, similarity=SIMILARITIES, absolute=True):
    """Per-image similarity of two batches of maps of the same images.

    ``maps_a``, ``maps_b``: ``N x K x H x W`` (or ``N x H x W``) of the same shape, finite.
    Returns ``{name: length-N float64 tensor}`` for each name in ``similarity`` (see the
    module docstring; SSIM needs ``H, W >= 11``).
    """
    similarity = check_similarity(similarity)
    a, b = checks.map_batch(maps_a, "maps_a"), checks.map_batch(maps_b, "maps_b")
    if a.shape != b.shape:
        raise ValueError(f"maps_a and maps_b must have the same shape; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if absolute:
        a, b = a.abs(), b.abs()
    a, b = a.double(), b.to(a.device).double()
    result = {}
    if "spearman" in similarity:
        result["spearman"] = rank_correlation(a, b)
    if "ssim" in similarity:
        check_ssim_size(a)
        result["ssim"] = ssim(rescale(a), rescale(b))
    return result


def rank_correlation(a, b):
    """Spearman's rank correlation of two batches of maps, per image: a length-``N`` tensor.

    Pixels with equal values share their average rank (as in ``scipy.stats.spearmanr``), so
    the zeros that Grad-CAM's ReLU leaves count as one tied block. NaN where a map is constant.
    """
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        raise ValueError(f"a and b must be tensors of the same shape; got "
                         f"{getattr(a, 'shape', None)} and {getattr(b, 'shape', None)}")
    ranks_a, ranks_b = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    scale = ranks_a.norm(dim=1) * ranks_b.norm(dim=1)
    return torch.where(scale > 0, (ranks_a * ranks_b).sum(dim=1) / scale, math.nan)


def average_ranks(values):
    """Ranks (0-based, ascending) of each row of an ``N x P`` tensor; ties get their mean."""
    ordered, order = values.double().sort(dim=1)
    positions = torch.arange(values.shape[1], dtype=torch.float64,
                             device=values.device).expand_as(ordered)
    starts_block = torch.ones_like(ordered, dtype=torch.bool)
    starts_block[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends_block = torch.ones_like(starts_block)
    ends_block[:, :-1] = starts_block[:, 1:]
    first = torch.where(starts_block, positions, 0.0).cummax(dim=1).values
    last = torch.where(ends_block, positions, math.inf).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(ordered).scatter_(1, order, (first + last) / 2)


def ssim(a, b):
    """Mean structural similarity of each pair of maps with values in [0, 1]: length ``N``.

    ``a``, ``b``: ``N x K x H x W`` with ``H, W >= 11``; the index is averaged over the valid
    window positions and the ``K`` channels (see the module docstring for the constants).
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two N x K x H x W tensors of the same shape; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    check_ssim_size(a)
    a, b = a.double(), b.double()
    channels = a.shape[1]
    flat = torch.cat([a, b, a * a, b * b, a * b]).flatten(0, 1).unsqueeze(1)
    means = _window_means(flat)
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = means.view(
        5, a.shape[0], channels, *means.shape[-2:]).unbind(0)
    var_a, var_b = mean_aa - mean_a ** 2, mean_bb - mean_b ** 2
    covariance = mean_ab - mean_a * mean_b
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range 1
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)
             / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
    return index.flatten(1).mean(dim=1)


def rescale(maps):
    """Each map (all its channels together) mapped to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (flat - low) / torch.where(span > 0, span, 1.0), 0.0)
    return scaled.view_as(maps)


def _window_means(maps):
    """Gaussian-weighted means over every 11 x 11 window wholly inside ``B x 1 x H x W``."""
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    return F.conv2d(F.conv2d(maps, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))


def check_similarity(similarity):
    names = (similarity,) if isinstance(similarity, str) else tuple(similarity)
    unknown = [name for name in names if name not in SIMILARITIES]
    if unknown or not names:
        raise ValueError(f"similarity must name one or more of "
                         f"{', '.join(map(repr, SIMILARITIES))}; got {similarity!r}")
    return tuple(dict.fromkeys(names))


def check_ssim_size(maps):
    if min(maps.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs maps of at least {2 * SSIM_RADIUS + 1} x "
                         f"{2 * SSIM_RADIUS + 1} pixels (its window); got "
                         f"{tuple(maps.shape[-2:])}; use similarity=('spearman',)")


