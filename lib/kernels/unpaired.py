"""Means of two different sets of cases, and their difference, with bootstrap intervals.

Where two scores are measured on the same images, compare them with :mod:`lib.kernels.paired`.
This module is for the other case: two sets that share no cases (images synthesised in two
different ways, say), where no pairing exists. Each set is resampled on its own, the
replicate difference is the difference of the two replicate means, and the interval is the
percentile interval of those replicates. The verdict reads the interval as in
:func:`lib.kernels.paired.verdict`.
"""
import math
from dataclasses import asdict, dataclass

import torch

from . import checks
from .bootstrap import bootstrap_counts
from .paired import verdict


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its percentile-bootstrap interval at ``level``, the verdict,
    and the sizes of the two sets."""

    difference: float
    ci_low: float
    ci_high: float
    level: float
    verdict: str
    n_a: int
    n_b: int
    margin: float

    def as_dict(self) -> dict:
        return asdict(self)


def mean_interval(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval;
    NaN entries are left out, and the interval is NaN below two values."""
    values = _values("values", values)
    if values.numel() < 2:
        return (values.mean().item() if values.numel() else math.nan), math.nan, math.nan
    replicates = _replicate_means(values, n_boot, seed)
    low, high = _percentiles(replicates, level)
    return values.mean().item(), low, high


def difference_of_means(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                        margin: float = 0.0) -> Difference:
    """``mean(a) - mean(b)`` for two sets of cases with nothing in common (see the module
    docstring); NaN entries are left out of their set."""
    a, b = _values("a", a), _values("b", b)
    margin = checks.finite_number("margin", margin)
    _check_level(level)
    if min(a.numel(), b.numel()) < 2:
        difference = (a.mean() - b.mean()).item() if a.numel() and b.numel() else math.nan
        return Difference(difference, math.nan, math.nan, level, "undefined", a.numel(),
                          b.numel(), margin)
    replicates = _replicate_means(a, n_boot, seed) - _replicate_means(b, n_boot, seed + 1)
    low, high = _percentiles(replicates, level)
    return Difference((a.mean() - b.mean()).item(), low, high, level,
                      verdict(low, high, margin), a.numel(), b.numel(), margin)


def _values(name, values):
    values = torch.as_tensor(values, dtype=torch.float64).detach().cpu().flatten()
    if torch.isinf(values).any():
        raise ValueError(f"{name} holds infinite values")
    return values[~torch.isnan(values)]


def _replicate_means(values, n_boot, seed):
    n_boot = checks.integer("n_boot", n_boot, 10)
    counts = bootstrap_counts(values.numel(), n_boot, seed)
    return counts @ values / values.numel()


def _check_level(level):
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1); got {level!r}")


def _percentiles(replicates, level):
    _check_level(level)
    tail = (1 - level) / 2
    low, high = torch.quantile(replicates, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return low.item(), high.item()
