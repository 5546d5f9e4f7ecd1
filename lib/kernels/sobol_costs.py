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


def seconds_per_forward(model, image, *, grid: int, count: int, device, output="logit",
                        blur_sigma: float = 4.0, seed: int = 0) -> float:
    """Best wall time of one forward pass of ``model``, from blocks of ``count`` images of
    ``image`` (1 x C x H x W) perturbed by random masks over a ``grid`` x ``grid`` grid, on
    ``device`` (a copy of the model is moved there)."""
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
    """Wall time of the estimator for ``images`` maps of one (grid, N) design."""
    outputs = torch.rand((sobol_images.forward_passes(grid, N), images), device=device)
    return best_time(lambda: sobol_images.maps_from_outputs(
        outputs, grid, num_resamples=num_resamples, seed=seed), 1, warmup=False,
        device=outputs.device).wall


def cost_table(per_forward: dict, sweep, images: int, *, num_resamples: int, seed: int = 0,
               device=None) -> pd.DataFrame:
    """Predicted seconds per image for each (g, N) of ``sweep`` and each measured setting.

    ``per_forward`` maps a column label (e.g. ``"resnet18 CPU"``) to the seconds of one
    forward pass (:func:`seconds_per_forward`); a label whose value is None shows "not
    measured". The estimator's measured time, shared by all images, is added per image.
    """
    index = pd.MultiIndex.from_tuples(list(sweep), names=["g", "N"])
    table = pd.DataFrame(index=index)
    table["regions"] = [g * g for g, _ in index]
    table["forwards per image"] = [sobol_images.forward_passes(g, n) for g, n in index]
    estimator = [estimator_seconds(g, n, images, num_resamples=num_resamples, seed=seed,
                                   device=device) / images for g, n in index]
    for label, seconds in per_forward.items():
        column = f"{label} (s per image)"
        if seconds is None:
            table[column] = "not measured"
        else:
            table[column] = (table["forwards per image"] * seconds + estimator).round(2)
    return table
