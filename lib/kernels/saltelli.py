"""Saltelli designs in SALib's language: the problem dict, its input distributions, the design.

A problem dict has ``num_vars``, ``names``, ``bounds`` and optional ``dists``, as in SALib.
``sample`` builds the same Saltelli design as ``SALib.sample.sobol.sample``, row for row.

Design row layout (as SALib), for each of the N base rows: ``A``, ``AB_1 .. AB_D``
(``A`` with column i from ``B``), then with second order ``BA_1 .. BA_D`` (``B`` with column
i from ``A``), then ``B``: N (2D + 2) rows with second order, N (D + 2) without.

Inputs are always sampled independently, from their marginals: Sobol' indices decompose the
output variance over *independent* inputs.
"""
import numbers
import reprlib
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import qmc

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
    rows = len(columns[0]) if columns else 0
    if rows < len(columns):
        raise ValueError(f"data must have at least as many rows (observations) as columns "
                         f"(inputs) to serve as an input model; got {rows} rows for "
                         f"{len(columns)} inputs")
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
