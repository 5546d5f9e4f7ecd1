"""The shared part of the Shapley-effect estimators: argument checks, the Shapley weights of
a game over all 2^d subsets, the result type with its percentile intervals, bootstrap counts,
and the closed form for linear models of Gaussian inputs.

Subsets are bitmasks: bit j set means input j is in the subset (0 = the empty set, 2^d - 1 =
all inputs). ``lib.kernels.shapley`` explains the method and gathers the public functions.
"""
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from . import checks

# Exact enumeration visits 2^d subsets; 12 inputs (4096 subsets) keeps every estimator here
# within minutes and memory within reach; beyond, a permutation sampler would be needed.
MAX_INPUTS = 12
# Bytes of bootstrap counts (resamples x models x rows) held at once.
RESAMPLE_BUDGET_BYTES = 1 << 26


# --------------------------------------------------------------------------------- checks


def _check_num_resamples(num_resamples) -> int:
    return checks.integer("num_resamples", num_resamples, 0)

def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    return int(seed)

def _check_dimension(d: int) -> None:
    if d < 1:
        raise ValueError("there must be at least one input (d >= 1); got d = 0")
    if d > MAX_INPUTS:
        raise ValueError(f"d = {d} inputs exceed the limit of MAX_INPUTS = {MAX_INPUTS} for "
                         f"the exact enumeration of all 2^d subsets ({2 ** d} here); group "
                         f"inputs or reduce them first")

def _check_names(names, d: int) -> list:
    if names is None:
        return [f"x{i + 1}" for i in range(d)]
    names = [str(n) for n in names]
    if len(names) != d or len(set(names)) != d:
        raise ValueError(f"names must hold {d} distinct names (one per input); got {names!r}")
    return names

def _check_output_names(output_names, M: int) -> list:
    if output_names is None:
        return [f"y{m}" for m in range(M)] if M > 1 else ["y"]
    output_names = [str(n) for n in output_names]
    if len(output_names) != M or len(set(output_names)) != M:
        raise ValueError(f"output_names must hold {M} distinct names (one per output); got "
                         f"{output_names!r}")
    return output_names


# ------------------------------------------------------------------------ Shapley weights

def shapley_weights(d: int) -> np.ndarray:
    """The (d, 2^d) matrix W with Sh = W @ c for any game c over the subsets (bitmask order).

    W[j, u] = |u - j|! (d - |u - j| - 1)! / d! if j is in u, and -|u|! (d - |u| - 1)! / d!
    if not: each subset's worth enters the effect of j with the weight of the orders in which
    j joins exactly the other members of u (plus sign) or joins u (minus sign). Every row
    sums to 0, so Sh is unchanged by adding a constant to c.
    """
    d = checks.integer("d", d)
    _check_dimension(d)
    masks = np.arange(2 ** d)
    sizes = np.array([bin(u).count("1") for u in masks])
    weight = np.array([1.0 / (d * math.comb(d - 1, s)) for s in range(d)])
    W = np.empty((d, masks.size))
    for j in range(d):
        inside = (masks >> j) & 1 == 1
        W[j, inside] = weight[sizes[inside] - 1]
        W[j, ~inside] = -weight[sizes[~inside]]
    return W

def _subset_inputs(u: int, d: int) -> list:
    return [j for j in range(d) if u >> j & 1]


# --------------------------------------------------------------------------------- result

@dataclass(frozen=True)
class ShapleyResult:
    """Normalised Shapley effects of d inputs for M outputs, with percentile intervals.

    ``effects``, ``low``, ``high``: (d, M) float64; each column of ``effects`` sums to 1.
    ``low``/``high`` bound the ``conf_level`` percentile interval of the bootstrap resamples
    (NaN when ``num_resamples`` was 0). ``variance``: Var(Y) per output (M,). ``closed``:
    (2^d, M) the closed Sobol' index Var(E[Y | X_u]) / Var(Y) of every subset u (bitmask
    row; row 2^j is input j alone, its first-order index under dependence). ``resamples``:
    (d, B, M) the bootstrap effects, for summaries across outputs. ``rows``: (M,) the rows
    (or outer samples) behind each output's estimate.
    """
    effects: np.ndarray
    low: np.ndarray
    high: np.ndarray
    names: list
    output_names: list
    conf_level: float
    variance: np.ndarray
    closed: np.ndarray
    resamples: np.ndarray
    rows: np.ndarray
    method: str

    def output_index(self, output) -> int:
        """The column of ``output``, given as an index or a name."""
        if isinstance(output, str):
            if output not in self.output_names:
                raise ValueError(f"unknown output {output!r}; valid: {self.output_names[:10]}")
            return self.output_names.index(output)
        M = len(self.output_names)
        if isinstance(output, bool) or not isinstance(output, numbers.Integral) \
                or not -M <= output < M:
            raise ValueError(f"output must be a name or an index in [0, {M}); got {output!r}")
        return int(output) % M

    def to_frame(self, output=None):
        """A pandas DataFrame with one row per input.

        Columns ``Sh``, ``Sh_low``, ``Sh_high`` for one output (``output`` an index or a name,
        or None when there is one output); with several outputs and ``output=None``, the same
        three columns under each output name (a two-level column index).
        """
        import pandas as pd  # only here: the kernels themselves need no pandas

        def one(k):
            return pd.DataFrame({"Sh": self.effects[:, k], "Sh_low": self.low[:, k],
                                 "Sh_high": self.high[:, k]}, index=pd.Index(self.names))
        if output is not None or len(self.output_names) == 1:
            return one(0 if output is None else self.output_index(output))
        return pd.concat({name: one(k) for k, name in enumerate(self.output_names)}, axis=1)

    def tidy(self):
        """A long pandas DataFrame: output, input, Sh, Sh_low, Sh_high (one row per pair)."""
        import pandas as pd

        d, M = self.effects.shape
        return pd.DataFrame({"output": np.repeat(self.output_names, d),
                             "input": np.tile(self.names, M),
                             "Sh": self.effects.T.ravel(), "Sh_low": self.low.T.ravel(),
                             "Sh_high": self.high.T.ravel()})

def _percentile_result(point, resamples, variance, closed, names, output_names, conf_level,
                       rows, method) -> ShapleyResult:
    """Effects (d, M), bootstrap effects (d, B, M) -> a ShapleyResult with percentile bounds."""
    if resamples.shape[1] > 0:
        tail = (1 - conf_level) / 2
        bounds = torch.quantile(resamples, torch.tensor([tail, 1 - tail], dtype=resamples.dtype,
                                                        device=resamples.device), dim=1)
        low, high = bounds[0].cpu().numpy(), bounds[1].cpu().numpy()
    else:
        low = high = np.full(tuple(point.shape), np.nan)
    return ShapleyResult(point.cpu().numpy(), low, high, names, output_names, conf_level,
                         variance.cpu().numpy(), closed.cpu().numpy(), resamples.cpu().numpy(),
                         np.asarray(rows), method)


# ------------------------------------------------------------------------------ bootstrap

def _multinomial_counts(b: int, n: int, generator, dev) -> torch.Tensor:
    """(b, n) float64 counts of n rows drawn with replacement from n, b times."""
    draws = torch.randint(n, (b, n), generator=generator, device=dev)
    counts = torch.zeros(b, n, dtype=torch.float64, device=dev)
    return counts.scatter_add_(1, draws, torch.ones(b, n, dtype=torch.float64, device=dev))

def _weighted_variance(Y: torch.Tensor, counts: torch.Tensor, n) -> torch.Tensor:
    """Var of each column of Y (M, rows) under bootstrap counts (B, [M,] rows), ddof 1."""
    counts = counts if counts.ndim == 3 else counts[:, None, :]
    mean = (counts * Y).sum(-1) / n
    return (counts * (Y - mean[..., None]) ** 2).sum(-1) / (n - 1)


# ---------------------------------------------------------------------------- closed form

def _check_covariance(cov, d: int) -> np.ndarray:
    cov = np.asarray(cov, dtype=float)
    if cov.shape != (d, d):
        raise ValueError(f"cov must be a ({d}, {d}) covariance matrix for {d} inputs; got "
                         f"shape {cov.shape}")
    if not np.isfinite(cov).all():
        raise ValueError("cov must be finite (no NaN or inf)")
    if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * np.abs(cov).max()):
        raise ValueError("cov must be symmetric")
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("cov must be positive definite (a singular covariance makes some "
                         "conditional laws degenerate)") from None
    return cov

def _check_linear_gaussian(beta, cov) -> tuple:
    beta = np.asarray(beta, dtype=float)
    if beta.ndim != 1:
        raise ValueError(f"beta must be a vector of d coefficients; got shape {beta.shape}")
    _check_dimension(beta.size)
    if not np.isfinite(beta).all():
        raise ValueError("beta must be finite (no NaN or inf)")
    cov = _check_covariance(cov, beta.size)
    if beta @ cov @ beta <= 0:
        raise ValueError("Var(Y) = beta^T cov beta is 0: every effect is undefined")
    return beta, cov

def linear_gaussian_explained(beta, cov) -> np.ndarray:
    """c(u) = Var(E[Y | X_u]) for every subset u (bitmask order), Y = beta^T X, X ~ N(mu, cov).

    E[Y | X_u] is linear in X_u with slope cov_{uu}^-1 (cov beta)_u, so c(u) =
    (cov beta)_u^T cov_{uu}^-1 (cov beta)_u; c(empty) = 0 and c(all) = beta^T cov beta. The
    mean mu plays no part. Returns (2^d,) float64.
    """
    beta, cov = _check_linear_gaussian(beta, cov)
    d = beta.size
    covariance_with_y = cov @ beta
    explained = np.zeros(2 ** d)
    for u in range(1, 2 ** d):
        inputs = _subset_inputs(u, d)
        b = covariance_with_y[inputs]
        explained[u] = b @ np.linalg.solve(cov[np.ix_(inputs, inputs)], b)
    return explained

def linear_gaussian(beta, cov, normalize: bool = True) -> np.ndarray:
    """Exact Shapley effects (d,) of Y = beta^T X for X ~ N(mu, cov), any d <= MAX_INPUTS.

    ``normalize``: divided by Var(Y) = beta^T cov beta (they then sum to 1); else in units of
    Var(Y). ``cov`` must be symmetric positive definite.
    """
    explained = linear_gaussian_explained(beta, cov)
    effects = shapley_weights(np.asarray(beta).size) @ explained
    return effects / explained[-1] if normalize else effects
