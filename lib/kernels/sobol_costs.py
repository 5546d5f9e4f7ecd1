"""What Sobol maps of image regions cost: forward passes, measured per forward and predicted.

A map over a g x g grid with N base samples costs N (g^2 + 2) forward passes per image
(``sobol_images.forward_passes``) plus the estimator, which works on all regions and images at
once. The time of one forward pass is measured on blocks of perturbed images, so a table can
predict the time of any (g, N) on this machine without running it.
"""
import copy

import pandas as pd
import torch

from ..timing import best_time
from . import sobol_images

COLUMNS = ("regions", "forwards per image")
UNIT = "(s per image)"


def seconds_per_forward(model, image, *, grid: int, count: int, device, output="logit",
                        blur_sigma: float = 4.0, seed: int = 0) -> float:
    """Best wall time of one forward pass of ``model``, from blocks of ``count`` images of
    ``image`` (1 x C x H x W) perturbed by random masks over a ``grid`` x ``grid`` grid, on
    ``device`` (a copy of the model is moved there). One untimed block warms up, the best of
    the next two counts."""
    dev = torch.device(device)
    model = copy.deepcopy(model).to(dev)
    x = image.to(dev)
    fill = sobol_images.baseline_images(x, "blur", blur_sigma)
    masks = torch.rand((count, grid, grid), generator=torch.Generator().manual_seed(seed))
    target = torch.zeros(1, dtype=torch.long, device=dev)
    timed = best_time(lambda: sobol_images.evaluate_masks(
        model, x, fill, masks.to(dev), target, output=output, chunk_size=count,
        show_progress=False), 2, device=dev)
    return timed.wall / count


def estimator_seconds(grid: int, N: int, images: int, *, num_resamples: int, seed: int = 0,
                      device=None) -> float:
    """Wall time of the estimator for ``images`` maps of one (grid, N) design, from random
    outputs drawn with torch's global generator."""
    outputs = torch.rand((sobol_images.forward_passes(grid, N), images), device=device)
    return best_time(lambda: sobol_images.maps_from_outputs(
        outputs, grid, num_resamples=num_resamples, seed=seed), 1, warmup=False,
        device=outputs.device).wall


def predicted_seconds(grid: int, N: int, images: int, per_forward: float,
                      estimator: float) -> float:
    """Predicted wall time of the maps of ``images`` images: every image's N (g^2 + 2)
    forward passes at ``per_forward`` seconds each, plus the ``estimator`` seconds
    (:func:`estimator_seconds`) shared by all of them."""
    return images * sobol_images.forward_passes(grid, N) * per_forward + estimator


def cost_table(per_forward: dict, sweep, images: int, *, num_resamples: int, seed: int = 0,
               device=None, estimator: dict | None = None,
               missing: str = "not measured") -> pd.DataFrame:
    """Predicted seconds per image for each (g, N) of ``sweep`` and each measured setting.

    ``per_forward`` maps a column label (e.g. ``"resnet18 CPU"``) to the seconds of one
    forward pass (:func:`seconds_per_forward`); a label whose value is None shows ``missing``
    instead of times. The estimator's time for ``images`` images, shared by all of them, is
    added per image: measured once per (g, N) by :func:`estimator_seconds`, or taken from
    ``estimator`` (``{(g, N): seconds}``) when given. Index (g, N); columns ``COLUMNS``, then
    one ``"<label> (s per image)"`` per setting, rounded to 0.01 s.
    """
    index = pd.MultiIndex.from_tuples(list(sweep), names=["g", "N"])
    table = pd.DataFrame(index=index)
    table["regions"] = [g * g for g, _ in index]
    table["forwards per image"] = [sobol_images.forward_passes(g, n) for g, n in index]
    if estimator is None:
        estimator = {(g, n): estimator_seconds(g, n, images, num_resamples=num_resamples,
                                               seed=seed, device=device) for g, n in index}
    shared = [estimator[g, n] / images for g, n in index]
    for label, seconds in per_forward.items():
        column = f"{label} {UNIT}"
        if seconds is None:
            table[column] = missing
        else:
            table[column] = (table["forwards per image"] * seconds + shared).round(2)
    return table
