"""What a batch of Sobol maps of image regions says, in a few numbers per network.

Both functions take a ``lib.kernels.sobol_images.SobolMaps`` (indices of shape images x g x g)
and return a dict whose keys are the columns of the chapter's tables.
"""


def certainty(result) -> dict:
    """How sure the maps are: the largest total index of an image and the bootstrap
    half-widths (means over images and regions), the share of regions whose total index is
    above its half-width, and the sums of the indices per image (means over images)."""
    ST, ST_conf = result.ST.flatten(1), result.ST_conf.flatten(1)
    S1, S1_conf = result.S1.flatten(1), result.S1_conf.flatten(1)
    return {"largest ST per image (mean)": ST.max(dim=1).values.mean().item(),
            "ST interval half-width (mean)": ST_conf.mean().item(),
            "S1 interval half-width (mean)": S1_conf.mean().item(),
            "regions with ST > 0 (share)": (ST - ST_conf > 0).double().mean().item(),
            "sum of S1 per image (mean)": S1.sum(dim=1).mean().item(),
            "sum of ST per image (mean)": ST.sum(dim=1).mean().item()}


def interaction(result) -> dict:
    """How far the scores are from additive over the regions: the sum of the first-order
    indices per image (mean, lowest, highest) and the share of regions whose gap ST - S1
    exceeds the sum of the two half-widths."""
    first_order_sums = result.S1.flatten(1).sum(1)
    beyond = (result.ST - result.S1) > (result.ST_conf + result.S1_conf)
    return {"sum of S1 (mean over images)": first_order_sums.mean().item(),
            "sum of S1 (lowest image)": first_order_sums.min().item(),
            "sum of S1 (highest image)": first_order_sums.max().item(),
            "regions with ST − S1 beyond both intervals (share)":
                beyond.double().mean().item()}


def additivity(fit: dict, result) -> dict:
    """The additive surrogate's R^2 on fresh samples (``sobol_diagnostics.additive_fit``), mean
    and extremes over the images, beside the sum of the first-order indices it checks."""
    r2 = fit["r2"].detach().cpu()
    return {"R² on fresh samples (mean)": r2.mean().item(),
            "R² (lowest image)": r2.min().item(), "R² (highest image)": r2.max().item(),
            "sum of S1 (mean)": result.S1.flatten(1).sum(1).mean().item()}


# R^2 of the additive surrogate from which an image counts as close to additive.
ADDITIVE_R2 = 0.8


def additivity_sentence(r2_by_network: dict, output_name: str, grid: int,
                        threshold: float = ADDITIVE_R2) -> str:
    """What the surrogate's R^2 says, per network (``{title: (N,) R^2 per image}``): the share
    of images at or above ``threshold``, and a verdict that follows it."""
    parts, shares = [], []
    for title, r2 in r2_by_network.items():
        share = float((r2.detach().cpu() >= threshold).double().mean())
        shares.append(share)
        parts.append(f"{title} on {share:.0%} of the images")
    if min(shares) > 0.5:
        verdict = "close to additive on most images"
    elif max(shares) > 0.5:
        verdict = "close to additive on most images for one network only"
    else:
        verdict = "not close to additive on most images"
    return (f"For the {output_name} over a {grid} x {grid} grid the networks here are "
            f"{verdict} (R² ≥ {threshold:g}: {', '.join(parts)}).")


def precision_sentence(st_conf: dict, s1_conf: dict) -> str:
    """Which indices the run estimated more precisely, from the mean interval half-widths
    per network (``{title: half-width}``)."""
    tighter = [t for t in st_conf if st_conf[t] < s1_conf[t]]
    if len(tighter) == len(st_conf):
        return ("Total indices were estimated more precisely than first-order ones at the same "
                "cost, for every network.")
    if not tighter:
        return ("First-order indices were estimated at least as precisely as total ones here, "
                "for every network.")
    return ("Total indices were estimated more precisely than first-order ones for "
            + " and ".join(tighter) + " only.")


def scores_for_both_outputs(model, images, maps, masks, target, *, steps: int,
                            blur_sigma: float, seed: int, analysed: str = "logit") -> dict:
    """Localisation, and deletion and insertion of the score the maps analyse
    (``deletion_auc``, ``insertion_auc``) and of the probability
    (``deletion_auc_probability``, ``insertion_auc_probability``)."""
    from ..kernels import metrics

    scores = metrics.explanation_scores(model, images, maps, masks, target,
                                        baseline="blur", steps=steps, output=analysed,
                                        blur_sigma=blur_sigma, seed=seed,
                                        show_progress=False)
    if analysed != "probability":
        for mode in metrics.MODES:
            scores[f"{mode}_auc_probability"] = metrics.perturbation_curves(
                model, images, maps, mode=mode, target=target, baseline="blur",
                steps=steps, output="probability", blur_sigma=blur_sigma, seed=seed,
                show_progress=False).auc
    return scores


def split_localisation(scores: dict, correct: dict) -> tuple:
    """``(primary, misclassified)`` from ``scores`` (``{(arch, method): {metric: (N,)
    tensor}}``) and ``correct`` (``{arch: (N,) bool}``, the images the network classifies
    correctly): ``primary`` keeps every metric, its localisation NaN on the misclassified
    images; ``misclassified`` holds the localisation alone, NaN on the correct ones."""
    import torch

    from .amcam import LOCALISATION

    def where(values, member):
        return torch.where(member.to(values.device), values.double(), torch.nan)

    primary, misclassified = {}, {}
    for (arch, method), per_metric in scores.items():
        right = correct[arch]
        primary[arch, method] = {
            metric: where(values, right) if metric in LOCALISATION else values
            for metric, values in per_metric.items()}
        misclassified[arch, method] = {metric: where(values, ~right)
                                       for metric, values in per_metric.items()
                                       if metric in LOCALISATION}
    return primary, misclassified


def paired_against(scores: dict, first: str, second: str, contrasts, *, archs,
                   n_boot: int = 10000, seed: int = 0):
    """``first`` minus ``second`` per network and metric of ``contrasts`` (``(metric,
    label)``) on the same images, Bonferroni-adjusted over all rows: a DataFrame indexed by
    (network, label) with the difference, its interval and the verdict."""
    import pandas as pd

    from ..kernels import paired

    level = 1 - 0.05 / (len(contrasts) * len(archs))
    rows = {}
    for arch in archs:
        for metric, label in contrasts:
            result = paired.paired_difference(scores[arch, first][metric],
                                              scores[arch, second][metric],
                                              n_boot=n_boot, level=level, seed=seed)
            rows[arch, label] = {"difference": result.difference, "CI low": result.ci_low,
                                 "CI high": result.ci_high, "verdict": result.verdict}
    return pd.DataFrame(rows).T.infer_objects()
