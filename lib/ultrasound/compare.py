"""One set of explanation maps per image, for comparing methods on the same images.

For a batch of images and the class each one is explained for (by default the class the
network predicts), :func:`explanation_maps` computes, with the book's kernels:

- ``grad_cam``: Grad-CAM at a convolutional layer (:func:`lib.kernels.cam.grad_cam`), upsampled
  bilinearly to the image;
- ``am_change``: the size of the change that image-specific activation maximisation makes
  (:func:`lib.kernels.am.maximize_from`, ``AMResult.change_map``);
- ``local_sensitivity``: the finite-difference response to moving ``p x p`` patches
  (:func:`lib.kernels.local.fd_sensitivity`), one value per patch, upsampled bilinearly like Grad-CAM
  (a blocky map would put its maximum at the corner of a patch);
- ``gradient``: the autograd gradient of the class logit (:func:`lib.kernels.local.gradient`);
- ``random``: uniform noise, the reference any method should beat.

Every map is a magnitude: ``N x 1 x H x W``, non-negative, larger meaning more important. The
signed maps (finite differences, gradient) enter by their absolute value, since a pixel that
lowers the score when brightened matters as much as one that raises it.

:func:`rank_correlation` and :func:`agreement` measure how much two methods agree on the same
image, :func:`region_ratio` how much a map favours a region (e.g. the black pixels);
:func:`pick_examples`, :func:`metric_table` (with :data:`METRIC_LABELS` for its columns) and
:func:`glue_key` serve the figures, tables and glued numbers.
"""
import math
import re
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from ..hardware import synchronize
from ..kernels import am, cam, checks, hooks, local, metrics
from ..kernels.similarity import rank_correlation
from ..progress import progress

METHODS = ("grad_cam", "am_change", "local_sensitivity", "gradient", "random")
TITLES = {"grad_cam": "Grad-CAM", "am_change": "AM change", "local_sensitivity":
          "local sensitivity", "gradient": "gradient", "random": "random"}


@dataclass(frozen=True)
class MapSettings:
    """The settings of every method of :func:`explanation_maps`.

    ``am_*``: image-specific activation maximisation of the class logit (no transformations):
    the parameterisation and optimiser (``lib.kernels.am``: by default the sigmoid of free
    pixel parameters under Adam; ``"clamped"`` with ``"gradient"`` is projected gradient
    ascent), steps, learning rate, and the weights of the L2 and total-variation penalties on
    the change. Both penalties are means over pixels, so a
    weight that holds the change back is of the order of the number of pixels times the
    gradient's size per pixel: about 1000 for 96 x 96 images. ``fd_delta``: the
    finite-difference step (a fraction of the intensity range); ``fd_patch``: side of the
    perturbed patches in pixels (must divide the image side); forward differences of the logit.
    ``batch_size``: images per call of a kernel. ``fd_chunk_size``: perturbed patches per pass
    of the local-sensitivity engine, which recomputes only what a patch changes and so runs
    faster on large passes than the other kernels do.
    """

    am_steps: int = 16
    am_lr: float = 0.05
    am_param: str = "pixel"
    am_optimizer: str = "adam"
    am_l2: float = 1000.0
    am_tv: float = 0.0
    fd_delta: float = 0.1
    fd_patch: int = 16
    batch_size: int = 16
    fd_chunk_size: int = 128

    def __post_init__(self):
        checks.choice("am_param", self.am_param, am.am_images.PARAMETERISATIONS)
        checks.choice("am_optimizer", self.am_optimizer, am.OPTIMISERS)
        for name in ("am_steps", "fd_patch", "batch_size", "fd_chunk_size"):
            checks.positive_int(name, getattr(self, name))
        for name, positive in (("am_lr", True), ("am_l2", False), ("am_tv", False),
                               ("fd_delta", True)):
            checks.finite_number(name, getattr(self, name), positive=positive)


@dataclass
class MapSet:
    """Maps of a batch: ``maps`` (method -> ``N x 1 x H x W``, non-negative), the classes
    explained (``target``, length ``N``), each method's wall time in seconds, and, when the
    AM change was computed, how much the ascent raised each image's class logit
    (``am_logit_gain``, length ``N``)."""

    maps: dict
    target: torch.Tensor
    seconds: dict = field(default_factory=dict)
    am_logit_gain: torch.Tensor | None = None


def explanation_maps(model, images, target=None, *, layer, methods=METHODS[:4],
                     settings=MapSettings(), seed=0, show_progress=True):
    """Every method's map of each image, for the same class.

    Args:
        model: a classifier in eval mode on the device of ``images``, taking them as they are
            (``N x C x H x W`` in [0, 1]) and returning logits.
        images: the images, on the model's device.
        target: the class explained, ``None`` for each image's predicted class, an int, or one
            int per image.
        layer: the Grad-CAM layer (a dotted module name, see :mod:`lib.cam`).
        methods: any of ``METHODS``.
        settings: a :class:`MapSettings`.
        seed: seeds the random reference map.

    Returns:
        A :class:`MapSet`.
    """
    methods = _check_methods(methods)
    if not isinstance(settings, MapSettings):
        raise TypeError(f"settings must be a lib.ultrasound.compare.MapSettings; got "
                        f"{type(settings).__name__}")
    hooks.get_layer(model, layer)  # an unknown layer fails before any work, listing valid ones
    classes = explained_classes(model, images, target, settings.batch_size)
    map_set = MapSet({}, classes)
    compute = {"grad_cam": lambda: cam.grad_cam(model, images, classes, layer=layer,
                                                batch_size=settings.batch_size,
                                                show_progress=show_progress),
               "am_change": lambda: _am_change(model, images, classes, settings, show_progress,
                                               map_set),
               "local_sensitivity": lambda: _local_sensitivity(model, images, classes, settings,
                                                               show_progress),
               "gradient": lambda: _gradient(model, images, classes, settings, show_progress),
               "random": lambda: _random_maps(images, seed)}
    for method in methods:
        start = time.perf_counter()
        map_set.maps[method] = compute[method]().detach()
        synchronize(images.device)
        map_set.seconds[method] = time.perf_counter() - start
    return map_set


def explained_classes(model, images, target, batch_size):
    """``target`` checked against the model's classes, or each image's predicted class: a
    length-``N`` long tensor on the device of ``images``."""
    checks.model_and_images(model, images)
    with torch.no_grad():
        logits = torch.cat([model(images[s:s + batch_size])
                            for s in range(0, images.shape[0], batch_size)])
    return checks.classes_or_predictions(target, logits)


def _am_change(model, images, classes, settings, show_progress, map_set):
    """``|change|`` of image-specific AM towards each image's class, in chunks of images; the
    logit gains go to ``map_set.am_logit_gain``."""
    gains = []

    def one_chunk(rows):
        targets = [am.class_logit(int(c)) for c in classes[rows].tolist()]
        result = am.maximize_from(model, images[rows], targets, param=settings.am_param,
                                  optimizer=settings.am_optimizer, l2=settings.am_l2,
                                  tv=settings.am_tv, steps=settings.am_steps,
                                  lr=settings.am_lr, show_progress=False)
        gains.append(result.final_values - result.start_values)
        return result.change_map()
    change = _in_chunks(one_chunk, images.shape[0], settings.batch_size, show_progress,
                        "AM change")
    map_set.am_logit_gain = torch.cat(gains).detach()
    return change


def _local_sensitivity(model, images, classes, settings, show_progress):
    """``|finite difference|`` per patch, upsampled bilinearly to the image."""
    patch = settings.fd_patch

    def one_chunk(rows):
        sensitivity = local.fd_sensitivity(model, images[rows], classes[rows],
                                           settings.fd_delta, patch=patch, channels="all",
                                           chunk_size=settings.fd_chunk_size,
                                           show_progress=False)
        return sensitivity[..., ::patch, ::patch].abs()
    per_patch = _in_chunks(one_chunk, images.shape[0], settings.batch_size, show_progress,
                           "local sensitivity")
    if patch == 1:
        return per_patch
    return F.interpolate(per_patch, size=images.shape[-2:], mode="bilinear",
                         align_corners=False)


def _gradient(model, images, classes, settings, show_progress):
    """``|d logit / d pixel|``, summed over channels."""
    def one_chunk(rows):
        return local.gradient(model, images[rows], classes[rows], channels="all").abs()
    return _in_chunks(one_chunk, images.shape[0], settings.batch_size, show_progress,
                      "gradient")


def _random_maps(images, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((images.shape[0], 1, *images.shape[-2:]), generator=generator)
    return noise.to(device=images.device, dtype=images.dtype)


def _in_chunks(compute, count, batch_size, show_progress, desc):
    starts = range(0, count, batch_size)
    starts = progress(starts, desc=desc, unit="batch", leave=False,
                      show=show_progress and len(starts) > 1)
    return torch.cat([compute(slice(s, s + batch_size)) for s in starts])


def agreement(maps, *, digits=2):
    """Mean rank correlation over images between every pair of methods: a square DataFrame.

    ``maps``: method -> ``N x 1 x H x W`` (e.g. ``MapSet.maps``). Images where a map is
    constant are left out of that pair's mean.
    """
    names = list(maps)
    table = pd.DataFrame(index=[TITLES.get(n, n) for n in names],
                         columns=[TITLES.get(n, n) for n in names], dtype=float)
    for i, first in enumerate(names):
        for second in names[i:]:
            value = rank_correlation(maps[first], maps[second]).nanmean().item()
            table.iloc[i, names.index(second)] = table.iloc[names.index(second), i] = value
    return table.round(digits)


def region_ratio(maps, region):
    """Per image, the map's mean inside ``region`` over its mean on the whole image.

    1 for a map that ignores the region (e.g. uniform noise), 0 for one that is zero there,
    above 1 for one that favours it; NaN where the region is empty or the map all zero.
    ``maps`` and ``region`` (boolean) are ``N x 1 x H x W``; e.g. ``region = images < 0.05``
    asks how much a map looks at the near-black pixels.
    """
    if maps.shape != region.shape:
        raise ValueError(f"maps and region must have the same shape; got {tuple(maps.shape)} "
                         f"and {tuple(region.shape)}")
    flat, inside = maps.flatten(1).double(), region.flatten(1).bool()
    count = inside.sum(dim=1)
    mean_inside = (flat * inside).sum(dim=1) / count.clamp_min(1)
    ratio = mean_inside / flat.mean(dim=1)
    return torch.where((count > 0) & (flat.mean(dim=1) > 0), ratio,
                       torch.full_like(ratio, math.nan))


def pick_examples(labels, predicted, confidence, *, count, classes=(1, 2)):
    """Indices of example images: ``{"correct": ..., "wrong": ...}``.

    Among the images whose true class is in ``classes`` (by default the two with lesion
    masks), the ``count`` most confident correct predictions and the ``count`` most confident
    wrong ones (fewer when there are not as many). Each is a list of ints.
    """
    checks.positive_int("count", count)
    if not labels.shape == predicted.shape == confidence.shape or labels.ndim != 1:
        raise ValueError("labels, predicted and confidence must be 1-D tensors of equal length")
    eligible = torch.isin(labels, torch.as_tensor(list(classes), device=labels.device))
    correct = predicted == labels
    picked = {}
    for outcome, chosen in (("correct", correct), ("wrong", ~correct)):
        indices = torch.nonzero(eligible & chosen).flatten()
        order = confidence[indices].argsort(descending=True, stable=True)
        picked[outcome] = indices[order][:count].tolist()
    return picked


# Column headings for the metrics of lib.metrics in the chapters' tables.
METRIC_LABELS = {"pointing_game": "pointing game", "top_k_iou": "IoU",
                 "energy_in_mask": "energy in mask", "deletion_auc": "deletion AUC ↓",
                 "insertion_auc": "insertion AUC ↑"}


def glue_key(*parts) -> str:
    """A glue name from table labels: ``("vgg16", "Grad-CAM", "top_k_iou")`` gives
    ``"vgg16_Grad_CAM_top_k_iou"``; every run of characters other than letters and digits
    becomes one underscore (glue names allow no spaces, hyphens or brackets)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", "_".join(map(str, parts))).strip("_")


def metric_table(summary, *, index=("network", "method"), digits=2):
    """A summary of :func:`lib.kernels.metrics.summarise` as text cells ``mean [low, high]``,
    one row per ``index`` group and one column per metric (in order of appearance)."""
    index = list(index)
    missing = [c for c in [*index, "metric", "mean", "ci_low", "ci_high"]
               if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks column(s) {', '.join(missing)}; pass the DataFrame "
                         f"of lib.kernels.metrics.summarise with names={tuple(index)}")

    def cell(row):
        if math.isnan(row["mean"]):
            return "n/a"
        return (f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, "
                f"{row['ci_high']:.{digits}f}]")

    cells = summary.assign(cell=summary.apply(cell, axis=1))
    table = cells.pivot(index=index, columns="metric", values="cell")
    order = list(dict.fromkeys(summary["metric"]))
    rows = list(dict.fromkeys(map(tuple, summary[index].itertuples(index=False))))
    return table.loc[rows, order].rename_axis(columns=None)


def _check_methods(methods):
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: {', '.join(METHODS)}")
    return methods


def score_maps(model, images, maps, masks, target, *, baseline="blur", steps=20,
               blur_sigma=5.0, k="mask", seed=0, chunk_size=None,
               show_progress=True):
    """Every metric of :mod:`lib.metrics` for every method's maps, keeping the curves.

    The same numbers as :func:`lib.kernels.metrics.explanation_scores` (same options) for each entry
    of ``maps``, plus the deletion and insertion curves behind the AUCs, for plotting.

    Returns:
        ``(scores, curves)``: ``scores[method]`` is ``{metric: length-N tensor}`` (the input
        of :func:`lib.kernels.metrics.summarise`), ``curves[method][mode]`` a
        :class:`lib.kernels.metrics.Curves`.
    """
    curves = metrics.curves_of_maps(model, images, maps, target=target, baseline=baseline,
                                    steps=steps, blur_sigma=blur_sigma, seed=seed,
                                    chunk_size=chunk_size, show_progress=show_progress)
    scores = {method: {**metrics.localisation_scores(values, masks, k=k, seed=seed),
                       **{f"{mode}_auc": curves[method][mode].auc for mode in metrics.MODES}}
              for method, values in maps.items()}
    return scores, curves
