"""Intervals for Sobol' indices from independent scramblings of the design (randomised QMC).

A scrambled Sobol' design integrates smooth functions with errors well below those of
independent samples. The bootstrap of ``lib.kernels.sobol`` resamples the design's rows as if
they were independent draws, so its intervals have the width of a Monte Carlo error and do
not know about the design. Randomised quasi-Monte Carlo (Owen 1997; L'Ecuyer & Lemieux 2002)
measures the error the design really has: R independent scramblings give R independent,
identically distributed estimates of every index, and their mean comes with a Student-t
interval on R - 1 degrees of freedom, mean -/+ t_{(1+c)/2, R-1} s / sqrt(R).

``analyze`` computes the RQMC estimates and intervals of a model; ``coverage`` repeats both
kinds of interval many times on a function whose indices are known and counts how often each
holds the exact value, for a range of N, every design and index at once.
"""

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import checks
from .saltelli import check_problem, rows_per_base_sample, scale_to_inputs, unit_design
from .sobol import evaluate
from .sobol_estimators import estimate_indices, point_indices, split_blocks

# Bytes of model outputs (rows x designs, float64) analysed at once in ``coverage``.
OUTPUT_BUDGET_BYTES = 1 << 27
# Bytes of design points (designs x rows x D, float64) built and evaluated at once.
DESIGN_BUDGET_BYTES = 1 << 25


def interval(estimates, conf_level: float = 0.95, axis: int = 0) -> tuple:
    """Mean and Student-t half-width over ``axis`` of independent replicate estimates.

    (mean, t_{(1+c)/2, R-1} * std(ddof 1) / sqrt(R)) for R >= 2 replicates: the interval
    holds the expectation of one replicate with probability ``conf_level`` when the
    replicates are independent and normal, and about that for other laws as R grows.
    Accepts NumPy arrays and tensors; returns the same kind.
    """
    conf_level = checks.confidence_level(conf_level)
    R = estimates.shape[axis]
    if R < 2:
        raise ValueError(f"need at least 2 replicates along axis {axis}; got {R}")
    quantile = float(stats.t.ppf(0.5 + conf_level / 2, R - 1))
    if isinstance(estimates, torch.Tensor):
        std, mean = torch.std_mean(estimates, dim=axis, correction=1)
    else:
        estimates = np.asarray(estimates, dtype=float)
        mean, std = estimates.mean(axis), estimates.std(axis=axis, ddof=1)
    return mean, quantile * std / R ** 0.5


def replicate_seeds(seed, replicates: int) -> list:
    """``replicates`` independent generators for the scramblings, from one ``seed``."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(replicates)]


def replicate_designs(problem, N: int, replicates: int, *, calc_second_order: bool = True,
                      seed=0) -> np.ndarray:
    """(replicates, N * rows per base sample, D): Saltelli designs of independent scramblings.

    Each is ``lib.kernels.saltelli.sample``'s design with its own scrambling of the Sobol'
    sequence; the seeds are spawned from ``seed`` (``replicate_seeds``).
    """
    problem = check_problem(problem)
    checks.integer("N", N, 2)
    checks.integer("replicates", replicates, 2)
    D = problem["num_vars"]
    designs = np.empty((replicates, N * rows_per_base_sample(D, calc_second_order), D))
    for r, generator in enumerate(replicate_seeds(seed, replicates)):
        designs[r] = scale_to_inputs(unit_design(D, N, calc_second_order, generator), problem)
    return designs


def _outputs(problem, f, N: int, generators, calc_second_order: bool) -> torch.Tensor:
    """``f`` on the Saltelli design of every scrambling in ``generators``: (rows, designs).

    The designs are built and evaluated a group at a time, in one reused buffer of at most
    ``DESIGN_BUDGET_BYTES``, so that many designs never sit in memory together.
    """
    D = problem["num_vars"]
    rows = N * rows_per_base_sample(D, calc_second_order)
    group = max(1, min(len(generators), DESIGN_BUDGET_BYTES // (8 * rows * D)))
    buffer = np.empty((group, rows, D))
    Y = None
    for start in range(0, len(generators), group):
        part = generators[start:start + group]
        for i, generator in enumerate(part):
            buffer[i] = scale_to_inputs(unit_design(D, N, calc_second_order, generator),
                                        problem)
        values = evaluate(f, buffer[:len(part)].reshape(-1, D)).to(torch.float64)
        if Y is None:
            Y = torch.empty(rows, len(generators), dtype=torch.float64, device=values.device)
        Y[:, start:start + len(part)] = values.reshape(len(part), rows).T
    return Y


def analyze(problem, f, N: int, replicates: int = 8, *, calc_second_order: bool = True,
            conf_level: float = 0.95, seed=0) -> dict:
    """Sobol' indices of ``f`` from ``replicates`` independently scrambled designs of N.

    ``f`` is evaluated as ``lib.kernels.sobol.evaluate`` does (a vectorised function or
    module, one output per row). Returns float64 tensors: ``S1``, ``ST`` (D,) and with
    second order ``S2`` (D, D, pairs above the diagonal) as the mean over the replicates,
    ``*_conf`` their Student-t half-widths at ``conf_level``, and ``replicates`` holding each
    replicate's estimates, {key: (R, ...)}. The model runs R N (2D + 2) times with second
    order, R N (D + 2) without.
    """
    problem = check_problem(problem)
    checks.integer("N", N, 2)
    generators = replicate_seeds(seed, checks.integer("replicates", replicates, 2))
    Y = _outputs(problem, f, N, generators, calc_second_order)
    estimates = point_indices(split_blocks(Y, problem["num_vars"], calc_second_order))
    result = {"replicates": {}}
    for key, values in estimates.items():
        values = values.movedim(-1, 0)  # (R, D[, D])
        result[key], result[key + "_conf"] = interval(values, conf_level)
        result["replicates"][key] = values
    return result


def _exact_array(exact: dict, keys) -> dict:
    return {key: np.asarray(exact[key], dtype=float) for key in keys}


def coverage(problem, f, exact: dict, log2_sizes, *, replicates: int = 8,
             repetitions: int = 50, num_resamples: int = 100, conf_level: float = 0.95,
             calc_second_order: bool = False, seed: int = 0) -> pd.DataFrame:
    """How often bootstrap and RQMC intervals hold the exact indices, for N = 2^m.

    Each of ``repetitions`` experiments draws ``replicates`` independent scramblings of a
    design of N base samples. ``bootstrap``: the first design alone, with SALib's bootstrap
    interval (``num_resamples`` resamples); ``RQMC``: the mean of all the designs with its
    Student-t interval (``interval``), at ``replicates`` times the cost. ``exact`` holds the
    true ``S1``, ``ST`` (and ``S2`` with ``calc_second_order``). Every design of one N is
    analysed at once, chunked to ``OUTPUT_BUDGET_BYTES``.

    Returns one row per (N, method): N, method, coverage (share of intervals, over all
    repetitions and indices, that hold the exact value), mean_half_width, mean_error (mean
    |estimate - exact|), intervals (how many were counted) and model_runs per interval.
    """
    problem = check_problem(problem)
    replicates = checks.integer("replicates", replicates, 2)
    repetitions = checks.integer("repetitions", repetitions, 1)
    conf_level = checks.confidence_level(conf_level)
    keys = ("S1", "ST", "S2") if calc_second_order else ("S1", "ST")
    truth = _exact_array(exact, keys)
    D = problem["num_vars"]
    rows = []
    for log2_n in log2_sizes:
        N = 2 ** checks.integer("log2 of N", log2_n, 1)
        run_rows = N * rows_per_base_sample(D, calc_second_order)
        per_chunk = max(1, OUTPUT_BUDGET_BYTES // (8 * run_rows * replicates))
        tallies = {"bootstrap": [], "RQMC": []}
        for start in range(0, repetitions, per_chunk):
            count = min(per_chunk, repetitions - start)
            generators = replicate_seeds([seed, log2_n, start], replicates * count)
            Y = _outputs(problem, f, N, generators, calc_second_order)  # (rows, designs)
            estimates = point_indices(split_blocks(Y, D, calc_second_order))
            boot = estimate_indices(split_blocks(Y[:, ::replicates], D, calc_second_order),
                                    num_resamples=num_resamples, conf_level=conf_level,
                                    seed=int(np.random.SeedSequence([seed, log2_n, start])
                                             .generate_state(1)[0]))
            for key in keys:
                values = estimates[key].cpu().numpy()
                values = values.reshape(values.shape[:-1] + (count, replicates))
                mean, half = interval(values, conf_level, axis=-1)
                single, single_half = values[..., 0], boot[key + "_conf"].cpu().numpy()
                for method, est, width in (("bootstrap", single, single_half),
                                           ("RQMC", mean, half)):
                    known = ~np.isnan(truth[key])
                    error = np.abs(est - truth[key][..., None])[known]
                    tallies[method].append((error.ravel() <= width[known].ravel(),
                                            width[known].ravel(), error.ravel()))
        for method, parts in tallies.items():
            held, width, error = (np.concatenate([p[i] for p in parts]) for i in range(3))
            cost = replicates if method == "RQMC" else 1
            rows.append({"N": N, "method": method, "coverage": held.mean(),
                         "mean_half_width": width.mean(), "mean_error": error.mean(),
                         "intervals": held.size, "model_runs": cost * run_rows})
    return pd.DataFrame(rows)


def below_level(table: pd.DataFrame, conf_level: float = 0.95) -> pd.Series:
    """Rows of a ``coverage`` table whose coverage is below ``conf_level`` by more than two
    binomial standard errors sqrt(c (1 - c) / intervals): more than counting noise."""
    conf_level = checks.confidence_level(conf_level)
    noise = 2 * np.sqrt(conf_level * (1 - conf_level) / table["intervals"])
    return table["coverage"] < conf_level - noise


def coverage_verdict(table: pd.DataFrame, method: str, conf_level: float = 0.95) -> str:
    """Where the intervals of ``method`` fall short of their level, in words.

    ``table``: ``coverage``'s rows, optionally for several functions (a ``function``
    column names each); "below" means ``below_level``.
    """
    rows = table[table["method"] == method]
    if rows.empty:
        raise ValueError(f"no rows of method {method!r}; methods: "
                         f"{sorted(set(table['method']))}")
    short = rows[below_level(rows, conf_level)]
    if short.empty:
        return "at or above their nominal level at every N"
    where = [f"{row.function} at N = {row.N}" if "function" in rows else f"N = {row.N}"
             for row in short.itertuples()]
    return "below their nominal level for " + ", ".join(where)
