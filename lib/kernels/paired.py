"""Paired comparisons of per-image scores of several methods (or networks) on the same images.

When every method is scored on the same images, the question "does A score higher than B?" is
about the per-image differences ``a_i - b_i``. Most of the spread between images (an easy image
is easy for every method) cancels in the difference, so separate intervals for A and B can
overlap while the interval of the difference excludes zero; overlapping separate intervals are
not evidence of no difference, and non-overlapping ones waste power.

- The **paired bootstrap** resamples the images, and one resample applies to both methods. A
  resample is a row of draw counts (how often each image was drawn), so all replicates of all
  pairs are one matrix product of the (replicates x images) count matrix with the (images x
  pairs) matrix of differences. The counts are drawn once per call and shared by every pair,
  so a table's intervals are computed on the same resampled image sets. The interval is the
  percentile interval of the replicate means.
- The **verdict** reads the interval: ``"higher"`` when it lies above ``+margin``, ``"lower"``
  when below ``-margin``, ``"indistinguishable"`` otherwise; ``"undefined"`` when fewer than
  two images have both scores (an interval from one image says nothing about the spread).
- The **sign-flip permutation test** (optional) tests the hypothesis that each difference is
  as likely to have either sign (two-sided, statistic: the mean difference). All ``2^n`` sign
  patterns are enumerated when there are at most ``n_permutations`` of them (an exact test),
  otherwise ``n_permutations`` random patterns are drawn and ``p = (1 + hits) / (1 + draws)``.
  The test ignores ``margin``.

An undefined score (NaN, e.g. a localisation metric on an image without a lesion) removes that
image from the pairs where it occurs, and only from those; each result reports how many images
it used (``n``) and left out (``n_excluded``). In a resample, a pair's mean is over the drawn
images where both scores are defined.

The percentile bootstrap is reliable from a few tens of images; with Bonferroni-adjusted levels
the tails hold only ``n_boot * (1 - level) / (2 m)`` replicates each, so raise ``n_boot`` for
many pairs (about 20 replicates per tail keeps the limits stable).
"""
import math
import numbers
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from .bootstrap import bootstrap_counts

VERDICTS = ("higher", "lower", "indistinguishable", "undefined")
CORRECTIONS = ("bonferroni", "none")
# Column names of the tables, as they appear in the book.
COLUMNS = ("difference", "CI low", "CI high", "CI level", "p", "p (Holm)", "verdict", "n",
           "n excluded", "correction")
# Sign patterns per block of the permutation test, to bound memory.
_SIGN_BLOCK = 1024


@dataclass(frozen=True)
class PairedDifference:
    """Mean difference ``a - b`` over the images where both are defined, with its paired
    percentile-bootstrap interval at ``level``, the verdict, the sign-flip p-value (NaN when
    the test was not run), ``n`` images used and ``n_excluded`` left out (NaN in a or b)."""

    difference: float
    ci_low: float
    ci_high: float
    level: float
    verdict: str
    p_value: float
    n: int
    n_excluded: int
    margin: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_difference(a, b, *, n_boot=2000, level=0.95, seed=0, margin=0.0, n_permutations=0):
    """Paired comparison of two length-``N`` score vectors measured on the same images.

    Args:
        a, b: per-image scores (tensors, arrays or sequences); NaN marks an undefined score.
        n_boot: bootstrap resamples of the images.
        level: coverage of the interval of the difference, in (0, 1).
        seed: seeds the resamples and the random sign patterns.
        margin: a difference within ``[-margin, margin]`` counts as no difference (in the
            scores' units, non-negative).
        n_permutations: sign patterns of the permutation test; 0 skips the test.

    Returns:
        A :class:`PairedDifference`.
    """
    row = _compare({"a": a, "b": b}, [("a", "b")], n_boot=n_boot, level=level, seed=seed,
                   margin=margin, n_permutations=n_permutations, correction="none")[0]
    return PairedDifference(row["difference"], row["CI low"], row["CI high"], row["CI level"],
                            row["verdict"], row["p"], row["n"], row["n excluded"], margin)


def pairwise_table(scores, *, n_boot=2000, level=0.95, seed=0, margin=0.0,
                   n_permutations=9999, correction="bonferroni", labels=("method A", "method B")):
    """Every pair of ``scores`` compared as in :func:`paired_difference`: a DataFrame.

    Multiplicity, for ``m`` pairs: with ``correction="bonferroni"`` (the default) each interval
    is at level ``1 - (1 - level) / m``, so all ``m`` intervals hold together with probability
    at least ``level``, and the verdicts, which read the intervals, are a family with error
    rate at most ``1 - level``; ``"none"`` keeps ``level`` for each pair. The permutation
    p-values are adjusted by Holm's step-down method (family-wise error rate, over the pairs
    with a p-value), column ``p (Holm)``; ``p`` is the unadjusted one. The verdict comes from
    the interval alone. Holm's method rejects whatever Bonferroni's would and possibly more,
    and the permutation test is another test than the bootstrap, so near the boundary a
    verdict and its Holm p-value may disagree.

    Args:
        scores: ``{name: length-N scores}``, at least two, all on the same ``N`` images in the
            same order (NaN: undefined).
        labels: the headers of the two name columns (e.g. ``("network A", "network B")``).
        correction: ``"bonferroni"`` or ``"none"`` (for the intervals; see above).
        Other arguments as for :func:`paired_difference`.

    Returns:
        One row per pair ``(A, B)``, A before B in the order of ``scores``, difference A - B:
        the two name columns, then ``difference``, ``CI low``, ``CI high``, ``CI level``
        (the adjusted level), ``p``, ``p (Holm)`` (NaN without the test), ``verdict``, ``n``,
        ``n excluded``, ``correction`` (the method, in words).
    """
    names = _names(scores, labels)
    pairs = [(first, second) for i, first in enumerate(names) for second in names[i + 1:]]
    return _table(scores, pairs, labels, n_boot=n_boot, level=level, seed=seed, margin=margin,
                  n_permutations=n_permutations, correction=correction)


def versus_reference(scores, reference, *, n_boot=2000, level=0.95, seed=0, margin=0.0,
                     n_permutations=9999, correction="bonferroni",
                     labels=("method", "reference")):
    """Every method of ``scores`` against one of them, ``reference`` (e.g. ``"random"``).

    As :func:`pairwise_table`, for the ``m = len(scores) - 1`` pairs ``(method, reference)``
    (difference method - reference), the multiplicity corrections over those ``m``.
    """
    names = _names(scores, labels)
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the scores; names: "
                         f"{', '.join(map(repr, names))}")
    pairs = [(name, reference) for name in names if name != reference]
    return _table(scores, pairs, labels, n_boot=n_boot, level=level, seed=seed, margin=margin,
                  n_permutations=n_permutations, correction=correction)


def holm(p_values):
    """Holm's step-down adjustment of a sequence of p-values; NaNs stay NaN and do not count
    towards the number of tests. Returns a list of floats in the input order."""
    values = [float(p) for p in p_values]
    for p in values:
        if not (math.isnan(p) or 0 <= p <= 1):
            raise ValueError(f"p-values must be in [0, 1] or NaN; got {p!r}")
    order = sorted((i for i, p in enumerate(values) if not math.isnan(p)), key=values.__getitem__)
    adjusted, running = list(values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def verdict(ci_low, ci_high, margin=0.0, n=2):
    """The verdict word of an interval of ``a - b`` (see the module docstring)."""
    if n < 2 or math.isnan(ci_low) or math.isnan(ci_high):
        return "undefined"
    if ci_low > margin:
        return "higher"
    if ci_high < -margin:
        return "lower"
    return "indistinguishable"


PHRASES = {"higher": "higher than", "lower": "lower than",
           "indistinguishable": "not distinguishable from", "undefined": "not comparable with"}


def phrase(word: str) -> str:
    """A verdict as it reads in a sentence: ``"A is {phrase} B"``."""
    if word not in PHRASES:
        raise ValueError(f"unknown verdict {word!r}; verdicts: {', '.join(PHRASES)}")
    return PHRASES[word]


def _table(scores, pairs, labels, **options):
    rows = _compare(scores, pairs, **options)
    frame = pd.DataFrame([{labels[0]: first, labels[1]: second, **row}
                          for (first, second), row in zip(pairs, rows)])
    return frame[[*labels, *COLUMNS]]


def _compare(scores, pairs, *, n_boot, level, seed, margin, n_permutations, correction):
    """One dict of statistics (keys ``COLUMNS``) per pair."""
    _check_options(n_boot, level, seed, margin, n_permutations, correction)
    values = _score_matrix(scores)
    columns = {name: i for i, name in enumerate(scores)}
    first = values[:, [columns[a] for a, _ in pairs]]
    second = values[:, [columns[b] for _, b in pairs]]
    defined = ~(first.isnan() | second.isnan())
    differences = torch.where(defined, first - second, 0.0)  # images x pairs
    used = defined.sum(dim=0)
    weight = defined.double()

    counts = bootstrap_counts(values.shape[0], n_boot, seed)
    generator = torch.Generator().manual_seed(seed)  # the sign flips' draws
    with torch.no_grad():
        replicates = (counts @ differences) / (counts @ weight)  # NaN: no defined image drawn
    m = len(pairs)
    adjusted = 1 - (1 - level) / m if correction == "bonferroni" else level
    tails = torch.tensor([(1 - adjusted) / 2, (1 + adjusted) / 2], dtype=torch.float64)
    limits = torch.nanquantile(replicates, tails, dim=0)  # 2 x pairs
    means = differences.sum(dim=0) / used.clamp_min(1)
    if n_permutations:
        p_values = _sign_flip_p(differences, n_permutations, generator)
    else:
        p_values = torch.full((m,), math.nan, dtype=torch.float64)
    p_values = torch.where(used > 0, p_values, math.nan).tolist()
    p_holm = holm(p_values)
    described = _correction_words(correction, m, bool(n_permutations))

    rows = []
    for j in range(m):
        n = int(used[j])
        low, high = (limits[0, j].item(), limits[1, j].item()) if n else (math.nan, math.nan)
        rows.append({"difference": means[j].item() if n else math.nan, "CI low": low,
                     "CI high": high, "CI level": adjusted, "p": p_values[j],
                     "p (Holm)": p_holm[j], "verdict": verdict(low, high, margin, n), "n": n,
                     "n excluded": values.shape[0] - n, "correction": described})
    return rows


def _sign_flip_p(differences, n_permutations, generator):
    """Two-sided sign-flip p-value of each column of ``differences`` (zeros where undefined,
    which no sign changes): exact when ``2^N <= n_permutations``, else Monte Carlo."""
    num_images = differences.shape[0]
    observed = differences.sum(dim=0).abs()
    # Sums that differ only by rounding count as ties (as extreme), the conservative side.
    tolerance = 1e-12 * differences.abs().sum(dim=0)
    exact = num_images < 63 and 2 ** num_images <= n_permutations
    total = 2 ** num_images if exact else n_permutations
    hits = torch.zeros_like(observed)
    for start in range(0, total, _SIGN_BLOCK):
        size = min(_SIGN_BLOCK, total - start)
        if exact:
            patterns = torch.arange(start, start + size).unsqueeze(1)
            bits = (patterns >> torch.arange(num_images)) & 1
        else:
            bits = torch.randint(2, (size, num_images), generator=generator)
        signs = 1.0 - 2.0 * bits.double()
        hits += ((signs @ differences).abs() >= observed - tolerance).sum(dim=0)
    return hits / total if exact else (1 + hits) / (1 + total)


def _correction_words(correction, m, tested):
    interval = (f"Bonferroni intervals over {m} pairs" if correction == "bonferroni" and m > 1
                else "no interval correction")
    return f"{interval}; Holm p over {m} pairs" if tested else interval


def _names(scores, labels):
    if not isinstance(scores, dict):
        raise TypeError(f"scores must be a dict {{name: per-image scores}}; got "
                        f"{type(scores).__name__}")
    if len(scores) < 2:
        raise ValueError(f"scores must hold at least two named score vectors; got "
                         f"{list(scores)}")
    if (not isinstance(labels, (tuple, list)) or len(labels) != 2
            or not all(isinstance(label, str) for label in labels) or labels[0] == labels[1]):
        raise ValueError(f"labels must be two different column names; got {labels!r}")
    clash = set(labels) & set(COLUMNS)
    if clash:
        raise ValueError(f"labels {sorted(clash)} clash with the table's columns {COLUMNS}")
    return list(scores)


def _score_matrix(scores):
    """``images x methods`` float64 matrix of the scores (CPU), after checks."""
    columns, length = [], None
    for name, values in scores.items():
        try:
            vector = torch.as_tensor(values).detach().to("cpu", torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"scores[{name!r}] must be a vector of numbers; got "
                            f"{type(values).__name__}") from error
        if vector.ndim != 1 or vector.numel() == 0:
            raise ValueError(f"scores[{name!r}] must be a non-empty vector (one score per "
                             f"image); got shape {tuple(vector.shape)}")
        if length is not None and vector.numel() != length:
            raise ValueError(f"every score vector must cover the same images; scores[{name!r}] "
                             f"has {vector.numel()} values, the first had {length}")
        if vector.isinf().any():
            raise ValueError(f"scores[{name!r}] contains infinite values (NaN marks an "
                             f"undefined score; infinity is not allowed)")
        length = vector.numel()
        columns.append(vector)
    return torch.stack(columns, dim=1)


def _check_options(n_boot, level, seed, margin, n_permutations, correction):
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if (isinstance(margin, bool) or not isinstance(margin, numbers.Real)
            or not math.isfinite(margin) or margin < 0):
        raise ValueError(f"margin must be a finite non-negative number (scores' units); got "
                         f"{margin!r}")
    if (isinstance(n_permutations, bool) or not isinstance(n_permutations, numbers.Integral)
            or n_permutations < 0):
        raise ValueError(f"n_permutations must be a non-negative integer (0: no test); got "
                         f"{n_permutations!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(map(repr, CORRECTIONS))}; got "
                         f"{correction!r}")
