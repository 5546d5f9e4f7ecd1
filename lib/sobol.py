"""Sobol' sensitivity indices in SALib's language, for many model outputs at once, on the device.

The workflow is SALib's: a problem dict (``num_vars``, ``names``, ``bounds``, optional
``dists``), then ``sample`` -> ``evaluate`` -> ``analyze``. ``sample`` builds the same
Saltelli design as ``SALib.sample.sobol.sample`` row for row; ``analyze`` gives the same
numbers as ``SALib.analyze.sobol.analyze`` (first order of Saltelli et al. 2010, total order of
Jansen 1999, second order of Saltelli 2002, on the standardised output; confidence intervals
from the same bootstrap resamples), but for every output column at once and without a Python
loop over resamples or indices: every bootstrap replicate's means come from one matrix product
of a resample-count matrix with a matrix of per-sample terms.

Sobol' indices decompose the output variance over *independent* inputs. Correlated inputs
(e.g. the columns of a clinical data set) are sampled here from their marginals, independently;
the indices then describe the model on that independent input space, not on the data's joint
distribution.

Design row layout (as SALib), for each of the N base rows: ``A``, ``AB_1 .. AB_D``
(``A`` with column i from ``B``), then with second order ``BA_1 .. BA_D`` (``B`` with column
i from ``A``), then ``B``: N (2D + 2) rows with second order, N (D + 2) without.
"""
import math
import numbers
import reprlib
import time
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats
from scipy.stats import qmc

from .hardware import device as default_device
from .progress import progress

# name -> (accepted numbers of parameters, their meaning, a check of their values).
# "empirical" takes the observed values of a data column instead of parameters.
DISTRIBUTIONS = {
    "unif": ((2,), "[lower, upper], lower < upper", lambda p: p[0] < p[1]),
    "logunif": ((2,), "[lower, upper], 0 < lower < upper", lambda p: 0 < p[0] < p[1]),
    "triang": ((3,), "[start, end, peak as a fraction of the width], start < end, "
               "0 <= peak <= 1", lambda p: p[0] < p[1] and 0 <= p[2] <= 1),
    "norm": ((2,), "[mean, std], std > 0", lambda p: p[1] > 0),
    "truncnorm": ((4,), "[lower, upper, mean, std], lower < upper, std > 0",
                  lambda p: p[0] < p[1] and p[3] > 0),
    "lognorm": ((2,), "[mean, std] of log(x), std > 0", lambda p: p[1] > 0),
    "weibull": ((2, 3), "[shape, scale] or [shape, scale, location], shape > 0, scale > 0",
                lambda p: p[0] > 0 and p[1] > 0),
    "empirical": (None, "the observed values of a data column, at least one",
                  lambda p: p.size >= 1),
}
_EPS = np.finfo(float).eps
# Bytes of per-sample terms held at once by the estimator (the chunk over N is sized from it).
TERMS_BUDGET_BYTES = 1 << 27
EVALUATE_CHUNK_ROWS = 1 << 18
LONG_RUN_SECONDS = 5.0


# --------------------------------------------------------------------------------- problem

def _check_names(problem) -> list:
    if not isinstance(problem, dict):
        raise TypeError(f"problem must be a dict with num_vars, names and bounds, "
                        f"got {type(problem).__name__}")
    missing = [k for k in ("num_vars", "names", "bounds") if k not in problem]
    if missing:
        raise ValueError(f"problem lacks {', '.join(missing)}; a problem needs num_vars, "
                         f"names and bounds (and optionally dists)")
    if problem.get("groups"):
        raise ValueError("problem['groups'] is not supported: give one name per input")
    D = problem["num_vars"]
    if not isinstance(D, numbers.Integral) or isinstance(D, bool) or D < 1:
        raise ValueError(f"problem['num_vars'] must be a positive integer, got {D!r}")
    names = list(problem["names"])
    if len(names) != D or len(set(names)) != D:
        raise ValueError(f"problem['names'] must hold {D} distinct names (num_vars={D}), "
                         f"got {names!r}")
    return names


def _check_params(name: str, dist: str, params) -> None:
    """Raise a ValueError naming the input when ``params`` cannot parameterise ``dist``."""
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"input {name!r}: unknown distribution {dist!r}; valid "
                         f"distributions: {', '.join(DISTRIBUTIONS)}")
    sizes, meaning, is_valid = DISTRIBUTIONS[dist]
    try:
        values = np.asarray(params, dtype=float).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"input {name!r}: {dist} takes {meaning}; "
                        f"got {reprlib.repr(params)}") from None
    if sizes and values.size not in sizes:
        raise ValueError(f"input {name!r}: {dist} takes {meaning}; got {reprlib.repr(params)}")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:10].tolist()
        where = f"its data hold NaN or inf in rows {bad}; drop or impute them first" \
            if dist == "empirical" else f"its bounds hold NaN or inf at positions {bad}"
        raise ValueError(f"input {name!r}: {where}")
    if not is_valid(values):
        raise ValueError(f"input {name!r}: illegal {dist} bounds {reprlib.repr(params)}; "
                         f"{dist} takes {meaning}")


def check_problem(problem) -> dict:
    """Validate a SALib problem dict; return it with ``dists`` filled in (``unif`` default).

    Raises ValueError/TypeError naming the input and the accepted values: wrong
    ``num_vars``/``names``/``bounds`` lengths, lower >= upper, unknown distribution names,
    illegal distribution parameters, NaN in bounds or data, ``groups`` (not supported).
    """
    names = _check_names(problem)
    D = len(names)
    bounds = list(problem["bounds"])
    dists = list(problem.get("dists") or ["unif"] * D)
    if len(bounds) != D or len(dists) != D:
        raise ValueError(f"problem has num_vars={D} but {len(bounds)} bounds and "
                         f"{len(dists)} dists; give one of each per input")
    for name, dist, params in zip(names, dists, bounds):
        _check_params(name, dist, params)
    return {**problem, "names": names, "bounds": bounds, "dists": dists}


def problem_from_data(data, names=None) -> dict:
    """A problem whose inputs follow the empirical marginals of the columns of ``data``.

    ``data`` is a pandas DataFrame or a 2-D array (rows = observations). Each input is drawn
    through the inverse empirical CDF of its column, independently of the others: Sobol'
    indices assume independent inputs, so the columns' correlations are not kept.
    """
    if isinstance(data, pd.DataFrame):
        names = list(data.columns) if names is None else list(names)
        columns = [data[c].to_numpy(dtype=float) for c in data.columns]
    else:
        array = np.asarray(data, dtype=float)
        if array.ndim != 2:
            raise ValueError(f"data must be 2-D (observations x inputs), got shape {array.shape}")
        columns = list(array.T)
        names = [f"x{i + 1}" for i in range(len(columns))] if names is None else list(names)
    problem = {"num_vars": len(columns), "names": names, "bounds": columns,
               "dists": ["empirical"] * len(columns)}
    return check_problem(problem)


# ---------------------------------------------------------------------------------- design

def rows_per_base_sample(D: int, calc_second_order: bool) -> int:
    """Rows of the Saltelli design per base sample: 2D + 2 with second order, D + 2 without."""
    return 2 * D + 2 if calc_second_order else D + 2


def _check_base_size(N) -> None:
    if not isinstance(N, numbers.Integral) or isinstance(N, bool) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    if N & (N - 1):
        warnings.warn(f"N={N} is not a power of two: the Sobol' sequence loses its balance "
                      f"properties (as SALib and scipy warn); use N={1 << int(N).bit_length()} "
                      f"or N={1 << (int(N).bit_length() - 1)}", UserWarning, stacklevel=3)


def unit_design(D: int, N: int, calc_second_order: bool = True, seed=None) -> np.ndarray:
    """The Saltelli design on the unit cube, (N * rows_per_base_sample, D), as SALib lays it out.

    The base sample is a scrambled Sobol' sequence in 2D dimensions (scipy's ``qmc.Sobol``
    seeded with ``seed``): its first D columns are ``A``, its last D columns ``B``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The balance properties")
        base = qmc.Sobol(d=2 * D, scramble=True, seed=seed).random(N)
    A, B = base[:, :D], base[:, D:]
    step = rows_per_base_sample(D, calc_second_order)
    design = np.empty((N, step, D))
    inputs = np.arange(D)
    design[:, 1:D + 1] = A[:, None]  # AB_i: A with column i from B
    design[:, 1 + inputs, inputs] = B
    if calc_second_order:
        design[:, D + 1:2 * D + 1] = B[:, None]  # BA_i: B with column i from A
        design[:, D + 1 + inputs, inputs] = A
    design[:, 0], design[:, -1] = A, B
    return design.reshape(-1, D)


def _empirical_ppf(u: np.ndarray, values) -> np.ndarray:
    """Inverse of the empirical CDF: the smallest observed x with F_n(x) >= u."""
    ordered = np.sort(np.asarray(values, dtype=float).ravel())
    index = np.ceil(u * ordered.size).astype(np.int64) - 1
    return ordered[np.clip(index, 0, ordered.size - 1)]


def _ppf(dist: str, u: np.ndarray, p) -> np.ndarray:
    """Map unit-cube values ``u`` to ``dist`` with parameters ``p`` (SALib's conventions)."""
    if dist == "unif":
        return u * (p[1] - p[0]) + p[0]
    if dist == "logunif":
        return stats.loguniform.ppf(u, a=p[0], b=p[1])
    if dist == "triang":
        return stats.triang.ppf(u, c=p[2], scale=p[1] - p[0], loc=p[0])
    if dist == "norm":
        return stats.norm.ppf(u, loc=p[0], scale=p[1])
    if dist == "truncnorm":
        return stats.truncnorm.ppf(u, (p[0] - p[2]) / p[3], (p[1] - p[2]) / p[3],
                                   loc=p[2], scale=p[3])
    if dist == "lognorm":
        return np.exp(stats.norm.ppf(u, loc=p[0], scale=p[1]))
    if dist == "weibull":
        return stats.weibull_min.ppf(u, c=p[0], scale=p[1], loc=p[2] if len(p) == 3 else 0)
    return _empirical_ppf(u, p)


def scale_to_inputs(U: np.ndarray, problem) -> np.ndarray:
    """Map a unit-cube design (rows, D) to the problem's input distributions, column by column."""
    problem = check_problem(problem)
    if all(dist == "unif" for dist in problem["dists"]):  # one vectorised pass, as SALib
        lower, upper = np.asarray(problem["bounds"], dtype=float).T
        return U * (upper - lower) + lower
    X = np.empty_like(U, dtype=float)
    for i, (dist, params) in enumerate(zip(problem["dists"], problem["bounds"])):
        X[:, i] = _ppf(dist, U[:, i], params)
    return X


def sample(problem, N: int, calc_second_order: bool = True, seed=None) -> np.ndarray:
    """The Saltelli/Sobol' design of ``SALib.sample.sobol.sample``, row for row.

    Returns a float64 array of N (2D + 2) rows with second order, N (D + 2) without. ``N``
    should be a power of two (a warning says so otherwise). Inputs with ``dists`` entry
    ``"empirical"`` take their ``bounds`` entry as the observed values of a data column and
    are drawn by the inverse empirical CDF; inputs are always independent.
    """
    problem = check_problem(problem)
    _check_base_size(N)
    U = unit_design(problem["num_vars"], N, calc_second_order, seed)
    return scale_to_inputs(U, problem)


# -------------------------------------------------------------------------------- evaluate

def _module_dtype_and_device(model):
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if not params:
        return None, None
    return params[0].dtype, params[0].device


def _check_model_device(model_device, dev: torch.device) -> None:
    if model_device is not None and model_device.type != dev.type:
        raise ValueError(f"the model's parameters are on {model_device} but the design is "
                         f"evaluated on {dev}; move the model with model.to({str(dev)!r}) "
                         f"or pass device={str(model_device)!r}")


class _RunProgress:
    """A progress bar for long evaluations only.

    ``show=None`` opens the bar once the whole run is projected to take more than
    ``LONG_RUN_SECONDS``, so quick runs print nothing; True opens it at once, False never.
    """

    def __init__(self, total: int, show: bool | None):
        self.total, self.show, self.done = total, show, 0
        self.start = time.perf_counter()
        self.bar = self._open() if show else None

    def _open(self):
        return progress(total=self.total, desc="evaluate", unit="row", leave=False)

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is None and self.show is None and self.done < self.total:
            elapsed = time.perf_counter() - self.start
            if elapsed * self.total / self.done > LONG_RUN_SECONDS:
                self.bar = self._open()
                self.bar.update(self.done)
        elif self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _forward(model, rows, dev, dtype) -> torch.Tensor:
    chunk = torch.as_tensor(rows).to(dev, dtype)
    values = torch.as_tensor(model(chunk), device=dev)
    if values.ndim == 0 or values.shape[0] != chunk.shape[0]:
        raise ValueError(f"the model returned shape {tuple(values.shape)} for a chunk of "
                         f"{chunk.shape[0]} rows; it must return one output (or one row of "
                         f"outputs) per design row")
    return values


def _evaluate_chunks(model, X, chunk_size: int, dev, dtype, bar) -> torch.Tensor:
    """Fill the output chunk by chunk; on CUDA out-of-memory, halve the chunk and go on."""
    rows, start, out = X.shape[0], 0, None
    while start < rows:
        try:
            values = _forward(model, X[start:start + chunk_size], dev, dtype)
        except torch.cuda.OutOfMemoryError:
            if chunk_size == 1:
                raise
            chunk_size //= 2
            torch.cuda.empty_cache()
            warnings.warn(f"out of GPU memory; evaluating in chunks of {chunk_size} rows")
            continue
        if out is None:
            out = torch.empty((rows,) + tuple(values.shape[1:]), dtype=values.dtype, device=dev)
        out[start:start + values.shape[0]] = values
        start += values.shape[0]
        bar.update(values.shape[0])
    return out


@torch.no_grad()
def evaluate(model, X, *, chunk_size: int | None = None, device=None, dtype=None,
             show_progress: bool | None = None) -> torch.Tensor:
    """Run ``model`` on every row of the design ``X``, in chunks, on the device.

    ``model`` is a torch module (run in eval mode, its previous mode restored) or a vectorised
    function of a (rows, D) tensor. ``X`` is a NumPy array or a tensor; its rows are moved to
    ``device`` (default ``lib.device()``) one chunk at a time and cast to ``dtype`` (default:
    the module's parameter dtype, else float64). Returns a tensor on ``device`` of shape
    (rows,) or (rows, K...), as the model returns per row, in the model's output dtype.

    ``chunk_size`` rows go through the model at once (default 262144); on a CUDA out-of-memory
    error the chunk is halved and evaluation goes on. A progress bar appears when the run is
    projected to take more than ``LONG_RUN_SECONDS`` (``show_progress`` forces it on or off).
    """
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a (rows, D) design with at least one row, got shape "
                         f"{tuple(X.shape)}")
    chunk_size = EVALUATE_CHUNK_ROWS if chunk_size is None else chunk_size
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    dev = torch.device(device) if device is not None else default_device()
    module_dtype, module_device = _module_dtype_and_device(model)
    _check_model_device(module_device, dev)
    bar = _RunProgress(X.shape[0], show_progress)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        return _evaluate_chunks(model, X, int(chunk_size), dev,
                                dtype or module_dtype or torch.float64, bar)
    finally:
        bar.close()
        if isinstance(model, torch.nn.Module):
            model.train(was_training)


# ------------------------------------------------------------------------ estimator kernel

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


def _chunk(blocks: SaltelliBlocks, rows: slice) -> SaltelliBlocks:
    """Rows ``rows`` of every block, in float64."""
    return SaltelliBlocks(*(None if b is None else b[rows].to(torch.float64) for b in blocks))


def _row_slices(N: int, chunk_size: int) -> list:
    return [slice(s, min(s + chunk_size, N)) for s in range(0, N, chunk_size)]


def _pooled_moments(blocks: SaltelliBlocks, slices) -> tuple:
    """Mean and std (ddof=0) of every output over all design rows, as SALib standardises Y.

    Each block of each chunk gets its own mean and variance; they are pooled exactly
    (Chan et al.'s parallel formula), which stays accurate when the mean dwarfs the spread.
    """
    counts, means, sums_sq = [], [], []
    for rows in slices:
        for block in _chunk(blocks, rows):
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


def _term_means(blocks: SaltelliBlocks, mean, std, weights, pairs, slices) -> torch.Tensor:
    """Means (1 + R, terms, K) of the terms over the sample (row 0) and over each resample."""
    N, D, K = blocks.AB.shape
    dev = blocks.A.device
    num_terms = _num_terms(D, blocks.BA is not None)
    buffer = torch.empty((slices[0].stop, num_terms, K), dtype=torch.float64, device=dev)
    sums = torch.zeros((weights.shape[0], num_terms * K), dtype=torch.float64, device=dev)
    for rows in slices:
        chunk = _standardized(_chunk(blocks, rows), mean, std)
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
    N, D, K = flat.AB.shape
    _check_estimator_args(N, num_resamples, conf_level)
    pairs = _pair_index(D, flat.A.device)
    num_terms = _num_terms(D, flat.BA is not None)
    chunk_size = chunk_size or max(1, TERMS_BUDGET_BYTES // (8 * num_terms * K))
    slices = _row_slices(N, int(chunk_size))
    mean, std = _pooled_moments(flat, slices)
    std = torch.where(std > 0, std, 1.0)  # a constant output: all its terms and indices are 0
    weights = bootstrap_weights(N, num_resamples, seed)
    M = _term_means(flat, mean, std, weights, pairs, slices)
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


# --------------------------------------------------------------------------------- analyze

def _check_output_rows(Y: torch.Tensor, D: int, calc_second_order: bool) -> int:
    """N from the length of Y, or a ValueError saying which lengths the design allows."""
    step = rows_per_base_sample(D, calc_second_order)
    rows = Y.shape[0]
    if rows % step == 0 and rows >= step:
        return rows // step
    below = rows // step
    hint = ""
    other = rows_per_base_sample(D, not calc_second_order)
    if rows % other == 0:
        hint = (f" It is a multiple of {other}: was the design sampled with "
                f"calc_second_order={not calc_second_order}?")
    raise ValueError(
        f"Y has {rows} rows, but a Saltelli design with D={D} inputs and calc_second_order="
        f"{calc_second_order} has N*{step} rows (N*(2D+2) with second order, N*(D+2) "
        f"without); the nearest valid lengths are {below * step} (N={below}) and "
        f"{(below + 1) * step} (N={below + 1}).{hint}")


def _check_finite(Y: torch.Tensor) -> None:
    if torch.isfinite(Y).all():
        return
    bad = ~torch.isfinite(Y.reshape(Y.shape[0], -1)).all(dim=1)
    rows = torch.nonzero(bad).flatten().tolist()
    raise ValueError(f"Y has NaN or inf in {len(rows)} row(s): {rows[:10]}"
                     f"{' ...' if len(rows) > 10 else ''}; every design row needs a finite "
                     f"output (dropping rows would break the Saltelli blocks)")


def _as_output_tensor(Y) -> torch.Tensor:
    if isinstance(Y, torch.Tensor):
        tensor = Y
    else:
        array = np.asarray(Y)
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise TypeError(f"Y must hold real numbers, got dtype {array.dtype}")
        tensor = torch.as_tensor(array, device=default_device())
    if tensor.ndim == 0:
        raise ValueError("Y must have one row per design row, got a scalar")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"Y must hold real numbers, got dtype {tensor.dtype}")
    return tensor


def _output_names(out_shape: tuple, output_names) -> list:
    K = math.prod(out_shape)
    if output_names is None:
        if not out_shape:
            return ["y"]
        return [f"y{'_'.join(map(str, i))}" for i in np.ndindex(*out_shape)]
    names = list(output_names)
    if len(names) != K:
        raise ValueError(f"output_names has {len(names)} names but Y has {K} outputs per row")
    return names


def analyze(problem, Y, calc_second_order: bool = True, num_resamples: int = 100,
            conf_level: float = 0.95, seed=None, *, output_names=None,
            chunk_size: int | None = None) -> "SobolResult":
    """Sobol' indices of every output column of ``Y``, equal to ``SALib.analyze.sobol.analyze``.

    ``Y`` (NumPy array or tensor) holds the model outputs in the row order of ``sample``:
    shape (rows,) for one output, or (rows, K...) for several, each analysed as SALib would
    analyse it alone. With the same ``seed`` (an int or Generator), the bootstrap uses SALib's
    resamples, so ``S1``, ``ST``, ``S2`` and their ``*_conf`` agree with SALib to rounding;
    ``seed=None`` draws from NumPy's global generator as SALib does (SALib also treats
    ``seed=0`` that way; here 0 is an ordinary seed). Indices assume independent inputs.

    Returns a ``SobolResult``: a dict of float64 tensors on ``Y``'s device (``lib.device()``
    for arrays), ``S1``, ``S1_conf``, ``ST``, ``ST_conf`` of shape (D, K...) and with second
    order ``S2``, ``S2_conf`` (D, D, K...), upper triangle, NaN elsewhere; ``to_df()`` and
    ``tidy()`` turn it into tables. See ``estimate_indices`` for the estimators and memory.
    """
    names = check_problem(problem)["names"]
    Y = _as_output_tensor(Y)
    _check_output_rows(Y, len(names), calc_second_order)
    _check_finite(Y)
    out_shape = tuple(Y.shape[1:])
    output_names = _output_names(out_shape, output_names)
    blocks = split_blocks(Y, len(names), calc_second_order)
    indices = estimate_indices(blocks, num_resamples=num_resamples, conf_level=conf_level,
                               seed=seed, chunk_size=chunk_size)
    return SobolResult(indices, names, output_names, out_shape)


class SobolResult(dict):
    """Sobol' indices (tensors, see ``analyze``) with the names needed to tabulate them."""

    def __init__(self, indices: dict, names: list, output_names: list, out_shape: tuple = ()):
        super().__init__(indices)
        self.names = list(names)
        self.output_names = list(output_names)
        self.out_shape = tuple(out_shape)

    def _values(self, key: str) -> np.ndarray:
        """``key`` for every output as a NumPy array (D, K) or (D, D, K)."""
        values = self[key].detach().cpu().numpy()
        leading = 2 if key.startswith("S2") else 1
        return values.reshape(values.shape[:leading] + (-1,))

    def output_index(self, output) -> int:
        """The flat position of ``output`` (an index or a name; None when there is one)."""
        if output is None:
            if len(self.output_names) > 1:
                raise ValueError(f"this result has {len(self.output_names)} outputs; choose "
                                 f"one with output=<index or name>: {self.output_names[:10]}")
            return 0
        if isinstance(output, str):
            if output not in self.output_names:
                raise ValueError(f"unknown output {output!r}; valid: {self.output_names[:10]}")
            return self.output_names.index(output)
        return int(output)

    def to_df(self, output=None) -> list:
        """SALib's tables for one output: [total (ST, ST_conf), first (S1, S1_conf), second]."""
        k = self.output_index(output)
        frames = [pd.DataFrame({key: self._values(key)[:, k] for key in keys}, index=self.names)
                  for keys in (("ST", "ST_conf"), ("S1", "S1_conf"))]
        if "S2" in self:
            first, second = np.triu_indices(len(self.names), 1)
            index = [(self.names[i], self.names[j]) for i, j in zip(first, second)]
            frames.append(pd.DataFrame({key: self._values(key)[first, second, k]
                                        for key in ("S2", "S2_conf")}, index=index))
        return frames

    def tidy(self) -> pd.DataFrame:
        """One row per output and index: output, index (S1/ST/S2), input, input_2, value, conf.

        ``input_2`` is the second input of a pair (S2), None for S1 and ST.
        """
        names = np.array(self.names, dtype=object)
        first, second = np.triu_indices(len(names), 1)
        parts = []
        for key in ("S1", "ST", "S2"):
            if key not in self:
                continue
            value, conf = self._values(key), self._values(key + "_conf")
            inputs, inputs_2 = names, np.full(len(names), None)
            if key == "S2":
                value, conf = value[first, second], conf[first, second]
                inputs, inputs_2 = names[first], names[second]
            count, K = value.shape
            parts.append(pd.DataFrame({
                "k": np.repeat(np.arange(K), count), "index": key,
                "input": np.tile(inputs, K), "input_2": np.tile(inputs_2, K),
                "value": value.T.ravel(), "conf": conf.T.ravel()}))
        table = pd.concat(parts).sort_values("k", kind="stable")
        outputs = np.array(self.output_names, dtype=object)[table.pop("k").to_numpy()]
        table.insert(0, "output", outputs)
        return table.reset_index(drop=True)
