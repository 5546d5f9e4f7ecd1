"""Checks that Sobol' maps of image regions support what is read into them.

- *Convergence in N*: the first ``n`` base samples of a scrambled Sobol' sequence are the
  design of ``n`` base samples with the same seed, so the model outputs of one design of
  ``N_max`` base samples (``sobol_images.design_outputs``) give the maps of every smaller power of two for free
  (:func:`maps_by_base_samples`), and :func:`convergence_table` says how far each is from
  the largest.
- *Additivity*: the sum of the first-order indices estimates the share of the score's
  variance that a sum of one-region functions explains, but at small N it is the sum of many
  noisy estimates. :func:`additive_fit` measures that share directly: it fits the best sum of
  one-region functions (a cubic polynomial in each region's ``u``) to the score at random
  region values, and reports its R^2 on fresh random values it was not fitted to.
"""
import torch

from . import checks, sobol_images
from .blocks import forward_block


def maps_by_base_samples(outputs: torch.Tensor, grid: int, sizes, *, num_resamples: int = 100,
                         conf_level: float = 0.95, seed=None) -> dict:
    """``{n: maps}`` for every ``n`` in ``sizes`` from the outputs ``(N_max (g^2 + 2), B)`` of
    one ``sobol_images.mask_design(grid, N_max, seed)``: the maps of its first ``n`` base
    samples (``sobol_images.maps_from_outputs``), each ``n`` a power of two <= ``N_max``."""
    rows = sobol_images.forward_passes(grid, 1)
    largest = outputs.shape[0] // rows
    maps = {}
    for n in sizes:
        n = sobol_images.check_base_samples(n)
        if n > largest:
            raise ValueError(f"the outputs hold {largest} base samples; {n} is more")
        maps[n] = sobol_images.maps_from_outputs(outputs[:n * rows], grid,
                                                 num_resamples=num_resamples,
                                                 conf_level=conf_level, seed=seed)
    return maps


def convergence_table(maps: dict, key: str = "ST"):
    """Per base-sample count: the mean absolute difference of index ``key`` from the largest
    count's, over regions and images, the mean confidence half-width, and the mean rank
    correlation of each image's map with its map at the largest count. A pandas DataFrame."""
    import pandas as pd

    from .similarity import rank_correlation

    largest = max(maps)
    reference = maps[largest][key]
    rows = []
    for n in sorted(maps):
        values = maps[n][key]
        rows.append({"N": n, "mean |difference| from the largest N":
                     (values - reference).abs().mean().item(),
                     "mean CI half-width": maps[n][f"{key}_conf"].mean().item(),
                     "rank correlation with the largest N":
                     rank_correlation(values.flatten(1), reference.flatten(1)).nanmean().item()})
    return pd.DataFrame(rows).set_index("N")


def _features(u: torch.Tensor, degree: int) -> torch.Tensor:
    """``[1, u_i, u_i^2, .., u_i^degree for every region i]``: (samples, 1 + degree D)."""
    centred = u.flatten(1) - 0.5  # keeps the powers well conditioned
    powers = [centred ** k for k in range(1, degree + 1)]
    return torch.cat([torch.ones_like(centred[:, :1]), *powers], dim=1)


def additive_fit(model, images, target=None, *, grid: int, n_fit: int = 256,
                 n_test: int = 256, degree: int = 3, baseline="blur",
                 blur_sigma: float = sobol_images.DEFAULT_BLUR_SIGMA, output: str = "logit",
                 seed: int = 0, chunk_size: int | None = None,
                 show_progress: bool = True) -> dict:
    """R^2 on fresh region values of the best additive surrogate of each image's score.

    Region values ``u`` are drawn uniformly and independently (as in the Sobol' design);
    ``n_fit`` of them fit, per image, ``f(u) ~ a + sum_i p_i(u_i)`` with ``p_i`` a polynomial of
    ``degree`` (least squares), and the ``n_test`` others score it:
    ``R^2 = 1 - mean (f - surrogate)^2 / var f``. With enough samples this approaches the
    sum of the first-order indices from below (the polynomials can only approximate the true
    one-region effects). Costs ``n_fit + n_test`` forwards per image.

    Returns ``{"r2": (B,), "r2_fit": (B,), "target": (B,)}`` tensors on the images' device.
    """
    checks.model_and_images(model, images, module_only=False)
    grid = sobol_images.check_grid(grid, *images.shape[-2:])
    features_per_image = 1 + degree * grid * grid
    n_fit = checks.integer("n_fit", n_fit, features_per_image + 1)
    n_test = checks.integer("n_test", n_test, 2)
    degree = checks.positive_int("degree", degree)
    chunk_size = forward_block(chunk_size, images.device, sobol_images.DEFAULT_CHUNK_SIZE)
    fill = sobol_images.baseline_images(images, baseline, blur_sigma)
    classes = sobol_images.classes_to_explain(model, images, target, chunk_size)
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand((n_fit + n_test, grid, grid), generator=generator).to(images.device)
    scores = sobol_images.evaluate_masks(model, images, fill, u, classes, output=output,
                                         chunk_size=chunk_size, show_progress=show_progress)
    scores = checks.finite(scores.double(), f"the model's {output}", "image", axis=1)
    X = _features(u.double(), degree)
    fit, test = slice(0, n_fit), slice(n_fit, None)
    coefficients = torch.linalg.lstsq(X[fit], scores[fit]).solution  # (features, B)
    residual = scores - X @ coefficients

    def r2(rows):
        variance = scores[rows].var(dim=0, correction=0)
        return 1 - residual[rows].pow(2).mean(dim=0) / torch.where(variance > 0, variance, 1.0)

    return {"r2": r2(test), "r2_fit": r2(fit), "target": classes}


def predicted_r2_from_indices(S1: torch.Tensor) -> torch.Tensor:
    """The sum of the first-order indices of each image: what the additive fit estimates."""
    return S1.flatten(1).sum(dim=1)
