"""Which inputs the networks use: permutation importance, |gradient x input|, and the input
models, indices and rankings of the Sobol analysis over all fold networks."""
import math

import numpy as np
import pandas as pd
import torch

from ..kernels import checks
from .ensemble import MLPEnsemble
from .stats import METRICS, binary_metrics
from .table import FEATURES


def _permutations_within(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per model, a row permutation (M, n) that shuffles its masked rows among themselves."""
    M, n = rows.shape
    keys = torch.rand(M, n, generator=generator, dtype=torch.float64).to(rows.device)
    index = torch.arange(n, device=rows.device, dtype=torch.float64).expand(M, n)
    # Unmasked rows get key inf in both sorts, so a stable sort lists them identically.
    shuffled = torch.where(rows, keys, math.inf).argsort(dim=1, stable=True)
    in_order = torch.where(rows, index, math.inf).argsort(dim=1, stable=True)
    return torch.empty_like(shuffled).scatter_(1, in_order, shuffled)


@torch.no_grad()
def permutation_importance(model: MLPEnsemble, X, y, rows, *, n_repeats: int = 5,
                           metric: str = "roc_auc", seed: int = 0) -> torch.Tensor:
    """Drop of ``metric`` when one feature is shuffled among each model's ``rows``, (M, D).

    Raw values are shuffled (missing ones included) and then preprocessed as usual; the drop
    is averaged over ``n_repeats`` shuffles. Every feature and model is scored in one batch.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    checks.integer("n_repeats", n_repeats, 1)
    M, (n, D) = model.num_models, X.shape
    base = binary_metrics(model.logits(X), y, rows)[metric]
    generator = torch.Generator().manual_seed(seed)
    one_hot = torch.eye(D, dtype=torch.bool, device=X.device)[:, None, :]  # (D, 1, D)
    drops = torch.zeros(M, D, dtype=torch.float64, device=X.device)
    for _ in range(n_repeats):
        shuffled = X[_permutations_within(rows, generator)]  # (M, n, D)
        # Copy j of the table has column j shuffled: (M, D, n, D) -> (M, D * n, D).
        copies = torch.where(one_hot, shuffled[:, None], X[None, None]).reshape(M, D * n, D)
        logits = model.logits(copies).reshape(M, D, n)
        drops += base[:, None] - binary_metrics(logits, y, rows[:, None, :])[metric]
    return drops / n_repeats


def gradient_x_input(model: MLPEnsemble, X, rows) -> torch.Tensor:
    """Mean |d p / d z_j * z_j| over each model's ``rows``, (M, D).

    ``z`` is the standardised input (so z = 0 is the training mean) and ``p`` the predicted
    probability: a feature scores high when the prediction is steep in it where the data lie.
    """
    Z = model.standardize(X).detach().requires_grad_(True)
    probability = torch.sigmoid(model.logits_from_inputs(Z))
    (grad,) = torch.autograd.grad(probability.sum(), Z)
    weights = rows.to(grad.dtype)[..., None]
    return ((grad * Z).abs() * weights).sum(1).detach() / weights.sum(1)


def input_models(frame: pd.DataFrame, features=FEATURES) -> dict:
    """Two SALib problems for the features, both with independent inputs.

    ``"uniform"``: each feature uniform over its observed range [min, max] (missing values
    ignored); ``"empirical"``: each feature drawn from its observed values (its empirical
    marginal, ``dists = "empirical"`` in ``lib.sobol``).
    """
    features = list(features)
    if len(frame) < len(features):
        raise ValueError(f"an input model of {len(features)} inputs needs at least as many "
                         f"rows; the table has {len(frame)}")
    observed = [frame[f].dropna().to_numpy(dtype=float) for f in features]
    empty = [f for f, v in zip(features, observed) if v.size == 0]
    if empty:
        raise ValueError(f"features {empty} have no observed value (all NaN)")
    uniform = {"num_vars": len(features), "names": features,
               "bounds": [[v.min(), v.max()] for v in observed], "dists": ["unif"] * len(features)}
    empirical = {"num_vars": len(features), "names": features, "bounds": observed,
                 "dists": ["empirical"] * len(features)}
    return {"uniform": uniform, "empirical": empirical}


def indices_over_models(result, spread: float = 0.95) -> pd.DataFrame:
    """S1 and ST of a multi-output Sobol result summarised over its outputs (the models).

    Per input: the mean over models, the central ``spread`` range across models (their
    quantiles) and the mean bootstrap half-width (Monte-Carlo error of one model's index).
    """
    columns = {}
    for key in ("S1", "ST"):
        values = result[key].reshape(len(result.names), -1).double().cpu()
        conf = result[key + "_conf"].reshape(len(result.names), -1).double().cpu()
        tail = (1 - spread) / 2
        columns[(key, "mean")] = values.mean(1).numpy()
        columns[(key, "low")] = values.quantile(tail, dim=1).numpy()
        columns[(key, "high")] = values.quantile(1 - tail, dim=1).numpy()
        columns[(key, "conf")] = conf.mean(1).numpy()
    return pd.DataFrame(columns, index=pd.Index(result.names, name="feature"))


def ranked_inputs(summary: pd.DataFrame, key: str = "ST") -> list:
    """The inputs of ``indices_over_models``'s table, largest mean ``key`` index first."""
    return list(summary[(key, "mean")].sort_values(ascending=False).index)


def share_same_top(values, names, ranking, k: int = 3) -> float:
    """Share of the models whose own top ``k`` inputs are the first ``k`` of ``ranking``.

    ``values`` (D, M): one index per input (rows in the order of ``names``) and model; a
    model agrees when its ``k`` largest values, in decreasing order, are those inputs in
    that order.
    """
    values = np.asarray(values, dtype=float)
    names = list(names)
    checks.integer("k", k, 1)
    if values.ndim != 2 or values.shape[0] != len(names) or k > len(names):
        raise ValueError(f"values must be (inputs, models) with {len(names)} inputs and "
                         f"k <= {len(names)}; got shape {values.shape}, k = {k}")
    own = np.argsort(-values, axis=0)[:k].T  # (M, k)
    expected = [names.index(name) for name in list(ranking)[:k]]
    return float((own == expected).all(axis=1).mean())
