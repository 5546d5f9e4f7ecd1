"""Test functions whose Sobol' indices are known in closed form, and checks of estimates on them.

Ishigami and Sobol's G-function: each takes a design ``X`` of shape (rows, D), as a NumPy
array or a torch tensor (on any device), and returns one value per row of the same kind. ``*_problem`` gives the input
space in SALib's problem format and ``*_indices`` the exact ``S1``, ``ST`` and ``S2`` (a D x D
array holding the pairs i < j in its upper triangle, NaN elsewhere, as ``lib.kernels.sobol.analyze``).
``compare`` and ``convergence`` set estimates from ``lib.sobol`` against the exact values.
"""
import math

import numpy as np
import pandas as pd
import torch

from . import sobol

ISHIGAMI_A = 7.0
ISHIGAMI_B = 0.1
# Saltelli et al.'s Primer choice: two important inputs, two moderate, four negligible.
G_FUNCTION_A = (0.0, 1.0, 4.5, 9.0, 99.0, 99.0, 99.0, 99.0)


def _xp(X):
    """The array namespace of ``X``: torch for tensors, NumPy otherwise."""
    return torch if isinstance(X, torch.Tensor) else np


def _pairs_matrix(D: int, value) -> np.ndarray:
    """A D x D array with ``value(i, j)`` above the diagonal and NaN elsewhere."""
    S2 = np.full((D, D), np.nan)
    for i in range(D):
        for j in range(i + 1, D):
            S2[i, j] = value(i, j)
    return S2


def ishigami_problem() -> dict:
    """Three independent inputs, each uniform on [-pi, pi]."""
    return {"num_vars": 3, "names": ["x1", "x2", "x3"], "bounds": [[-math.pi, math.pi]] * 3}


def ishigami(X, a: float = ISHIGAMI_A, b: float = ISHIGAMI_B):
    """f(x) = sin x1 + a sin^2 x2 + b x3^4 sin x1 (Ishigami and Homma, 1990)."""
    xp = _xp(X)
    sin_x1 = xp.sin(X[:, 0])
    return sin_x1 + a * xp.sin(X[:, 1]) ** 2 + b * X[:, 2] ** 4 * sin_x1


def ishigami_indices(a: float = ISHIGAMI_A, b: float = ISHIGAMI_B) -> dict:
    """Exact S1, ST and S2 of the Ishigami function.

    Partial variances: V1 = (1 + b pi^4 / 5)^2 / 2, V2 = a^2 / 8, V3 = 0, and the only
    interaction V13 = 8 b^2 pi^8 / 225.
    """
    pi4 = math.pi ** 4
    V1 = 0.5 * (1 + b * pi4 / 5) ** 2
    V2 = a ** 2 / 8
    V13 = 8 * b ** 2 * pi4 ** 2 / 225
    V = V1 + V2 + V13
    S2 = np.full((3, 3), np.nan)
    S2[0, 1], S2[0, 2], S2[1, 2] = 0.0, V13 / V, 0.0
    return {"S1": np.array([V1, V2, 0.0]) / V,
            "ST": np.array([V1 + V13, V2, V13]) / V,
            "S2": S2}


def g_function_problem(a=G_FUNCTION_A) -> dict:
    """``len(a)`` independent inputs, each uniform on [0, 1]."""
    return {"num_vars": len(a), "names": [f"x{i + 1}" for i in range(len(a))],
            "bounds": [[0.0, 1.0]] * len(a)}


def g_function(X, a=G_FUNCTION_A):
    """Sobol's G-function: prod_i (|4 x_i - 2| + a_i) / (1 + a_i); small a_i = important x_i."""
    xp = _xp(X)
    a = xp.asarray(a, dtype=X.dtype) if xp is np else torch.as_tensor(a, dtype=X.dtype,
                                                                        device=X.device)
    factors = 4 * X  # then in place: the same operations, without their temporaries
    factors -= 2
    xp.abs(factors, out=factors)
    factors += a
    factors /= 1 + a
    return xp.prod(factors, axis=1)


def g_function_indices(a=G_FUNCTION_A) -> dict:
    """Exact S1, ST and S2 of the G-function.

    Each factor has mean 1 and variance V_i = 1 / (3 (1 + a_i)^2); the output variance is
    V = prod_i (1 + V_i) - 1, and an interaction's partial variance is the product of its V_i.
    """
    Vi = 1.0 / (3.0 * (1.0 + np.asarray(a, dtype=float)) ** 2)
    V = np.prod(1 + Vi) - 1
    ST = np.array([Vi[i] * np.prod(np.delete(1 + Vi, i)) for i in range(len(Vi))]) / V
    return {"S1": Vi / V, "ST": ST, "S2": _pairs_matrix(len(Vi), lambda i, j: Vi[i] * Vi[j] / V)}


def _exact_value(exact: dict, names: list, row) -> float:
    i = names.index(row.input)
    if row.index == "S2":
        return float(exact["S2"][i, names.index(row.input_2)])
    return float(exact[row.index][i])


def compare(result, exact: dict, output=None) -> pd.DataFrame:
    """Estimated against exact indices, one row per index of one output of ``result``.

    Columns: index (S1, ST, S2), input, input_2 (second input of a pair), exact, estimate,
    conf (the confidence half-width), error (|estimate - exact|) and inside (error <= conf).
    """
    table = result.tidy()
    table = table[table["output"] == result.output_names[result.output_index(output)]]
    exact_values = [_exact_value(exact, result.names, row) for row in table.itertuples()]
    table = table.drop(columns="output").rename(columns={"value": "estimate"})
    table.insert(3, "exact", exact_values)
    table["error"] = (table["estimate"] - table["exact"]).abs()
    table["inside"] = table["error"] <= table["conf"]
    return table.reset_index(drop=True)


def convergence(problem, f, exact: dict, log2_sizes, *, seed: int = 0,
                num_resamples: int = 100, conf_level: float = 0.95) -> pd.DataFrame:
    """Errors and interval widths of the estimates of ``f``'s indices as N grows.

    One row per N = 2^m for m in ``log2_sizes``: N, the model runs, the largest and the mean
    absolute error over all indices, the mean confidence half-width and the share of indices
    whose interval holds the exact value. Each N has its own design (``seed``).
    """
    rows = []
    for log2_n in log2_sizes:
        X = sobol.sample(problem, 2 ** log2_n, seed=seed)
        result = sobol.analyze(problem, sobol.evaluate(f, X), num_resamples=num_resamples,
                               conf_level=conf_level, seed=seed)
        table = compare(result, exact)
        rows.append({"N": 2 ** log2_n, "model_runs": len(X),
                     "max_error": table["error"].max(), "mean_error": table["error"].mean(),
                     "mean_conf": table["conf"].mean(), "share_inside": table["inside"].mean()})
    return pd.DataFrame(rows)
