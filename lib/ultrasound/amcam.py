"""The AM/Grad-CAM chapter's measurements: maps scored against the lesions for the true class,
references at each method's own resolution, the methods compared over training seeds on the
same images, and what the change image-specific AM makes follows.

Localisation (pointing game, IoU, energy in mask) is scored for the true class on the lesion
images each network classifies correctly, with the misclassified lesion images as a separate
group, so that map quality is not mixed with classification errors. Deletion and insertion
use every image, with all maps pooled to one common grid, so that a map made of a few large
cells and one of single pixels remove the same kind of thing.
"""
import pandas as pd
import torch

from ..kernels import bootstrap, metrics, paired, references, similarity
from . import compare

LOCALISATION = ("pointing_game", "top_k_iou", "energy_in_mask")
GROUPS = ("correct", "misclassified")


def grad_cam_grid(model, layer: str, size: int) -> int:
    """The side of a network's Grad-CAM map at input ``size`` (its layer's resolution)."""
    from ..kernels import cam

    probe = torch.zeros(1, 1, size, size, device=next(model.parameters()).device)
    return cam.grad_cam(model, probe, 0, layer=layer, upsample=False,
                        show_progress=False).shape[-1]


def reference_maps(images: torch.Tensor, grids: dict, *, seed: int = 0,
                   smooth_sigma: float = 4.0) -> dict:
    """Random maps at the resolution of each method (``{name: grid side or None}``, None for
    single pixels), upsampled as the method's own map is (bilinearly from cells), and a
    smoothed noise map; ``{"random (<name>)": maps}`` of the images' shape."""
    shape = (images.shape[0], 1, *images.shape[-2:])
    maps = {}
    for name, grid in grids.items():
        upsample = "nearest" if grid is None else "bilinear"
        maps[f"random ({name})"] = references.random_maps(
            shape, resolution=grid, seed=seed, upsample=upsample, device=images.device)
    maps["random (smooth)"] = references.random_maps(
        shape, resolution=None, seed=seed, smooth_sigma=smooth_sigma, device=images.device)
    return maps


def localisation(maps: dict, masks: torch.Tensor, groups: dict, *, seed: int = 0) -> dict:
    """``{group: {method: {metric: (N,) tensor}}}``: every method's localisation scores of
    every image, NaN outside the group (``{group: (N,) bool}``) and where a mask is empty."""
    scores = {method: metrics.localisation_scores(values, masks, seed=seed)
              for method, values in maps.items()}
    return {group: {method: {metric: torch.where(member.to(values.device), values,
                                                 torch.nan)
                             for metric, values in per_metric.items()}
                    for method, per_metric in scores.items()}
            for group, member in groups.items()}


def curve_aucs(curves: dict) -> dict:
    """``{method: {"deletion_auc", "insertion_auc": (N,)}}`` of :func:`pooled_curves`."""
    return {method: {f"{mode}_auc": by_mode[mode].auc for mode in by_mode}
            for method, by_mode in curves.items()}


def seed_means(per_seed: list, *, n_boot: int = 1000, level: float = 0.95,
               seed: int = 0) -> pd.DataFrame:
    """Each method's and metric's mean over the training seeds.

    ``per_seed``: one ``{method: {metric: (N,) tensor, NaN where not scored}}`` per seed, on
    the same N images. Per (method, metric): ``mean`` (of the seeds' means), ``seed min`` and
    ``seed max``, and the percentile bootstrap interval of the seed mean, every seed scored on
    the same resampled images (``ci_low``, ``ci_high``), and the images scored (``n``, the
    mean over seeds).
    """
    first = per_seed[0]
    count = next(iter(next(iter(first.values())).values())).shape[0]
    counts = bootstrap.bootstrap_counts(count, n_boot, seed)
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    rows = []
    for method in first:
        for metric in first[method]:
            values = torch.stack([s[method][metric].double().cpu() for s in per_seed])
            defined = ~values.isnan()
            means = torch.where(defined, values, 0.0).sum(1) / defined.sum(1)  # NaN: none
            low, high = _seed_mean_interval(values, counts, tails)
            scored = means[~means.isnan()]
            rows.append({"method": method, "metric": metric, "mean": means.nanmean().item(),
                         "seed min": scored.min().item() if len(scored) else float("nan"),
                         "seed max": scored.max().item() if len(scored) else float("nan"),
                         "ci_low": low, "ci_high": high,
                         "n": defined.sum(1).double().mean().item()})
    return pd.DataFrame(rows)


def _seed_mean_interval(values, counts, tails) -> list:
    """Percentile interval of the mean over seeds of per-seed image means (``values``: seeds x
    N, NaN where not scored), every seed on the same resamples ``counts`` (R x N)."""
    defined = ~values.isnan()
    filled = torch.where(defined, values, 0.0)
    replicates = (counts @ filled.T) / (counts @ defined.double().T)  # R x seeds
    return torch.nanquantile(replicates.nanmean(1), tails).tolist()


def seed_table(summary: pd.DataFrame, part: str = "interval", digits: int = 2,
               metrics_shown=None) -> pd.DataFrame:
    """A :func:`seed_means` summary as text cells, one row per method and one column per
    metric: ``part="interval"`` gives ``mean [low, high]``, ``"range"`` the seeds' range
    ``min–max``; ``n/a`` where no image was scored or the method has no such metric."""
    if metrics_shown is not None:
        summary = summary[summary["metric"].isin(list(metrics_shown))]

    def cell(row):
        if pd.isna(row["mean"]):
            return "n/a"
        if part == "range":
            return f"{row['seed min']:.{digits}f}–{row['seed max']:.{digits}f}"
        return f"{row['mean']:.{digits}f} [{row['ci_low']:.{digits}f}, " \
               f"{row['ci_high']:.{digits}f}]"
    table = summary.assign(cell=summary.apply(cell, axis=1)).pivot(
        index="method", columns="metric", values="cell")
    order = list(dict.fromkeys(summary["method"]))
    columns = list(dict.fromkeys(summary["metric"]))
    return table.loc[order, columns].fillna("n/a").rename(
        columns=compare.METRIC_LABELS).rename_axis(columns=None)


MIXED = "mixed"  # no verdict shared by a strict majority of the seeds


def verdicts_over_seeds(per_seed: list, pairs, metric: str, *, n_boot: int = 1000,
                        seed: int = 0, correction_count: int = 1) -> pd.DataFrame:
    """For each ``(a, b)`` of ``pairs``, at a Bonferroni-adjusted level ``0.95`` over
    ``correction_count`` comparisons: the mean over the seeds of the paired difference
    ``a - b`` in ``metric`` (over the seeds where it is defined) with its percentile bootstrap
    interval (the images resampled, every seed on the same resamples: ``CI low``,
    ``CI high``); the paired bootstrap verdict of every seed; the verdict a strict majority of
    the seeds share (:data:`MIXED` when none does), and how many seeds give it."""
    level = 1 - 0.05 / correction_count
    count = per_seed[0][pairs[0][0]][metric].shape[0]
    counts = bootstrap.bootstrap_counts(count, n_boot, seed)
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    rows = []
    for a, b in pairs:
        results = [paired.paired_difference(s[a][metric], s[b][metric], n_boot=n_boot,
                                            level=level, seed=seed) for s in per_seed]
        words = [r.verdict for r in results]
        common = max(sorted(set(words)), key=words.count)
        if 2 * words.count(common) <= len(words) and len(words) > 1:
            common = MIXED
        differences = torch.stack([(s[a][metric].double() - s[b][metric].double()).cpu()
                                   for s in per_seed])
        low, high = _seed_mean_interval(differences, counts, tails)
        rows.append({"method": a, "versus": b, "metric": metric,
                     "mean difference": torch.tensor([r.difference for r in results],
                                                     dtype=torch.float64).nanmean().item(),
                     "CI low": low, "CI high": high,
                     "verdicts": ", ".join(words), "verdict": common,
                     "seeds agreeing": words.count(common) if common != MIXED else 0})
    return pd.DataFrame(rows)


def verdict_text(row, n_seeds: int) -> str:
    """A :func:`verdicts_over_seeds` row as it reads in ``"A is {text} B"``: the majority
    verdict and how many seeds give it, or, with no majority, every seed's verdict."""
    if row["verdict"] == MIXED:  # "A is, seed by seed, higher than / lower than B"
        words = row["verdicts"].split(", ")
        return "seed by seed " + " / ".join(paired.phrase(word) for word in words)
    return f"{paired.phrase(row['verdict'])} ({row['seeds agreeing']} of {n_seeds} seeds)"


def am_change_factors(am_maps: dict, gradient: torch.Tensor, images: torch.Tensor):
    """How the change image-specific AM makes follows the gradient or the sigmoid's slope:
    per AM variant, the mean (over images) rank correlation of its change map with |gradient|
    and with x (1 - x), x the image. A pandas DataFrame."""
    slope = (images * (1 - images)).sum(dim=1, keepdim=True)
    size = gradient.abs().sum(dim=1, keepdim=True)
    rows = {}
    for name, maps in am_maps.items():
        rows[name] = {"with |gradient|": similarity.rank_correlation(
                          maps.flatten(1), size.flatten(1)).nanmean().item(),
                      "with x (1 − x)": similarity.rank_correlation(
                          maps.flatten(1), slope.flatten(1)).nanmean().item()}
    return pd.DataFrame(rows).T


def dark_ratio(maps: dict, images: torch.Tensor, level: float = 0.05) -> dict:
    """Each map's mean over near-black pixels (below ``level``) relative to its image mean."""
    dark = images < level
    return {method: compare.region_ratio(values, dark).nanmean().item()
            for method, values in maps.items()}


ADAM, PROJECTED = "Adam, sigmoid", "projected gradient ascent"


def am_variant_story(factors: pd.DataFrame) -> dict:
    """Sentences that say what :func:`am_change_factors` and :func:`dark_ratio` found, per
    network (the first index level of ``factors``, variants :data:`ADAM` and
    :data:`PROJECTED` in the second): ``{"follows": ..., "dark": ...}``, so that the prose
    states whatever a run measured."""
    nets = list(dict.fromkeys(factors.index.get_level_values(0)))
    grad, slope, dark = "with |gradient|", "with x (1 − x)", "near-black level"

    def value(net, variant, column):
        return float(factors.loc[(net, variant), column])

    slope_led = [n for n in nets if value(n, ADAM, slope) > value(n, ADAM, grad)]
    closer = [n for n in nets if value(n, PROJECTED, grad) > value(n, ADAM, grad)]
    lifted = [n for n in nets if value(n, PROJECTED, dark) > value(n, ADAM, dark)]

    def which(found):
        if len(found) == len(nets):
            return "both networks" if len(nets) == 2 else "every network"
        return " and ".join(found) if found else "neither network"

    follows = (f"Under Adam and the sigmoid the change follows the sigmoid's slope more than "
               f"the gradient for {which(slope_led)}; projected gradient ascent follows the "
               f"gradient more closely than the Adam variant for {which(closer)}.")
    if len(lifted) == len(nets):
        dark_text = ("Without Adam and the sigmoid the change reaches near-black pixels more "
                     "(a higher near-black level for " + which(lifted) + ", point estimates "
                     "on the same images): the low level there goes with the optimiser and "
                     "the parameterisation rather than with activation maximisation as such.")
    else:
        dark_text = ("The near-black level is higher without Adam and the sigmoid for "
                     + which(lifted) + " only, so this run does not tie the low level on "
                     "near-black pixels to the optimiser and the parameterisation.")
    return {"follows": follows, "dark": dark_text}


def pooled_curves(model, images, maps: dict, target, *, grid: int, steps: int,
                  baseline="blur", blur_sigma: float = 5.0, seed: int = 0,
                  chunk_size: int | None = None) -> dict:
    """``{method: {mode: lib.kernels.metrics.Curves}}`` of the maps pooled to ``grid``, for
    ``lib.ultrasound.plots.plot_curves``; the curves' ends are scored once for all maps."""
    pooled = {method: references.pool_to_grid(values, grid) for method, values in maps.items()}
    return metrics.curves_of_maps(model, images, pooled, target=target, baseline=baseline,
                                  steps=steps, blur_sigma=blur_sigma, seed=seed,
                                  chunk_size=chunk_size, show_progress=False)


def centre_bump(size: int, *, sd: float | None = None, device=None) -> torch.Tensor:
    """A Gaussian bump in the centre of a ``size`` x ``size`` image (standard deviation
    ``sd``, default a sixth of the side): a map that looks at no image."""
    middle = torch.arange(size, device=device) - (size - 1) / 2
    squared = middle[:, None] ** 2 + middle[None, :] ** 2
    return torch.exp(-squared / (2 * (sd or size / 6) ** 2))
