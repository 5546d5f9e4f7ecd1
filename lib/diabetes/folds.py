"""What each fold's network saw, and its Sobol indices and Shapley effects on those inputs.

A network of the cross-validation is trained on its fold's training rows after the fold's
median imputation: about half of the insulin values it saw are that median. Its input
models are therefore fitted on the same rows, imputed the same way (``fold_problems``), and
its indices are computed under its own fold's input model, every network at once
(``fold_indices``): one unit-cube design, scaled to each fold's marginals, each network
evaluated on its own copy. ``fold_shapley`` gives the Shapley effects of the networks on the
joint distribution of the same rows, dependence included.

Layout: ``X`` the raw table (rows, D) with NaN for missing values; ``train`` (M, rows) the
training rows of each model's fold; ``model`` an ``MLPEnsemble`` of M networks.
"""
import numpy as np
import pandas as pd
import torch

from ..kernels import checks, saltelli, shapley, sobol
from .ensemble import MLPEnsemble
from .table import FEATURES

KINDS = ("uniform", "empirical")
# Design rows per network evaluated at once (the hidden activations of all networks stay
# within a few hundred MB).
EVALUATE_ROWS = 1 << 15


def imputed_rows(model: MLPEnsemble, X) -> torch.Tensor:
    """(M, rows, D): the table with each network's fold medians in its missing cells."""
    X = torch.as_tensor(X)
    median = model.median.to(X.device, X.dtype)
    return torch.where(torch.isnan(X)[None], median, X[None])


def _check_train(model: MLPEnsemble, X, train) -> torch.Tensor:
    train = torch.as_tensor(train)
    if train.dtype != torch.bool or train.shape != (model.num_models, X.shape[0]):
        raise ValueError(f"train must be ({model.num_models}, {X.shape[0]}) booleans, one row "
                         f"of training rows per network; got {tuple(train.shape)} of "
                         f"{train.dtype}")
    return train.cpu()


def fold_problems(model: MLPEnsemble, X, train, kind: str = "empirical", *,
                  impute: bool = True, features=FEATURES) -> list:
    """One SALib problem per network, fitted on its fold's training rows.

    ``kind``: ``"empirical"`` (each input drawn from the training values, its empirical
    marginal) or ``"uniform"`` (uniform over their range). ``impute``: the values as the
    network saw them, missing ones replaced by the fold's medians; ``False`` keeps the
    observed values only (what is left out: the imputed atoms). Inputs are independent in
    both, as Sobol' indices require. An input model needs at least as many rows as inputs.
    """
    checks.choice("kind", kind, KINDS)
    features = list(features)
    X = torch.as_tensor(X)
    if X.ndim != 2 or X.shape[1] != len(features):
        raise ValueError(f"X must be (rows, {len(features)}) for the features {features}; "
                         f"got shape {tuple(X.shape)}")
    train = _check_train(model, X, train)
    values = (imputed_rows(model, X) if impute else X[None].expand(model.num_models, -1, -1))
    values = values.detach().double().cpu().numpy()
    problems = []
    for m, rows in enumerate(train.numpy()):
        if rows.sum() < len(features):
            raise ValueError(f"the input model of network {m} would rest on {int(rows.sum())} "
                             f"training rows, fewer than its {len(features)} inputs")
        columns = [v[~np.isnan(v)] for v in values[m][rows].T]
        empty = [f for f, c in zip(features, columns) if c.size == 0]
        if empty:
            raise ValueError(f"network {m}: inputs {empty} have no observed training value")
        bounds = columns if kind == "empirical" else [[c.min(), c.max()] for c in columns]
        problems.append(saltelli.check_problem({
            "num_vars": len(features), "names": features, "bounds": bounds,
            "dists": [{"empirical": "empirical", "uniform": "unif"}[kind]] * len(features)}))
    return problems


@torch.no_grad()
def evaluate_designs(model: MLPEnsemble, U: np.ndarray, problems: list) -> torch.Tensor:
    """Network m on the unit-cube design ``U`` (rows, D) scaled to ``problems[m]``.

    Returns the predicted probabilities (rows, M) on the model's device, column m from
    network m's own design: the layout ``sobol.analyze`` expects, one output per column.
    """
    if len(problems) != model.num_models:
        raise ValueError(f"need one problem per network ({model.num_models}); got "
                         f"{len(problems)}")
    device = model.median.device
    out = torch.empty(U.shape[0], model.num_models, device=device)
    for start in range(0, U.shape[0], EVALUATE_ROWS):
        part = U[start:start + EVALUATE_ROWS]
        designs = np.stack([saltelli.scale_to_inputs(part, p) for p in problems])
        inputs = torch.as_tensor(designs, device=device, dtype=model.median.dtype)
        out[start:start + len(part)] = torch.sigmoid(model.logits(inputs)).T
    return out


def fold_indices(model: MLPEnsemble, problems: list, N: int, *, calc_second_order=True,
                 num_resamples: int = 100, conf_level: float = 0.95, seed: int = 0,
                 output_names=None):
    """Sobol' indices of every network under its own input model, in one analysis.

    The Saltelli design of ``N`` base samples (seeded by ``seed``) is laid out once on the
    unit cube and scaled to each network's problem, so every network sees the same design
    points through its own marginals; bootstrap intervals as ``sobol.analyze``. Returns the
    ``SobolResult`` with one output per network.
    """
    D = problems[0]["num_vars"]
    U = saltelli.unit_design(D, N, calc_second_order, seed)
    Y = evaluate_designs(model, U, problems)
    return sobol.analyze(problems[0], Y, calc_second_order=calc_second_order,
                         num_resamples=num_resamples, conf_level=conf_level, seed=seed,
                         output_names=output_names)


def rankings(result, key: str = "ST") -> list:
    """Per output of a Sobol result, its inputs ordered by ``key`` (largest first)."""
    values = result[key].reshape(len(result.names), -1).cpu().numpy()
    order = np.argsort(-values, axis=0, kind="stable")
    return [[result.names[i] for i in order[:, m]] for m in range(values.shape[1])]


def index_convergence(model, problem, log2_sizes, *, num_resamples: int = 100,
                      conf_level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """S1 and ST of one model output as the base sample N = 2^m grows.

    ``model`` returns (rows,) or (rows, 1) for a design of ``problem``; each N has its own
    design (first and total order only, seeded by ``seed``). One row per (N, index, input):
    the estimate and its bootstrap half-width.
    """
    parts = []
    for log2_n in log2_sizes:
        design = sobol.sample(problem, 2 ** log2_n, calc_second_order=False, seed=seed)
        Y = sobol.evaluate(model, design).reshape(len(design), -1)[:, 0]
        result = sobol.analyze(problem, Y, calc_second_order=False,
                               num_resamples=num_resamples, conf_level=conf_level, seed=seed)
        table = result.tidy().drop(columns=["output", "input_2"])
        parts.append(table.assign(N=2 ** log2_n))
    return pd.concat(parts, ignore_index=True)[["N", "index", "input", "value", "conf"]]


def fold_shapley(model: MLPEnsemble, X, train, *, networks=None, n_neighbors: int = 3,
                 num_resamples: int = 1000, conf_level: float = 0.95, seed: int = 0,
                 features=FEATURES, output_names=None):
    """Given-data Shapley effects of the networks on their folds' imputed training rows.

    For network m the inputs are its fold's training rows imputed with its medians (their
    joint distribution, correlations and atoms included) and the output is its predicted
    probability at those rows: the effects split the variance of the network's prediction
    over the patients it was trained on. ``networks`` (indices) picks some of the models.
    The estimator and its bootstrap intervals are ``lib.kernels.shapley.given_data``.
    """
    train = _check_train(model, torch.as_tensor(X), train)
    index = list(range(model.num_models)) if networks is None else list(networks)
    chosen = model.select(index)
    X = torch.as_tensor(X).to(chosen.median.device)
    with torch.no_grad():
        Y = chosen(X)  # (rows, networks); the networks impute their missing values
    names = None if output_names is None else [output_names[i] for i in index]
    return shapley.given_data(imputed_rows(chosen, X), Y, mask=train[index].to(X.device),
                              names=list(features), output_names=names,
                              n_neighbors=n_neighbors, num_resamples=num_resamples,
                              conf_level=conf_level, seed=seed)


def effects_over_models(result, spread: float = 0.95) -> pd.DataFrame:
    """Shapley effects summarised over the networks, as ``indices_over_models`` does for S1.

    Per input: columns ``("Sh", "mean" | "low" | "high" | "conf")``: the mean effect, the
    central ``spread`` range across networks and the mean half-width of the bootstrap
    intervals (the estimator's error for one network).
    """
    tail = (1 - spread) / 2
    effects = result.effects
    columns = {("Sh", "mean"): effects.mean(1),
               ("Sh", "low"): np.quantile(effects, tail, axis=1),
               ("Sh", "high"): np.quantile(effects, 1 - tail, axis=1),
               ("Sh", "conf"): ((result.high - result.low) / 2).mean(1)}
    return pd.DataFrame(columns, index=pd.Index(result.names, name="feature"))
