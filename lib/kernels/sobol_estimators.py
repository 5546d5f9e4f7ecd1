"""The Sobol' estimator kernel: indices and bootstrap intervals of many outputs at once.

The estimators are SALib's (first order of Saltelli et al. 2010, total order of Jansen 1999,
second order of Saltelli 2002, on the standardised output; confidence intervals from the same
bootstrap resamples), for every output column at once and without a Python loop over
resamples or indices: every bootstrap replicate's means come from one matrix product of a
resample-count matrix with a matrix of per-sample terms.
"""
import numbers
import warnings
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from .saltelli import rows_per_base_sample

_EPS = np.finfo(float).eps
# Bytes of per-sample terms held at once by the estimator (the chunk over N is sized from it).
TERMS_BUDGET_BYTES = 1 << 27


class SaltelliBlocks(NamedTuple):
    """Model outputs split by design block: ``A``, ``B`` (N, K...), ``AB``, ``BA`` (N, D, K...).

    ``AB[:, i]`` is the output at ``A`` with column i taken from ``B``, ``BA[:, i]`` at ``B``
    with column i from ``A`` (None without second order). The trailing output axes K... are
    arbitrary (classes, images, pixels, ...).
    """
    A: torch.Tensor
    B: torch.Tensor
    AB: torch.Tensor
    BA: torch.Tensor | None


def split_blocks(Y: torch.Tensor, D: int, calc_second_order: bool = True) -> SaltelliBlocks:
    """Views of the design-ordered outputs ``Y`` (rows, K...) as Saltelli blocks (no copy)."""
    step = rows_per_base_sample(D, calc_second_order)
    Y = Y.reshape((Y.shape[0] // step, step) + tuple(Y.shape[1:]))
    BA = Y[:, D + 1:2 * D + 1] if calc_second_order else None
    return SaltelliBlocks(Y[:, 0], Y[:, -1], Y[:, 1:D + 1], BA)


def resample_indices(N: int, num_resamples: int, seed=None) -> np.ndarray:
    """SALib's bootstrap draws: (N, num_resamples) row indices, one column per resample.

    ``seed`` an int or Generator: ``numpy.random.default_rng(seed).integers``, as SALib with a
    seed; ``None``: NumPy's global ``numpy.random.randint``, as SALib without one (seeded by
    ``lib.setup``). SALib also treats ``seed=0`` as no seed; here 0 is a seed like any other.
    """
    if seed is None:
        return np.random.randint(N, size=(N, num_resamples))
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.random.Generator)):
        raise TypeError(f"seed must be None, an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(seed).integers(N, size=(N, num_resamples))


def bootstrap_weights(N: int, num_resamples: int, seed=None) -> torch.Tensor:
    """(1 + num_resamples, N) float64 weights: a row of ones, then one row per SALib resample
    holding how often each base sample is drawn in it (``resample_indices``).

    For per-sample terms T (N, m), the rows of ``weights @ T / N`` are the means of T over the
    sample itself and over every bootstrap resample, all in one matrix product.
    """
    draws = resample_indices(N, num_resamples, seed)
    weights = np.empty((num_resamples + 1, N))
    weights[0] = 1.0
    group = 8  # resamples counted per bincount call: its output then stays in the CPU cache
    offsets = N * np.arange(group)
    flat = np.empty((N, group), dtype=np.int64)  # reused: each fresh array costs page faults
    for start in range(0, num_resamples, group):
        width = min(group, num_resamples - start)
        np.add(draws[:, start:start + width], offsets[:width], out=flat[:, :width])
        counts = np.bincount(flat[:, :width].ravel(), minlength=N * width)
        weights[1 + start:1 + start + width] = counts.reshape(width, N)
    return torch.from_numpy(weights)


def _pair_index(D: int, device) -> tuple:
    """The pairs i < j ordered by j - i, then i: (0,1), (1,2), ..., (0,2), ..., (0,D-1)."""
    pairs = [(i, i + offset) for offset in range(1, D) for i in range(D - offset)]
    index = torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2)
    return index[:, 0], index[:, 1]


def _num_terms(D: int, second_order: bool) -> int:
    return 2 + 2 * D + (D * (D - 1) // 2 if second_order else 0)


def _flat_blocks(blocks: SaltelliBlocks) -> SaltelliBlocks:
    """The blocks with their output axes flattened into one axis K."""
    N, D = blocks.AB.shape[:2]
    return SaltelliBlocks(blocks.A.reshape(N, -1), blocks.B.reshape(N, -1),
                          blocks.AB.reshape(N, D, -1),
                          None if blocks.BA is None else blocks.BA.reshape(N, D, -1))


def _chunk(blocks: SaltelliBlocks, rows: slice, scale: torch.Tensor) -> SaltelliBlocks:
    """Rows ``rows`` of every block, in float64, each output multiplied by its ``scale``."""
    return SaltelliBlocks(*(None if b is None else b[rows].to(torch.float64) * scale
                            for b in blocks))


def _output_scales(blocks: SaltelliBlocks, slices) -> torch.Tensor:
    """Per output, the power of two that brings its largest |value| into [0.5, 1).

    Multiplying by a power of two is exact, and Sobol' indices do not depend on the scale of
    the output, so the indices are unchanged, while no moment of a huge (finite) output can
    overflow. Also refuses an output that is NaN or infinite at any design row: such an
    output would otherwise be read as constant, all of its indices 0.
    """
    largest = None
    for rows in slices:
        for block in blocks:
            if block is None:
                continue
            flat = block[rows].reshape(-1, block.shape[-1])
            finite = torch.isfinite(flat).all(dim=0)
            if not bool(finite.all()):
                bad = (~finite).nonzero().flatten().tolist()
                raise ValueError(f"the outputs {bad[:10]}{' ...' if len(bad) > 10 else ''} "
                                 f"(flat output indices) are NaN or infinite at some design "
                                 f"rows; every design row needs a finite output")
            peak = flat.abs().amax(dim=0).to(torch.float64)
            largest = peak if largest is None else torch.maximum(largest, peak)
    exponent = torch.frexp(largest).exponent  # 0 for an output that is 0 everywhere
    return torch.ldexp(torch.ones_like(largest), -exponent)


def _row_slices(N: int, chunk_size: int) -> list:
    return [slice(s, min(s + chunk_size, N)) for s in range(0, N, chunk_size)]


def _pooled_moments(blocks: SaltelliBlocks, slices, scale) -> tuple:
    """Mean and std (ddof=0) of every output over all design rows, as SALib standardises Y.

    Each block of each chunk gets its own mean and variance; they are pooled exactly
    (Chan et al.'s parallel formula), which stays accurate when the mean dwarfs the spread.
    """
    counts, means, sums_sq = [], [], []
    for rows in slices:
        for block in _chunk(blocks, rows, scale):
            if block is not None:
                var, mean = torch.var_mean(block, dim=tuple(range(block.ndim - 1)),
                                           correction=0)
                size = block[..., 0].numel()
                counts.append(size)
                means.append(mean)
                sums_sq.append(var * size)
    means = torch.stack(means)
    counts = torch.tensor(counts, dtype=torch.float64, device=means.device)[:, None]
    mean = (counts * means).sum(0) / counts.sum()
    sum_sq = torch.stack(sums_sq).sum(0) + (counts * (means - mean) ** 2).sum(0)
    return mean, torch.sqrt(sum_sq / counts.sum())


def _standardized(chunk: SaltelliBlocks, mean, std) -> SaltelliBlocks:
    shift, scale = -mean / std, 1.0 / std
    # (y - mean) / std as one fused multiply-add per block
    return SaltelliBlocks(*(None if x is None else torch.addcmul(shift, x, scale)
                            for x in chunk))


def _sample_terms(c: SaltelliBlocks, pairs, out: torch.Tensor) -> torch.Tensor:
    """Write the per-sample terms whose means give every estimator into ``out`` (n, terms, K).

    Terms: A + B and A^2 + B^2 (the variance of A and B pooled), B (AB_i - A) (first order),
    (AB_i - A)^2 (total order), BA_i AB_j - A B for i < j (second order), the pairs in the
    order of ``_pair_index``.
    """
    D = c.AB.shape[1]
    a, b = c.A[:, None], c.B[:, None]
    torch.add(a, b, out=out[:, :1])
    torch.addcmul(a * a, b, b, out=out[:, 1:2])
    diff = c.AB - a
    torch.mul(b, diff, out=out[:, 2:2 + D])
    torch.mul(diff, diff, out=out[:, 2 + D:2 + 2 * D])
    if c.BA is not None:
        minus_ab, start = -(a * b), 2 + 2 * D
        # pairs (i, i + offset) for all i at once: slices, not a gather (slow on the CPU)
        for offset in range(1, D):
            stop = start + D - offset
            torch.addcmul(minus_ab, c.BA[:, :D - offset], c.AB[:, offset:],
                          out=out[:, start:stop])
            start = stop
    return out


def _term_means(blocks: SaltelliBlocks, scale, mean, std, weights, pairs, slices) -> torch.Tensor:
    """Means (1 + R, terms, K) of the terms over the sample (row 0) and over each resample."""
    N, D, K = blocks.AB.shape
    dev = blocks.A.device
    num_terms = _num_terms(D, blocks.BA is not None)
    buffer = torch.empty((slices[0].stop, num_terms, K), dtype=torch.float64, device=dev)
    sums = torch.zeros((weights.shape[0], num_terms * K), dtype=torch.float64, device=dev)
    for rows in slices:
        chunk = _standardized(_chunk(blocks, rows, scale), mean, std)
        terms = _sample_terms(chunk, pairs, buffer[:rows.stop - rows.start])
        sums.addmm_(weights[:, rows].to(dev), terms.reshape(terms.shape[0], -1))
    return (sums / N).reshape(-1, num_terms, K)


def _pooled_variance(M: torch.Tensor) -> torch.Tensor:
    """Variance (ddof=0) of A and B pooled, from the means of A + B and A^2 + B^2."""
    return M[:, 1] / 2 - (M[:, 0] / 2) ** 2


def _indices_from_means(M: torch.Tensor, D: int, pairs, second_order: bool) -> dict:
    """S1, ST (rows, D, K) and S2 pairs (rows, P, K) from term means M (rows, terms, K).

    As SALib, an index is 0 where the pooled variance is not above machine epsilon.
    """
    var = _pooled_variance(M)[:, None]
    usable = var > _EPS
    var = torch.where(usable, var, 1.0)
    S1 = torch.where(usable, M[:, 2:2 + D] / var, 0.0)
    indices = {"S1": S1, "ST": torch.where(usable, 0.5 * M[:, 2 + D:2 + 2 * D] / var, 0.0)}
    if second_order:
        V2 = torch.where(usable, M[:, 2 + 2 * D:] / var, 0.0)
        indices["S2"] = V2 - S1[:, pairs[0]] - S1[:, pairs[1]]
    return indices


def _full_pairs(values: torch.Tensor, D: int, pairs) -> torch.Tensor:
    """(P, K) pair values -> (D, D, K) with the pairs above the diagonal and NaN elsewhere."""
    full = torch.full((D, D) + tuple(values.shape[1:]), float("nan"),
                      dtype=values.dtype, device=values.device)
    full[pairs[0], pairs[1]] = values
    return full


def _check_estimator_args(N: int, num_resamples, conf_level) -> None:
    if N < 2:
        raise ValueError(f"need at least 2 base samples (N >= 2), got N={N}")
    if not isinstance(num_resamples, numbers.Integral) or num_resamples < 2:
        raise ValueError(f"num_resamples must be an integer >= 2, got {num_resamples!r}")
    if not (isinstance(conf_level, numbers.Real) and 0 < conf_level < 1):
        raise ValueError(f"conf_level must be strictly between 0 and 1, got {conf_level!r}")


def _warn_constant(var: torch.Tensor) -> None:
    constant = var <= _EPS
    if constant.any():
        which = torch.nonzero(constant).flatten().tolist()
        warnings.warn(f"{len(which)} output(s) are constant over the A and B samples (flat "
                      f"output indices {which[:10]}); their Sobol' indices are 0", UserWarning,
                      stacklevel=3)


def _weighted_term_means(flat, weights, chunk_size):
    """The estimators' term means under each row of ``weights`` (R, N), chunk by chunk, on
    outputs standardised over all design rows; also the index pairs of the second order."""
    N, D, K = flat.AB.shape
    pairs = _pair_index(D, flat.A.device)
    num_terms = _num_terms(D, flat.BA is not None)
    chunk_size = chunk_size or max(1, TERMS_BUDGET_BYTES // (8 * num_terms * K))
    slices = _row_slices(N, int(chunk_size))
    scale = _output_scales(flat, slices)
    mean, std = _pooled_moments(flat, slices, scale)
    std = torch.where(std > 0, std, 1.0)  # a constant output: all its terms and indices are 0
    return _term_means(flat, scale, mean, std, weights, pairs, slices), pairs


def estimate_indices(blocks: SaltelliBlocks, *, num_resamples: int = 100,
                     conf_level: float = 0.95, seed=None,
                     chunk_size: int | None = None) -> dict:
    """Sobol' indices and bootstrap confidence half-widths from outputs split into blocks.

    The kernel behind ``analyze``, for any number of outputs: ``blocks`` hold tensors on any
    device with trailing output axes K... (see ``SaltelliBlocks``). Every output is
    standardised by its mean and std over all design rows (as SALib), then

    - S1_i = mean(B (AB_i - A)) / Var   (Saltelli et al. 2010),
    - ST_i = mean((A - AB_i)^2) / (2 Var)   (Jansen 1999),
    - S2_ij = mean(BA_i AB_j - A B) / Var - S1_i - S1_j   (Saltelli 2002),

    with Var the variance (ddof=0) of A and B pooled; an index is 0 where Var is not above
    machine epsilon. Each of ``num_resamples`` bootstrap replicates recomputes them, Var
    included, on SALib's resampled rows (``resample_indices``; the standardisation is not
    redone, as in SALib); ``*_conf`` is z * std(ddof=1) of the replicates, z the normal
    quantile for ``conf_level``. Computed in float64 with one matrix product per chunk.

    Returns a dict of tensors on the blocks' device: ``S1``, ``S1_conf``, ``ST``, ``ST_conf``
    (D, K...) and, when ``blocks.BA`` is given, ``S2``, ``S2_conf`` (D, D, K...), pairs i < j
    above the diagonal, NaN elsewhere.

    Memory: the N base samples are processed ``chunk_size`` at a time (default: as many as
    keep the terms within ``TERMS_BUDGET_BYTES``). Besides the blocks, the device holds about
    8 [n T K + 3 n (2D + 2) K + (R + 1)(n + T K)] bytes, with n the chunk size, R =
    num_resamples, K the number of outputs and T = 2 + 2D (+ D(D-1)/2 with second order) the
    terms per output; the host holds 16 N (R + 1) bytes of resample draws and weights.
    """
    flat = _flat_blocks(blocks)
    N, D, _ = flat.AB.shape
    _check_estimator_args(N, num_resamples, conf_level)
    weights = bootstrap_weights(N, num_resamples, seed)
    M, pairs = _weighted_term_means(flat, weights, chunk_size)
    _warn_constant(_pooled_variance(M[:1])[0])
    z = float(stats.norm.ppf(0.5 + conf_level / 2))
    result = {}
    for key, values in _indices_from_means(M, D, pairs, flat.BA is not None).items():
        estimate = values[0]
        # an empty S2 (a single input) has no replicates to spread
        conf = z * values[1:].std(dim=0, correction=1) if estimate.numel() else estimate
        if key == "S2":
            estimate, conf = _full_pairs(estimate, D, pairs), _full_pairs(conf, D, pairs)
        result[key], result[key + "_conf"] = estimate, conf
    out_shape = tuple(blocks.A.shape[1:])
    return {k: v.reshape(v.shape[:-1] + out_shape) for k, v in result.items()}


def point_indices(blocks: SaltelliBlocks, chunk_size: int | None = None) -> dict:
    """The estimates of ``estimate_indices`` without their bootstrap: S1, ST (D, K...) and,
    with ``blocks.BA``, S2 (D, D, K...), float64 on the blocks' device.

    For many independent designs at once (one per output column), as randomised QMC needs.
    """
    flat = _flat_blocks(blocks)
    N, D, _ = flat.AB.shape
    if N < 2:
        raise ValueError(f"need at least 2 base samples (N >= 2), got N={N}")
    M, pairs = _weighted_term_means(flat, torch.ones(1, N, dtype=torch.float64), chunk_size)
    result = {}
    for key, values in _indices_from_means(M, D, pairs, flat.BA is not None).items():
        result[key] = _full_pairs(values[0], D, pairs) if key == "S2" else values[0]
    out_shape = tuple(blocks.A.shape[1:])
    return {k: v.reshape(v.shape[:-1] + out_shape) for k, v in result.items()}
