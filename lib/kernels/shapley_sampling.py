"""Shapley effects of any model of Gaussian inputs by exact conditional sampling.

The double loop of Song, Nelson & Staum (2016): for each subset u, outer draws of X_u from
its marginal, each with a few inner draws of the other inputs from their exact conditional
law, estimate E[Var(Y | X_u)] without bias. Where the input law is known this is the
cross-check of the given-data estimator (``lib.kernels.shapley_given``).
"""
import numpy as np
import torch

from ..hardware import device as default_device
from ..progress import progress
from . import checks
from .shapley_games import (RESAMPLE_BUDGET_BYTES, ShapleyResult,
                            _check_covariance, _check_dimension, _check_names,
                            _check_num_resamples, _check_output_names, _check_seed,
                            _multinomial_counts, _percentile_result, _subset_inputs,
                            _weighted_variance, shapley_weights)


def _model_outputs(model, X: torch.Tensor, batch_rows: int, what: str) -> torch.Tensor:
    """``model`` on the rows of X in batches -> (rows, M) float64 on X's device."""
    parts = []
    for start in range(0, X.shape[0], batch_rows):
        chunk = X[start:start + batch_rows]
        with torch.no_grad():
            values = torch.as_tensor(model(chunk), device=X.device).to(torch.float64)
        if values.ndim not in (1, 2) or values.shape[0] != chunk.shape[0]:
            raise ValueError(f"the model returned shape {tuple(values.shape)} for "
                             f"{chunk.shape[0]} rows; it must return (rows,) or (rows, M)")
        parts.append(values.reshape(chunk.shape[0], -1))
    Y = torch.cat(parts)
    bad = ~torch.isfinite(Y)
    if bad.any():
        row, output = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"the model returned NaN or inf for {what}: sample row {row}, output "
                         f"{output}, input {X[row].tolist()}")
    return Y

def _conditional_law(mean: torch.Tensor, cov: torch.Tensor, given: list, rest: list) -> tuple:
    """X_rest | X_given = x ~ N(mean_rest + slope (x - mean_given), root root^T)."""
    slope = torch.linalg.solve(cov[given][:, given], cov[given][:, rest]).T
    conditional = cov[rest][:, rest] - slope @ cov[given][:, rest]
    conditional = (conditional + conditional.T) / 2
    values, vectors = torch.linalg.eigh(conditional)
    # eigh rather than Cholesky: near-collinear inputs leave a conditional covariance that
    # is positive semi-definite only up to rounding.
    root = vectors * values.clamp(min=0).sqrt()
    return slope, root

@torch.no_grad()
def conditional_sampling(model, mean, cov, *, n_outer: int = 4096, n_inner: int = 3,
                         n_var: int | None = None, names=None, output_names=None,
                         num_resamples: int = 1000, conf_level: float = 0.95, seed: int = 0,
                         device=None, dtype=None, batch_rows: int = 1 << 16) -> ShapleyResult:
    """Shapley effects of ``model`` for Gaussian inputs X ~ N(mean, cov), by exact sampling.

    For every subset u other than the empty and the full set, ``n_outer`` draws of X_u from
    its marginal each get ``n_inner`` draws of X_{-u} from the exact conditional law
    X_{-u} | X_u; the sample variance of the model over each inner group, averaged over the
    outer draws, estimates E[Var(Y | X_u)] without bias (Song, Nelson & Staum 2016, who show
    that few inner draws, e.g. 3, use a budget best). Var(Y) comes from ``n_var`` further
    independent draws (default n_outer * n_inner). Cost: (2^d - 2) n_outer n_inner + n_var
    model rows. Subsets draw independently of each other.

    ``model`` maps a (rows, d) tensor on ``device`` in ``dtype`` (defaults: those of a
    module's parameters, else ``lib.device()`` and float64) to (rows,) or (rows, M) outputs,
    ``batch_rows`` rows at a time. The model must be deterministic: E[Var(Y | X)] is taken
    as 0.

    Intervals: ``num_resamples`` bootstrap resamples of the outer draws (the same resample for
    every subset) and of the variance draws; percentile bounds at ``conf_level``. Seeded by
    ``seed``. Returns a ShapleyResult of (d, M) effects that sum to 1 per output.
    """
    mean = torch.as_tensor(np.asarray(mean, dtype=float))
    cov_np = np.asarray(cov, dtype=float)
    if mean.ndim != 1:
        raise ValueError(f"mean must be a vector of d values; got shape {tuple(mean.shape)}")
    d = mean.numel()
    _check_dimension(d)
    if not torch.isfinite(mean).all():
        raise ValueError("mean must be finite (no NaN or inf)")
    cov_np = _check_covariance(cov_np, d)
    names = _check_names(names, d)
    n_outer = checks.integer("n_outer", n_outer, 2)
    n_inner = checks.integer("n_inner", n_inner, 2)
    n_var = n_outer * n_inner if n_var is None else checks.integer("n_var", n_var, 2)
    batch_rows = checks.integer("batch_rows", batch_rows)
    num_resamples = _check_num_resamples(num_resamples)
    conf_level = checks.confidence_level(conf_level)
    seed = _check_seed(seed)
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if device is None:
        device = param.device if param is not None else default_device()
    if dtype is None:
        dtype = param.dtype if param is not None and param.is_floating_point() \
            else torch.float64
    dev = torch.device(device)
    mean = mean.to(dev, dtype)
    cov = torch.as_tensor(cov_np, device=dev, dtype=dtype)
    generator = torch.Generator(dev).manual_seed(seed)
    W = torch.as_tensor(shapley_weights(d), device=dev, dtype=torch.float64)
    full = 2 ** d - 1

    def normal(rows, cols):
        return torch.randn(rows, cols, generator=generator, device=dev, dtype=dtype)

    root = torch.linalg.cholesky(cov)
    Y_var = _model_outputs(model, mean + normal(n_var, d) @ root.T, batch_rows,
                           "the variance sample").T  # (M, n_var)
    M = Y_var.shape[0]
    output_names = _check_output_names(output_names, M)
    variance = Y_var.var(dim=1)
    if (variance == 0).any():
        raise ValueError(f"output {int((variance == 0).nonzero()[0])} is constant under the "
                         f"input law; its Shapley effects are undefined")
    influence = torch.zeros(d, M, n_outer, dtype=torch.float64, device=dev)
    conditional = torch.zeros(2 ** d, M, dtype=torch.float64, device=dev)
    conditional[0] = variance
    for u in progress(range(1, full), desc="Shapley subsets", unit="subset", leave=False):
        given, rest = _subset_inputs(u, d), _subset_inputs(full ^ u, d)
        slope, cond_root = _conditional_law(mean, cov, given, rest)
        outer = (mean + normal(n_outer, d) @ root.T)[:, given]  # X_u from its marginal
        centre = mean[rest] + (outer - mean[given]) @ slope.T
        inner = centre[:, None, :] + (normal(n_outer * n_inner, len(rest)) @ cond_root.T) \
            .reshape(n_outer, n_inner, len(rest))
        X = torch.empty(n_outer, n_inner, d, device=dev, dtype=dtype)
        X[:, :, given] = outer[:, None, :]
        X[:, :, rest] = inner
        Y = _model_outputs(model, X.reshape(-1, d), batch_rows, f"subset {given}")
        if Y.shape[1] != M:
            raise ValueError(f"the model returned {Y.shape[1]} outputs for subset {given} but "
                             f"{M} for the variance sample")
        within = Y.reshape(n_outer, n_inner, M).var(dim=1).T  # (M, n_outer)
        conditional[u] = within.mean(dim=1)
        influence -= W[:, u, None, None] * within
    # Sh_j = -sum_u W[j, u] E[Var(Y | X_u)], with E[Var(Y | X_empty)] = Var(Y) and 0 for all.
    point = -(W[:, :full] @ conditional[:full])
    closed = 1 - conditional / variance
    resamples = torch.empty(d, num_resamples, M, dtype=torch.float64, device=dev)
    step = max(1, RESAMPLE_BUDGET_BYTES // (8 * (n_outer + n_var)))
    for start in range(0, num_resamples, step):
        b = min(step, num_resamples - start)
        outer_counts = _multinomial_counts(b, n_outer, generator, dev)
        var_counts = _multinomial_counts(b, n_var, generator, dev)
        var_star = _weighted_variance(Y_var, var_counts, n_var)  # (b, M)
        sh = torch.einsum("bo,jmo->jbm", outer_counts, influence) / n_outer \
            - W[:, 0, None, None] * var_star
        resamples[:, start:start + b] = sh / var_star
    return _percentile_result(point / variance, resamples, variance, closed, names,
                              output_names, conf_level, np.full(M, n_outer), "conditional")
