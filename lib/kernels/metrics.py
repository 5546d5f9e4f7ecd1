"""How good is a saliency map? Localisation against lesion masks, and faithfulness to the model.

Localisation (does the map point at what the radiologist outlined?), for a map ``S`` and a
binary mask ``M`` of the same size:

- *pointing game* (Zhang et al. 2018): a hit when the map's maximum (the first one in row-major
  order) lies in the mask, or within ``tolerance`` pixels of it; a constant map has no maximum
  to point with and counts as a miss;
- *top-k IoU*: the intersection over union of the ``k`` % highest pixels of ``S`` with ``M``;
  ``k="mask"`` takes as many pixels as the mask has, so a map that ranks the mask first scores 1;
- *energy in mask* (the "energy-based pointing game" of Wang et al. 2020):
  ``sum(S * M) / sum(S)`` for a non-negative map.

An empty mask (a normal image) leaves these undefined: they are NaN for that image, and
:func:`summarise` leaves NaNs out of its means and reports how many. A map whose total is zero
has no energy to share out: its energy in mask is NaN too.

Faithfulness (does the model's output follow the map?), the deletion and insertion curves of
Petsiuk et al. (2018): remove the pixels in the map's order, most important first, replacing
them with a baseline, and follow the class score (deletion: a faithful map makes it fall fast,
small area under the curve); or start from the baseline and put the pixels back (insertion: a
faithful map makes it rise fast, large area). The baseline is a choice that changes the answer:
``"black"`` (zeros) is the usual one, but in ultrasound black is in-distribution (anechoic
regions and the background are black), so ``"blur"`` (a Gaussian blur of the image) is offered
too, as are a constant and any tensor.

Every function takes a batch of maps (``N x 1 x H x W`` or ``N x H x W``) and returns one value
per image, a tensor on the maps' device.
"""
import math
import numbers
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ..progress import progress
from . import checks
from .blocks import forward_block
from .blur import gaussian_blur
from .bootstrap import bootstrap_counts

MODES = ("deletion", "insertion")
OUTPUTS = ("probability", "logit")
BASELINES = ("black", "blur")
TIES = ("random", "row-major")
METRICS = ("pointing_game", "top_k_iou", "energy_in_mask", "deletion_auc", "insertion_auc")
# Images per forward for the perturbation curves on a GPU by default (lib.kernels.blocks).
DEFAULT_CHUNK_SIZE = 64


def pointing_game(maps, masks, *, tolerance=0):
    """1.0 when the map's maximum falls in the mask (or within ``tolerance`` pixels of it),
    0.0 when not, NaN for an empty mask; a constant map is a miss. A length-``N`` tensor."""
    maps, masks = _check_maps_and_masks(maps, masks)
    if not isinstance(tolerance, numbers.Integral) or isinstance(tolerance, bool) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative int (pixels); got {tolerance!r}")
    target = _dilate(masks, tolerance) if tolerance else masks
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1, keepdim=True)
    hit = target.flatten(1).gather(1, peak).squeeze(1)
    hit &= flat.amax(dim=1) > flat.amin(dim=1)  # a flat map points nowhere
    return _undefined_where_empty(hit.to(maps.dtype), masks)


def top_k_iou(maps, masks, *, k="mask", ties="random", seed=0):
    """IoU of the map's top ``k`` % pixels with the mask: a length-``N`` tensor.

    ``k``: a percentage in (0, 100], or ``"mask"`` for as many pixels as the mask holds.
    ``ties``: how equal map values are ordered (see :func:`pixel_ranks`). NaN for an empty
    mask.
    """
    maps, masks = _check_maps_and_masks(maps, masks)
    area = masks.flatten(1).sum(dim=1)
    pixels = masks[0].numel()
    if k == "mask":
        count = area
    elif isinstance(k, numbers.Real) and not isinstance(k, bool) and 0 < k <= 100:
        count = torch.full_like(area, max(1, round(k / 100 * pixels)))
    else:
        raise ValueError(f"k must be a percentage in (0, 100] or 'mask'; got {k!r}")
    top = pixel_ranks(maps, ties=ties, seed=seed) < count[:, None]
    inside = masks.flatten(1)
    intersection = (top & inside).sum(dim=1)
    union = (top | inside).sum(dim=1)
    iou = intersection.to(maps.dtype) / union.clamp_min(1).to(maps.dtype)
    return _undefined_where_empty(iou, masks)


def energy_in_mask(maps, masks):
    """Share of a non-negative map's total inside the mask: a length-``N`` tensor.

    NaN for an empty mask or an all-zero map. A map with negative values is refused: pass
    ``maps.abs()`` or ``maps.clamp(min=0)``, whichever the question needs.
    """
    maps, masks = _check_maps_and_masks(maps, masks)
    if (maps < 0).any():
        raise ValueError("energy_in_mask needs non-negative maps; pass maps.abs() or "
                         "maps.clamp(min=0)")
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * masks).flatten(1).sum(dim=1)
    energy = torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny),
                         torch.full_like(total, math.nan))
    return _undefined_where_empty(energy, masks)


@dataclass
class Curves:
    """Deletion or insertion curves of a batch of images.

    ``fractions``: the share of pixels removed (deletion) or restored (insertion) at each step,
    ``steps + 1`` values from 0 to 1; ``scores``: ``N x (steps + 1)`` class scores;
    ``auc``: the area under each curve (trapezoidal rule over ``fractions``), length ``N``.
    """

    mode: str
    baseline: str
    output: str
    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def perturbation_curves(model, images, maps, *, mode, target=None, baseline="black", steps=20,
                        output="probability", blur_sigma=5.0, ties="random", seed=0,
                        preprocess=None, chunk_size=None, show_progress=True):
    """Deletion or insertion curves (Petsiuk et al. 2018) for a batch of images and maps.

    Args:
        model: a classifier in eval mode on the device of ``images``; it receives
            ``preprocess(x)`` for the perturbed images ``x``.
        images: ``N x C x H x W`` images.
        maps: ``N x 1 x H x W`` or ``N x H x W`` maps; higher means more important.
        ties, seed: how pixels with equal map values are ordered (see :func:`pixel_ranks`).
        mode: ``"deletion"`` or ``"insertion"``.
        target: the class followed: ``None`` for the class predicted on the intact image, an
            int, or one int per image.
        baseline: what replaces a removed pixel (all channels): ``"black"`` (0), ``"blur"``
            (the image blurred with a Gaussian of ``blur_sigma`` pixels), a number, or an
            ``N x C x H x W`` tensor.
        steps: number of equal steps from none to all of the pixels (``steps + 1`` points).
        output: the score followed, ``"probability"`` (softmax) or ``"logit"``.
        chunk_size: perturbed images per forward pass; all steps of all images are evaluated
            in chunks of this size. None: ``lib.kernels.blocks.CPU_BLOCK`` on a CPU,
            ``DEFAULT_CHUNK_SIZE`` on a GPU.

    Returns:
        :class:`Curves`.
    """
    checks.choice("mode", mode, MODES)
    return curves_of_maps(model, images, {"map": maps}, modes=(mode,), target=target,
                          baseline=baseline, steps=steps, output=output,
                          blur_sigma=blur_sigma, ties=ties, seed=seed, preprocess=preprocess,
                          chunk_size=chunk_size, show_progress=show_progress)["map"][mode]


def curves_of_maps(model, images, maps: dict, *, modes=MODES, target=None, baseline="black",
                   steps=20, output="probability", blur_sigma=5.0, ties="random", seed=0,
                   preprocess=None, chunk_size=None, show_progress=True) -> dict:
    """Deletion and/or insertion curves of several maps of the same images:
    ``{name: {mode: Curves}}``, as :func:`perturbation_curves` gives them one by one.

    The two ends of every curve do not depend on the map (the intact images and the baseline),
    so they are scored once for all maps and both modes: ``steps - 1`` forward passes per
    image, map and mode instead of ``steps + 1``.
    """
    for mode in modes:
        checks.choice("mode", mode, MODES)
    if not modes:
        raise ValueError("modes must name at least one of " + ", ".join(MODES))
    if not isinstance(maps, dict) or not maps:
        raise ValueError("maps must be a non-empty dict {name: N x 1 x H x W maps}")
    checks.choice("output", output, OUTPUTS)
    checks.positive_int("steps", steps)
    checks.model_and_images(model, images)
    chunk_size = forward_block(chunk_size, images.device, DEFAULT_CHUNK_SIZE)
    maps = {name: _check_maps(values, images.shape[-2:], images.shape[0])
            for name, values in maps.items()}
    fill, baseline_name = _baseline(baseline, images, blur_sigma)
    classes = _classes(model, images, target, preprocess, chunk_size)
    count = images.shape[0]
    pixels = images[0, 0].numel()
    counts = torch.linspace(0, pixels, steps + 1, device=images.device).round().long()
    fractions = counts.to(images.dtype) / pixels

    def ends(flat):  # the intact images, then the baseline
        which, image = flat // count, flat % count
        batch = torch.where((which == 0).view(-1, 1, 1, 1), images[image], fill[image])
        return batch, classes[image]

    intact, filled = _score_in_chunks(model, ends, 2 * count, output, preprocess, chunk_size,
                                      False, desc="ends", device=images.device).view(2, count)
    fractions = fractions.to(intact.dtype)
    inner = steps - 1  # the steps between the two ends
    result = {}
    for name, values in maps.items():
        ranks = pixel_ranks(values, ties=ties, seed=seed)
        result[name] = {}
        for mode in modes:
            source, replacement = (images, fill) if mode == "deletion" else (fill, images)
            first, last = (intact, filled) if mode == "deletion" else (filled, intact)

            def perturbed(flat, source=source, replacement=replacement, ranks=ranks):
                image, step = flat // inner, flat % inner + 1
                changed = (ranks[image] < counts[step, None]).view(-1, 1, *images.shape[-2:])
                return torch.where(changed, replacement[image], source[image]), classes[image]

            middle = (_score_in_chunks(model, perturbed, count * inner, output, preprocess,
                                       chunk_size, show_progress, desc=mode,
                                       device=images.device).view(count, inner)
                      if inner else first.new_empty(count, 0))
            scores = torch.cat([first[:, None], middle, last[:, None]], dim=1)
            scores = checks.finite(scores, f"the model's {output} along the {mode} curve")
            auc = torch.trapezoid(scores, fractions, dim=1)
            result[name][mode] = Curves(mode, baseline_name, output, fractions, scores, auc)
    return result


def deletion_auc(model, images, maps, **options):
    """Area under the deletion curve (lower is more faithful); see :func:`perturbation_curves`."""
    return perturbation_curves(model, images, maps, mode="deletion", **options).auc


def insertion_auc(model, images, maps, **options):
    """Area under the insertion curve (higher is more faithful); see :func:`perturbation_curves`."""
    return perturbation_curves(model, images, maps, mode="insertion", **options).auc


def localisation_scores(maps, masks, *, k="mask", tolerance=0, ties="random", seed=0):
    """Pointing game, top-k IoU and energy in mask of a batch: ``{metric: length-N tensor}``.

    The maps must be non-negative (energy needs it): score signed maps (gradients, finite
    differences) by their size, ``maps.abs()``.
    """
    return {"pointing_game": pointing_game(maps, masks, tolerance=tolerance),
            "top_k_iou": top_k_iou(maps, masks, k=k, ties=ties, seed=seed),
            "energy_in_mask": energy_in_mask(maps, masks)}


def explanation_scores(model, images, maps, masks, target=None, *, k="mask", tolerance=0,
                       baseline="blur", steps=20, output="probability", blur_sigma=5.0,
                       ties="random", seed=0, preprocess=None, chunk_size=None,
                       show_progress=True):
    """Every metric of this module for one batch of maps: ``{metric: length-N tensor}``.

    The localisation metrics as in :func:`localisation_scores`, then ``deletion_auc`` and
    ``insertion_auc`` with the given baseline (see :func:`perturbation_curves`). Feed the
    result, per method and network, to :func:`summarise`.
    """
    scores = localisation_scores(maps, masks, k=k, tolerance=tolerance, ties=ties, seed=seed)
    options = dict(target=target, baseline=baseline, steps=steps, output=output,
                   blur_sigma=blur_sigma, ties=ties, seed=seed, preprocess=preprocess,
                   chunk_size=chunk_size, show_progress=show_progress)
    for mode in MODES:
        scores[f"{mode}_auc"] = perturbation_curves(model, images, maps, mode=mode,
                                                    **options).auc
    return scores


def summarise(scores, *, names=("group",), n_boot=1000, level=0.95, seed=0):
    """A tidy table of means with percentile-bootstrap confidence intervals over images.

    Args:
        scores: ``{group: {metric: length-N tensor}}``, e.g. keyed by ``(network, method)``
            with the dicts of :func:`explanation_scores`. A group key is a value or a tuple.
        names: column names for the parts of the group keys.
        n_boot: bootstrap resamples of the images; ``level``: the CI's coverage.
        seed: seeds the resampling (the same images are drawn for every metric of equal size).

    Returns:
        A DataFrame with one row per group and metric: the group columns, ``metric``,
        ``mean``, ``ci_low``, ``ci_high``, ``n`` (images with a defined value) and
        ``n_excluded`` (images where the metric is NaN, e.g. empty masks).
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    rows = []
    for group, metrics in scores.items():
        key = group if isinstance(group, tuple) else (group,)
        if len(key) != len(names):
            raise ValueError(f"group key {group!r} has {len(key)} parts but names has "
                             f"{len(names)}: {names}")
        for metric, values in metrics.items():
            stats = bootstrap_mean(values, n_boot=n_boot, level=level, seed=seed)
            rows.append({**dict(zip(names, key)), "metric": metric, **stats})
    return pd.DataFrame(rows)


def bootstrap_mean(values, *, n_boot=1000, level=0.95, seed=0):
    """Mean of the non-NaN ``values`` with a percentile-bootstrap CI.

    Returns ``{"mean", "ci_low", "ci_high", "n", "n_excluded"}`` (NaN statistics when no value
    is defined).
    """
    checks.positive_int("n_boot", n_boot)
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    defined = values[~torch.isnan(values)]
    n = defined.numel()
    stats = {"n": n, "n_excluded": values.numel() - n}
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, **stats}
    means = bootstrap_counts(n, n_boot, seed) @ defined.cpu() / n
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return {"mean": defined.mean().item(), "ci_low": low.item(), "ci_high": high.item(), **stats}


def pixel_ranks(maps, *, ties="random", seed=0):
    """Each pixel's rank in its map, 0 for the highest: an ``N x (H W)`` long tensor.

    ``ties="random"`` orders pixels with equal values at random (seeded by ``seed``), so a
    plateau - e.g. the zeros that Grad-CAM's ReLU leaves - is removed evenly rather than from
    the top of the image down; ``"row-major"`` keeps them in reading order.
    """
    checks.choice("ties", ties, TIES)
    flat = maps.flatten(1)
    if ties == "random":
        generator = torch.Generator().manual_seed(seed)
        shuffle = torch.rand(flat.shape, generator=generator).argsort(dim=1).to(flat.device)
        order = shuffle.gather(1, torch.argsort(flat.gather(1, shuffle), dim=1,
                                                descending=True, stable=True))
    else:
        order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _score_in_chunks(model, build, total, output, preprocess, chunk_size, show_progress, desc,
                     device):
    """Scores of ``total`` perturbed images made by ``build(flat indices)``, chunk by chunk."""
    starts = range(0, total, chunk_size)
    starts = progress(starts, desc=desc, unit="chunk", leave=False,
                      show=show_progress and len(starts) > 1)
    scores = []
    with torch.inference_mode():
        for start in starts:
            flat = torch.arange(start, min(start + chunk_size, total), device=device)
            batch, classes = build(flat)
            scores.append(_class_scores(model, batch, classes, output, preprocess))
    return torch.cat(scores)


def _class_scores(model, images, classes, output, preprocess):
    logits = checks.logits(model(images if preprocess is None else preprocess(images)),
                           len(images))
    checks.classes_in_range(classes, logits.shape[1])
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, classes.view(-1, 1)).squeeze(1)


def _classes(model, images, target, preprocess, chunk_size):
    """One class per image: the given ones, or the predictions on the intact images."""
    if target is not None:
        return checks.class_targets(target, images.shape[0], images.device, allow_none=True)
    with torch.inference_mode():
        return torch.cat([_logits(model, images[s:s + chunk_size], preprocess).argmax(dim=1)
                          for s in range(0, images.shape[0], chunk_size)])


def _logits(model, images, preprocess):
    return model(images if preprocess is None else preprocess(images))


def _baseline(baseline, images, blur_sigma):
    """The replacement images and the baseline's name."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != images.shape:
            raise ValueError(f"a baseline tensor must have the images' shape "
                             f"{tuple(images.shape)}; got {tuple(baseline.shape)}")
        return checks.finite(baseline.to(images), "the baseline"), "tensor"
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"a constant baseline must be finite; got {baseline!r}")
        return torch.full_like(images, float(baseline)), f"constant {float(baseline):g}"
    if baseline == "black":
        return torch.zeros_like(images), "black"
    if baseline == "blur":
        return gaussian_blur(images, blur_sigma), f"blur (sigma {blur_sigma:g} px)"
    raise ValueError(f"baseline must be one of {', '.join(map(repr, BASELINES))}, a number or "
                     f"a tensor; got {baseline!r}")


def _dilate(masks, radius):
    """Grow ``N x H x W`` boolean masks by a disc of ``radius`` pixels."""
    offsets = torch.arange(-radius, radius + 1, device=masks.device)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).float()
    grown = F.conv2d(masks[:, None].float(), disc[None, None], padding=radius)
    return grown[:, 0] > 0.5


def _undefined_where_empty(values, masks):
    empty = ~masks.flatten(1).any(dim=1)
    return values.masked_fill(empty, math.nan)


def _flat_maps(maps):
    """``N x H x W`` view of ``N x 1 x H x W`` or ``N x H x W`` maps."""
    if isinstance(maps, torch.Tensor) and maps.ndim == 4 and maps.shape[1] == 1:
        return maps[:, 0]
    return maps


def _check_maps(maps, size=None, count=None):
    """Validated maps as ``N x H x W`` floating tensors."""
    maps = checks.map_batch(maps, one_channel=True)[:, 0]
    if size is not None and tuple(maps.shape[-2:]) != tuple(size):
        raise ValueError(f"maps are {tuple(maps.shape[-2:])} but the images are {tuple(size)}; "
                         f"upsample the maps to the image size first")
    if count is not None and maps.shape[0] != count:
        raise ValueError(f"got {maps.shape[0]} maps for {count} images")
    return maps


def _check_maps_and_masks(maps, masks):
    """Validated ``N x H x W`` maps and boolean masks of the same shape."""
    maps = _check_maps(maps)
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor; got {type(masks).__name__}")
    flat = _flat_maps(masks)
    if flat.shape != maps.shape:
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not match maps of shape "
                         f"{tuple(maps.shape)} (N x 1 x H x W or N x H x W, same N, H, W)")
    if flat.dtype != torch.bool and not ((flat == 0) | (flat == 1)).all():
        raise ValueError("masks must be binary (0 or 1); threshold them first")
    return maps, flat.to(device=maps.device, dtype=torch.bool)
