"""Scores of cross-validated binary classifiers and their uncertainty.

Accuracy, balanced accuracy and ROC AUC of many models at once, each on its own rows; the
Nadeau and Bengio (2003) corrected resampled variance, which accounts for the overlap of the
training sets of the folds, behind every interval and test here: intervals, paired t-tests,
one-sided non-inferiority tests against a margin, two one-sided tests (TOST) of equivalence,
and the smallest difference a design can detect.
"""
import math
import numbers
from dataclasses import dataclass

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


def _fold_values(values, what: str = "values") -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"{what} must be 1-D fold values (at least two), got shape "
                         f"{values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite; got {values[~np.isfinite(values)][:5]}")
    return values


def _check_ratio(ratio) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not ratio >= 0:
        raise ValueError(f"ratio (n_test / n_train) must be a number >= 0; got {ratio!r}")
    return float(ratio)


def check_level(name: str, value) -> float:
    """A probability strictly between 0 and 1 (a level alpha, a power, a confidence)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
    return float(value)


def check_margin(name: str, value) -> float:
    """A margin on the scale of a score in [0, 1]: strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1) on the scale of the score "
                         f"(0.05 = 5 points of accuracy); got {value!r}")
    return float(value)


def corrected_standard_error(values, ratio: float) -> float:
    """Nadeau-Bengio standard error of the mean of J fold values (or fold differences).

    The folds of repeated cross-validation share training rows, so the plain variance of
    their scores understates the uncertainty; the corrected variance of the mean is
    (1/J + n_test/n_train) s^2, s^2 the sample variance (ddof 1) of the J values. Every
    interval and test of this module uses it, with Student's t on J - 1 degrees of freedom.
    """
    values = _fold_values(values)
    return math.sqrt((1 / values.size + _check_ratio(ratio)) * values.var(ddof=1))


def corrected_interval(values, ratio: float, conf_level: float = 0.95) -> tuple:
    """Mean and two-sided CI of a CV metric: mean -/+ t_{(1+c)/2, J-1} times the corrected
    standard error (``corrected_standard_error``). Returns (mean, low, high)."""
    values = _fold_values(values)
    conf_level = check_level("conf_level", conf_level)
    quantile = stats.t.ppf(0.5 + conf_level / 2, values.size - 1)
    half = quantile * corrected_standard_error(values, ratio)
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
    d = _paired_differences(a, b)
    mean, se = d.mean(), corrected_standard_error(d, ratio)
    if se == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    if t == 0 and mean == 0:
        return 0.0, 1.0
    dist = stats.t(d.size - 1)
    p = {"greater": dist.sf(t), "less": dist.cdf(t), "two-sided": 2 * dist.sf(abs(t))}
    return float(t), float(p[alternative])


def _paired_differences(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired fold values of the same shape, got "
                         f"{a.shape} and {b.shape}")
    return _fold_values(a - b, "the paired differences a - b")


def _t_probabilities(distance: float, se: float, dist) -> float:
    """P(T > distance / se) for Student's ``dist``; a zero standard error decides outright."""
    if se > 0:
        return float(dist.sf(distance / se))
    return 0.0 if distance > 0 else 1.0


@dataclass(frozen=True)
class NoninferiorityTest:
    """One-sided test that a candidate loses less than ``margin`` against a reference.

    ``loss``: mean over the folds of reference - candidate (positive: the candidate scores
    lower); ``se``: its corrected standard error; ``bound``: the one-sided upper
    (1 - alpha) confidence bound of the loss; ``p``: the p-value of H0 "loss >= margin";
    ``non_inferior``: H0 rejected at ``alpha``, i.e. ``bound < margin``.
    """
    loss: float
    se: float
    bound: float
    p: float
    margin: float
    alpha: float
    folds: int

    @property
    def non_inferior(self) -> bool:
        return self.p < self.alpha

    @property
    def verdict(self) -> str:
        return "non-inferior" if self.non_inferior else "not shown to be non-inferior"


def noninferiority_test(reference, candidate, ratio: float, margin: float,
                        alpha: float = 0.05) -> NoninferiorityTest:
    """Is ``candidate`` at most ``margin`` worse than ``reference``? Paired fold scores.

    H0: E[reference - candidate] >= margin against H1: the loss is below the margin, by the
    Nadeau-Bengio corrected resampled t statistic t = (margin - mean loss) / se with J - 1
    degrees of freedom, one-sided at ``alpha``. Equivalently, the candidate is non-inferior
    when the upper (1 - alpha) confidence bound of its loss lies below the margin. Absence
    of a significant loss is not enough: the data must exclude a loss as large as the margin.

    ``margin`` in (0, 1) on the scale of the score (0.05 = 5 points of accuracy), ``alpha``
    in (0, 1); anything else is refused.
    """
    margin, alpha = check_margin("margin", margin), check_level("alpha", alpha)
    d = _paired_differences(reference, candidate)
    loss, se = float(d.mean()), corrected_standard_error(d, ratio)
    dist = stats.t(d.size - 1)
    bound = loss + float(dist.ppf(1 - alpha)) * se
    return NoninferiorityTest(loss, se, bound, _t_probabilities(margin - loss, se, dist),
                              margin, alpha, d.size)


@dataclass(frozen=True)
class EquivalenceTest:
    """Two one-sided tests (TOST) that two models' scores differ by less than ``margin``.

    ``difference``: mean of a - b over the folds; ``low``, ``high``: its (1 - 2 alpha)
    two-sided confidence interval; ``p_lower``, ``p_upper``: p-values of H0 "difference <=
    -margin" and "difference >= margin"; ``p``: the larger of the two. Equivalent when both
    are rejected at ``alpha``, i.e. the interval lies inside (-margin, margin).
    """
    difference: float
    se: float
    low: float
    high: float
    p_lower: float
    p_upper: float
    margin: float
    alpha: float

    @property
    def p(self) -> float:
        return max(self.p_lower, self.p_upper)

    @property
    def equivalent(self) -> bool:
        return self.p < self.alpha

    @property
    def verdict(self) -> str:
        return "equivalent" if self.equivalent else "not shown to be equivalent"


def equivalence_test(a, b, ratio: float, margin: float, alpha: float = 0.05) -> EquivalenceTest:
    """TOST of paired fold scores ``a`` and ``b`` with the Nadeau-Bengio corrected variance.

    Each one-sided test is at level ``alpha`` (so the overall level is ``alpha``); the
    matching interval is the (1 - 2 alpha) CI of the mean difference. ``margin`` in (0, 1),
    ``alpha`` in (0, 0.5).
    """
    margin, alpha = check_margin("margin", margin), check_level("alpha", alpha)
    if alpha >= 0.5:
        raise ValueError(f"alpha of a TOST must be below 0.5 (its interval has level "
                         f"1 - 2 alpha); got {alpha!r}")
    d = _paired_differences(a, b)
    difference, se = float(d.mean()), corrected_standard_error(d, ratio)
    dist = stats.t(d.size - 1)
    half = float(dist.ppf(1 - alpha)) * se
    return EquivalenceTest(difference, se, difference - half, difference + half,
                           _t_probabilities(difference + margin, se, dist),
                           _t_probabilities(margin - difference, se, dist), margin, alpha)


def detectable_difference(se: float, folds: int, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """The smallest true difference a one-sided test at ``alpha`` finds with ``power``.

    (t_{1-alpha} + t_{power}) * se with J - 1 = ``folds`` - 1 degrees of freedom, the usual
    approximation. It is also the smallest margin at which a candidate that truly loses
    nothing is shown non-inferior with that power: margins below it ask more of the design
    than it can give.
    """
    alpha, power = check_level("alpha", alpha), check_level("power", power)
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2; got {folds!r}")
    if not se >= 0:
        raise ValueError(f"se must be a standard error >= 0; got {se!r}")
    dist = stats.t(folds - 1)
    return float((dist.ppf(1 - alpha) + dist.ppf(power)) * se)


def standard_error_floor(se: float, folds: int, ratio: float) -> float:
    """The corrected standard error ``se`` of ``folds`` folds with infinitely many repeats.

    (1/J + ratio) s^2 falls to ratio s^2 as J grows: more repeats of the same k-fold split
    cannot push the corrected standard error below sqrt(ratio / (1/J + ratio)) times its
    value at J folds.
    """
    ratio = _check_ratio(ratio)
    return float(se * math.sqrt(ratio / (1 / folds + ratio)))


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
