"""Scores of cross-validated binary classifiers and their uncertainty.

Accuracy, balanced accuracy and ROC AUC of many models at once, each on its own rows; the
Nadeau and Bengio (2003) corrected resampled variance, which accounts for the overlap of the
training sets of the folds, for intervals and paired tests.
"""
import math

import numpy as np
import pandas as pd
import torch
from scipy import stats

METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "roc_auc": "ROC AUC"}


def _masked_roc_auc(scores, y, mask):
    """ROC AUC per model over its masked rows (Mann-Whitney U, ties counted as one half)."""
    s = torch.where(mask, scores.double(), math.inf)  # unmasked rows rank after every real one
    ordered = s.sort(dim=-1).values
    low = torch.searchsorted(ordered, s, right=False)
    high = torch.searchsorted(ordered, s, right=True)
    rank = (low + high + 1).double() / 2
    positive, negative = mask & (y == 1), mask & (y == 0)
    n_pos, n_neg = positive.sum(-1).double(), negative.sum(-1).double()
    u = (rank * positive).sum(-1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def binary_metrics(logits, y, mask) -> dict:
    """Accuracy, balanced accuracy and ROC AUC of every model on its masked rows.

    ``logits`` (..., rows): scores whose sign is the predicted class (p > 0.5); ``y`` (rows,)
    labels 0/1; ``mask`` (..., rows) the rows to score. Returns float64 tensors (...,).
    """
    mask = mask.expand_as(logits)
    positive, negative = mask & (y == 1), mask & (y == 0)
    if (positive.sum(-1) == 0).any() or (negative.sum(-1) == 0).any():
        raise ValueError("every model's scored rows must hold both classes")
    if not torch.isfinite(logits[mask]).all():
        raise ValueError("logits must be finite on the scored rows")
    correct = (logits > 0) == (y == 1)
    rate = lambda rows: (correct & rows).sum(-1).double() / rows.sum(-1)  # noqa: E731
    return {"accuracy": rate(mask),
            "balanced_accuracy": (rate(positive) + rate(negative)) / 2,
            "roc_auc": _masked_roc_auc(logits, y, mask)}


def corrected_interval(values, ratio: float, conf_level: float = 0.95) -> tuple:
    """Mean and CI of a CV metric with the Nadeau-Bengio corrected variance.

    The J fold values share training rows, so their plain variance understates the
    uncertainty; the corrected variance of the mean is (1/J + n_test/n_train) s^2, and the
    interval uses Student's t with J - 1 degrees of freedom.
    """
    values = np.asarray(values, dtype=float)
    J = values.size
    if J < 2:
        raise ValueError("need at least two fold values for an interval")
    quantile = stats.t.ppf(0.5 + conf_level / 2, J - 1)
    half = quantile * math.sqrt((1 / J + ratio) * values.var(ddof=1))
    mean = values.mean()
    return mean, mean - half, mean + half


def corrected_ttest(a, b, ratio: float, alternative: str = "greater") -> tuple:
    """Nadeau-Bengio corrected resampled t-test of paired fold values ``a`` vs ``b``.

    t = mean(d) / sqrt((1/J + n_test/n_train) var(d)) with d = a - b over the J folds, compared
    with Student's t, J - 1 degrees of freedom. ``alternative``: ``"greater"`` (H1: a > b),
    ``"less"`` or ``"two-sided"``. Returns (t, p). Identical fold values (every d = 0) are
    no evidence of a difference: t = 0, p = 1.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got "
                         f"{alternative!r}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a and b must be paired 1-D fold values (at least two), got "
                         f"{d.shape}")
    J, mean, var = d.size, d.mean(), d.var(ddof=1)
    if var == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / math.sqrt((1 / J + ratio) * var)
    if t == 0 and mean == 0:
        return 0.0, 1.0
    dist = stats.t(J - 1)
    p = {"greater": dist.sf(t), "less": dist.cdf(t), "two-sided": 2 * dist.sf(abs(t))}
    return float(t), float(p[alternative])


def summarize(metrics: pd.DataFrame, ratio: float, by=(), conf_level: float = 0.95):
    """Mean and corrected CI of every metric in ``metrics`` (one row per fold), per group."""
    def one(group):
        out = {}
        for name in METRICS:
            mean, low, high = corrected_interval(group[name], ratio, conf_level)
            out[(name, "mean")], out[(name, "low")], out[(name, "high")] = mean, low, high
        return pd.Series(out)
    if not by:
        return one(metrics).to_frame().T
    return metrics.groupby(list(by), sort=False)[list(METRICS)].apply(one)


def interval_table(summary: pd.DataFrame, names=METRICS, digits: int = 3) -> pd.DataFrame:
    """Text cells "mean [low, high]" rounded to ``digits``, one column per name in ``names``.

    ``summary`` has columns ``(name, "mean" | "low" | "high")``, as ``summarize`` and
    ``indices_over_models`` return.
    """
    def cell(row, name):
        mean, low, high = (row[(name, part)] for part in ("mean", "low", "high"))
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return pd.DataFrame({name: [cell(row, name) for _, row in summary.iterrows()]
                         for name in names}, index=summary.index)
