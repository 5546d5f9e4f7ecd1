"""A tiny network for tables: many small MLPs cross-validated at once.

The diabetes chapters train hundreds of small feed-forward networks (cross-validation folds
times feature subsets). They are trained *together* as one batched model: each layer's
weights are stacked on a leading model axis and applied with ``torch.baddbmm``; every model
has its own preprocessing (median imputation and standardisation fitted on its fold's
training rows only), its own input mask (the features it may use), its own training and
validation rows, and its own early stopping. Adam and the loss act on each model's slice
independently, so a model trained in a batch follows the same path as when trained alone.

Layout: ``X`` is the raw table (rows, features) with missing values as NaN; a model's
predictions are ``logits(X)`` (models, rows), and ``model(X)`` gives the predicted
probabilities (rows, models), the layout ``lib.sobol.evaluate`` expects. Masks over rows are
(models, rows) booleans.

Also here: repeated stratified k-fold splits, metrics with confidence intervals corrected for
the overlap of the training sets (Nadeau and Bengio 2003), the corrected resampled t-test,
logistic regression as the reference model, permutation importance, mean |gradient x input|,
and the feature-reduction experiment.
"""
import contextlib
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import cache
from .hardware import device as default_device
from .progress import progress

FEATURES = ("Pregnancies", "Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI",
            "DiabetesPedigreeFunction", "Age")
TARGET = "Outcome"
METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "roc_auc": "ROC AUC"}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
# Models trained at once; more only costs memory (about 0.2 MB per model for 768 rows).
TRAIN_CHUNK_MODELS = 1024
# CPU threads while training. The per-epoch tensors are small (a few MB), so a second
# thread saves little, and on a busy machine its synchronisation costs far more than it saves.
TRAIN_CPU_THREADS = 1


# ------------------------------------------------------------------------------ the table

def _check_columns(frame: pd.DataFrame, features, target) -> None:
    expected = list(features) + [target]
    unexpected = [c for c in frame.columns if c not in expected]
    missing = [c for c in expected if c not in frame.columns]
    if unexpected or missing:
        raise ValueError(f"the table must have exactly the columns {expected}; "
                         f"unexpected: {unexpected}, missing: {missing}")


def _check_values(frame: pd.DataFrame, features, target) -> None:
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise TypeError(f"columns {non_numeric} are not numeric; every column must hold numbers")
    infinite = [f for f in features if np.isinf(frame[f].to_numpy(dtype=float)).any()]
    if infinite:
        raise ValueError(f"features {infinite} hold inf; give finite values, or NaN for "
                         f"missing ones")
    all_missing = [f for f in features if frame[f].isna().all()]
    if all_missing:
        raise ValueError(f"features {all_missing} have no observed value (all NaN); drop them "
                         f"from the table and from `features`")
    labels = frame[target]
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise ValueError(f"column {target!r} must hold the labels 0 and 1 only, "
                         f"got values {sorted(pd.unique(labels.dropna()))[:10]} "
                         f"and {int(labels.isna().sum())} NaN")
    if labels.nunique() < 2:
        raise ValueError(f"column {target!r} holds one class only; two are needed")


def table_tensors(frame, features=FEATURES, target=TARGET, device=None):
    """The features (rows, D) float32 with NaN for missing values, and the labels (rows,) int64.

    ``frame`` must be a DataFrame with exactly the columns ``features`` + ``target``, numeric,
    with finite or NaN features, no feature entirely missing, and labels 0/1 of both classes;
    anything else raises a ValueError/TypeError naming the problem.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    features = list(features)
    _check_columns(frame, features, target)
    _check_values(frame, features, target)
    dev = torch.device(device) if device is not None else default_device()
    X = torch.tensor(frame[features].to_numpy(dtype=np.float32), device=dev)
    y = torch.tensor(frame[target].to_numpy(dtype=np.int64), device=dev)
    return X, y


# ------------------------------------------------------------------------------ the splits

@dataclass(frozen=True)
class CVSplits:
    """Repeated stratified k-fold splits as (folds, rows) boolean masks.

    Fold ``f`` trains on ``fit`` rows (gradient steps), stops early on ``val`` rows (carved
    from its training part) and is scored on ``test`` rows; preprocessing is fitted on
    ``train = fit | val``. Folds are ordered repeat by repeat.
    """
    fit: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    n_repeats: int
    n_folds: int

    @property
    def train(self) -> torch.Tensor:
        return self.fit | self.val

    @property
    def num_splits(self) -> int:
        """All (repeat, fold) splits: n_repeats * n_folds."""
        return self.test.shape[0]

    def test_train_ratio(self) -> float:
        """n_test / n_train of the corrected resampled t-test (means over folds)."""
        return float(self.test.sum(1).double().mean() / self.train.sum(1).double().mean())

    def fold_names(self) -> list:
        return [f"r{r}f{k}" for r in range(self.n_repeats) for k in range(self.n_folds)]


def _check_int(name: str, value, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def cv_splits(y, n_repeats: int = 5, n_folds: int = 5, val_fraction: float = 0.2,
              seed: int = 0) -> CVSplits:
    """Repeated stratified k-fold splits of labels ``y``, each training part split again.

    A stratified ``val_fraction`` of each training part is held out for early stopping.
    Deterministic for a given ``seed``.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

    n_repeats = _check_int("n_repeats", n_repeats, 1)
    n_folds = _check_int("n_folds", n_folds, 2)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    labels = torch.as_tensor(y).cpu().numpy()
    smallest = np.bincount(labels).min()
    if n_folds > smallest:
        raise ValueError(f"n_folds={n_folds} exceeds the {smallest} rows of the smallest class")
    splitter = RepeatedStratifiedKFold(n_splits=n_folds, n_repeats=n_repeats, random_state=seed)
    masks = np.zeros((3, n_repeats * n_folds, labels.size), dtype=bool)
    for f, (train, test) in enumerate(splitter.split(np.zeros(labels.size), labels)):
        fit, val = train_test_split(train, test_size=val_fraction, stratify=labels[train],
                                    random_state=seed * 1009 + f)
        masks[0, f, fit], masks[1, f, val], masks[2, f, test] = True, True, True
    dev = torch.as_tensor(y).device
    fit, val, test = (torch.tensor(m, device=dev) for m in masks)
    return CVSplits(fit, val, test, n_repeats, n_folds)


# ------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class Preprocessing:
    """Per-fold medians (for imputation), means and scales (for standardisation), (folds, D)."""
    median: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor


def fit_preprocessing(X: torch.Tensor, train: torch.Tensor, features=None) -> Preprocessing:
    """Fit median imputation and standardisation on each fold's training rows only.

    As scikit-learn's ``SimpleImputer(strategy="median")`` then ``StandardScaler()``: the
    median of the observed training values, then the mean and the standard deviation
    (ddof=0) of the imputed training values; a constant feature gets scale 1.
    """
    values = X.detach().cpu().double().numpy()
    rows = train.cpu().numpy()[:, :, None]
    observed = np.where(rows, values[None], np.nan)
    empty = np.isnan(observed).all(axis=1)
    if empty.any():
        fold, column = np.argwhere(empty)[0]
        name = features[column] if features is not None else f"column {column}"
        raise ValueError(f"feature {name!r} has no observed value in the training rows of "
                         f"fold {fold}; it cannot be imputed")
    median = np.nanmedian(observed, axis=1)
    imputed = np.where(np.isnan(values)[None], median[:, None, :], values[None])
    count = rows.sum(axis=1)
    mean = (imputed * rows).sum(axis=1) / count
    var = (((imputed - mean[:, None, :]) ** 2) * rows).sum(axis=1) / count
    scale = np.sqrt(var)
    scale[scale == 0] = 1.0
    as_tensor = lambda a: torch.tensor(a, dtype=X.dtype, device=X.device)  # noqa: E731
    return Preprocessing(as_tensor(median), as_tensor(mean), as_tensor(scale))


# ------------------------------------------------------------------------------ the model

@dataclass(frozen=True)
class MLPConfig:
    """The network and its training: our choices, stated in the chapters."""
    hidden: tuple = (16, 8)
    activation: str = "relu"
    lr: float = 0.01
    weight_decay: float = 1e-4
    max_epochs: int = 500
    patience: int = 50

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if any(not isinstance(h, numbers.Integral) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must hold positive layer widths, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}")
        _check_int("max_epochs", self.max_epochs, 1)
        _check_int("patience", self.patience, 1)


class MLPEnsemble(torch.nn.Module):
    """``M`` independent MLPs with their own preprocessing and input masks, run as one model.

    Each model maps a raw row (NaN = missing) to a logit: impute its medians, standardise,
    zero the features outside its input mask, then ``Linear -> activation`` per hidden layer
    and a final ``Linear`` to one logit. ``init_seeds`` (one int per model) seed each model's
    initial weights (PyTorch's default ``nn.Linear`` ranges, U(-1/sqrt(fan_in), +)), so a
    model starts from the same weights whatever else is in the batch.
    """

    def __init__(self, num_features: int, hidden=(16, 8), activation: str = "relu", *,
                 init_seeds, preprocessing: Preprocessing, input_mask: torch.Tensor):
        super().__init__()
        M = len(init_seeds)
        self.hidden, self.activation = tuple(hidden), activation
        widths = [num_features, *self.hidden, 1]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            self.weights.append(torch.nn.Parameter(torch.empty(M, fan_in, fan_out)))
            self.biases.append(torch.nn.Parameter(torch.empty(M, 1, fan_out)))
        self._initialise(list(init_seeds))
        for name in ("median", "mean", "scale"):
            self.register_buffer(name, getattr(preprocessing, name).float().reshape(M, 1, -1))
        self.register_buffer("input_mask", input_mask.float().reshape(M, 1, -1))

    def _initialise(self, seeds: list) -> None:
        with torch.no_grad():
            for seed in sorted(set(seeds)):
                generator = torch.Generator().manual_seed(int(seed))
                rows = [m for m, s in enumerate(seeds) if s == seed]
                for W, b in zip(self.weights, self.biases):
                    bound = 1.0 / math.sqrt(W.shape[1])
                    w = torch.rand(W.shape[1:], generator=generator) * 2 * bound - bound
                    c = torch.rand(b.shape[1:], generator=generator) * 2 * bound - bound
                    W[rows], b[rows] = w, c

    @property
    def num_models(self) -> int:
        return self.weights[0].shape[0]

    def standardize(self, X: torch.Tensor) -> torch.Tensor:
        """Raw rows (n, D) shared by all models, or (M, n, D) per model -> (M, n, D) inputs."""
        if X.ndim not in (2, 3) or X.shape[-1] != self.median.shape[-1]:
            raise ValueError(f"X must be (rows, {self.median.shape[-1]}) or (models, rows, "
                             f"{self.median.shape[-1]}), got shape {tuple(X.shape)}")
        X = X.to(self.median.dtype)
        imputed = torch.where(torch.isnan(X), self.median, X)
        return (imputed - self.mean) / self.scale * self.input_mask

    def logits_from_inputs(self, Z: torch.Tensor) -> torch.Tensor:
        """Standardised inputs (M, n, D) -> logits (M, n)."""
        return _mlp_logits(Z, list(self.weights), list(self.biases), self.activation)

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Raw rows (n, D) or (M, n, D) -> logits (M, n)."""
        return self.logits_from_inputs(self.standardize(X))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predicted probabilities (rows, models) for raw rows (rows, D)."""
        return torch.sigmoid(self.logits(X)).T

    def select(self, index) -> "MLPEnsemble":
        """A new ensemble holding copies of the models ``index`` (ints, a slice or a mask)."""
        picked = torch.arange(self.num_models)[index].reshape(-1)
        prep = Preprocessing(*(getattr(self, n)[picked, 0].clone()
                               for n in ("median", "mean", "scale")))
        sub = MLPEnsemble(self.median.shape[-1], self.hidden, self.activation,
                          init_seeds=[0] * len(picked), preprocessing=prep,
                          input_mask=self.input_mask[picked, 0].clone())
        with torch.no_grad():
            for target, source in zip(sub.parameters(), self.parameters()):
                target.copy_(source[picked.to(source.device)])
        return sub.to(self.median.device)


# ----------------------------------------------------------------------------- training

def _mlp_logits(Z, weights, biases, activation: str) -> torch.Tensor:
    """The stacked MLPs as a function of their parameters: (M, n, D) -> (M, n)."""
    act = ACTIVATIONS[activation]
    h = Z
    for layer, (W, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b, h, W)
        if layer < len(weights) - 1:
            h = act(h)
    return h.squeeze(-1)


@dataclass
class TrainLog:
    """Per model: the epoch of the kept weights, their validation loss, the loss history."""
    best_epoch: torch.Tensor
    best_val_loss: torch.Tensor
    val_loss: torch.Tensor = field(repr=False)  # (epochs run, M); NaN once a model stopped


class _Adam:
    """Adam (PyTorch's defaults, L2 weight decay) on stacked parameters, one model per row.

    Written out so that the batch can shrink to the models still training: every state
    tensor has the model axis first and is sliced with them.
    """
    betas, eps = (0.9, 0.999), 1e-8

    def __init__(self, params, lr: float, weight_decay: float):
        self.params, self.lr, self.weight_decay, self.steps = params, lr, weight_decay, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads) -> None:
        self.steps += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = g.add(p, alpha=self.weight_decay) if self.weight_decay else g
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denominator = (v / correction2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denominator, value=-self.lr / correction1)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the models ``rows`` (indices into the current batch)."""
        for state in (self.params, self.m, self.v):
            state[:] = [t[rows].detach().requires_grad_(t.requires_grad) for t in state]


def _compact_rows(rows: torch.Tensor) -> torch.Tensor:
    """Per model, the indices of its selected rows first (ascending), padded to a common width."""
    n = rows.shape[1]
    position = torch.arange(n, device=rows.device)
    width = int(rows.sum(1).max())
    return torch.where(rows, position, n + position).argsort(dim=1)[:, :width]


class _Batch:
    """The training data of the models still training, gathered to their own rows."""

    def __init__(self, model, X, y, fit, val):
        index = _compact_rows(fit | val)
        with torch.no_grad():
            Z = model.standardize(X)  # full batch and fixed: standardise once
        self.Z = Z.gather(1, index[..., None].expand(-1, -1, Z.shape[-1]))
        self.y = y.to(Z.dtype)[index]
        fit, val = fit.gather(1, index).to(Z.dtype), val.gather(1, index).to(Z.dtype)
        self.fit_weight = fit / fit.sum(1, keepdim=True)  # padding rows weigh 0
        self.val_weight = val / val.sum(1, keepdim=True)

    def keep(self, rows) -> None:
        for name in ("Z", "y", "fit_weight", "val_weight"):
            setattr(self, name, getattr(self, name)[rows])

    def losses(self, logits) -> tuple:
        """Mean binary cross-entropy over the fit rows and over the validation rows, (M,) each."""
        per_row = torch.nn.functional.softplus(logits) - self.y * logits
        return (per_row * self.fit_weight).sum(1), (per_row.detach() * self.val_weight).sum(1)


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _check_train_masks(model, X, fit, val) -> None:
    M = model.num_models
    if fit.shape != (M, X.shape[0]) or val.shape != fit.shape:
        raise ValueError(f"fit and val must be ({M}, {X.shape[0]}) masks, got "
                         f"{tuple(fit.shape)} and {tuple(val.shape)}")
    if (fit.sum(1) == 0).any() or (val.sum(1) == 0).any():
        raise ValueError("every model needs at least one fit row and one validation row")
    if (fit & val).any():
        raise ValueError("fit and validation rows must not overlap")


@contextlib.contextmanager
def _cpu_threads(count: int):
    """Run the block with ``count`` torch CPU threads, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(count, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(model: MLPEnsemble, X, y, fit, val, config: MLPConfig, *, desc="train",
          show_progress=True) -> TrainLog:
    """Full-batch Adam on every model at once, early stopping per model; keeps the best weights.

    ``fit`` and ``val`` are (M, rows) masks: the rows each model descends on and the rows its
    early stopping watches. A model stops when its validation loss has not improved for
    ``config.patience`` epochs and keeps the weights of its best epoch; stopped models leave
    the batch, so a model's result never depends on the others. Training ends when every
    model has stopped or after ``config.max_epochs``. The model is modified in place and
    left in eval mode. On the CPU it uses ``TRAIN_CPU_THREADS`` threads.
    """
    _check_train_masks(model, X, fit, val)
    if X.device.type != "cpu":
        return _train(model, X, y, fit, val, config, desc, show_progress)
    with _cpu_threads(TRAIN_CPU_THREADS):
        return _train(model, X, y, fit, val, config, desc, show_progress)


def _train(model, X, y, fit, val, config, desc, show_progress) -> TrainLog:
    M = model.num_models
    batch = _Batch(model, X, y, fit, val)
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    best = [p.detach().clone() for p in params]
    optimizer = _Adam(params, config.lr, config.weight_decay)
    ids = torch.arange(M, device=X.device)  # the models in the batch
    best_loss = torch.full((M,), math.inf, device=X.device)
    best_epoch = torch.zeros(M, dtype=torch.long, device=X.device)
    history = []
    layers = len(params) // 2
    bar = progress(total=config.max_epochs, desc=desc, unit="epoch", leave=False) \
        if show_progress else _NoBar()
    for epoch in range(config.max_epochs):
        weights, biases = optimizer.params[:layers], optimizer.params[layers:]
        logits = _mlp_logits(batch.Z, weights, biases, model.activation)
        fit_loss, val_loss = batch.losses(logits)
        with torch.no_grad():
            improved = val_loss < best_loss[ids]
            best_loss[ids[improved]] = val_loss[improved]
            best_epoch[ids[improved]] = epoch
            for kept, p in zip(best, optimizer.params):
                kept[ids[improved]] = p[improved]
            active = epoch - best_epoch[ids] < config.patience
            row = torch.full((M,), math.nan, device=X.device)
            row[ids] = val_loss
            history.append(row)
        bar.update(1)
        if not active.any() or epoch == config.max_epochs - 1:
            break
        grads = torch.autograd.grad(fit_loss.sum(), optimizer.params)
        if int(active.sum()) < len(ids):  # stopped models leave the batch
            ids, grads = ids[active], [g[active] for g in grads]
            batch.keep(active)
            optimizer.keep(active)
            bar.set_postfix(training=len(ids), refresh=False)
        optimizer.step(grads)
    bar.close()
    with torch.no_grad():
        for p, kept in zip(model.parameters(), best):
            p.copy_(kept)
    model.eval()
    return TrainLog(best_epoch.cpu(), best_loss.cpu(), torch.stack(history).cpu())


# ------------------------------------------------------------------------------ metrics

def _masked_roc_auc(scores, y, mask):
    """ROC AUC per model over its masked rows (Mann-Whitney U, ties counted as one half)."""
    s = torch.where(mask, scores.double(), math.inf)  # unmasked rows rank after every real one
    ordered = s.sort(dim=-1).values
    low = torch.searchsorted(ordered, s, right=False)
    high = torch.searchsorted(ordered, s, right=True)
    rank = (low + high + 1).double() / 2
    positive, negative = mask & (y == 1), mask & (y == 0)
    n_pos, n_neg = positive.sum(-1).double(), negative.sum(-1).double()
    u = (rank * positive).sum(-1) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def binary_metrics(logits, y, mask) -> dict:
    """Accuracy, balanced accuracy and ROC AUC of every model on its masked rows.

    ``logits`` (..., rows): scores whose sign is the predicted class (p > 0.5); ``y`` (rows,)
    labels 0/1; ``mask`` (..., rows) the rows to score. Returns float64 tensors (...,).
    """
    mask = mask.expand_as(logits)
    positive, negative = mask & (y == 1), mask & (y == 0)
    if (positive.sum(-1) == 0).any() or (negative.sum(-1) == 0).any():
        raise ValueError("every model's scored rows must hold both classes")
    if not torch.isfinite(logits[mask]).all():
        raise ValueError("logits must be finite on the scored rows")
    correct = (logits > 0) == (y == 1)
    rate = lambda rows: (correct & rows).sum(-1).double() / rows.sum(-1)  # noqa: E731
    return {"accuracy": rate(mask),
            "balanced_accuracy": (rate(positive) + rate(negative)) / 2,
            "roc_auc": _masked_roc_auc(logits, y, mask)}


def corrected_interval(values, ratio: float, conf_level: float = 0.95) -> tuple:
    """Mean and CI of a CV metric with the Nadeau-Bengio corrected variance.

    The J fold values share training rows, so their plain variance understates the
    uncertainty; the corrected variance of the mean is (1/J + n_test/n_train) s^2, and the
    interval uses Student's t with J - 1 degrees of freedom.
    """
    values = np.asarray(values, dtype=float)
    J = values.size
    if J < 2:
        raise ValueError("need at least two fold values for an interval")
    quantile = stats.t.ppf(0.5 + conf_level / 2, J - 1)
    half = quantile * math.sqrt((1 / J + ratio) * values.var(ddof=1))
    mean = values.mean()
    return mean, mean - half, mean + half


def corrected_ttest(a, b, ratio: float, alternative: str = "greater") -> tuple:
    """Nadeau-Bengio corrected resampled t-test of paired fold values ``a`` vs ``b``.

    t = mean(d) / sqrt((1/J + n_test/n_train) var(d)) with d = a - b over the J folds, compared
    with Student's t, J - 1 degrees of freedom. ``alternative``: ``"greater"`` (H1: a > b),
    ``"less"`` or ``"two-sided"``. Returns (t, p). Identical fold values (every d = 0) are
    no evidence of a difference: t = 0, p = 1.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got "
                         f"{alternative!r}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a and b must be paired 1-D fold values (at least two), got "
                         f"{d.shape}")
    J, mean, var = d.size, d.mean(), d.var(ddof=1)
    if var == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / math.sqrt((1 / J + ratio) * var)
    if t == 0 and mean == 0:
        return 0.0, 1.0
    dist = stats.t(J - 1)
    p = {"greater": dist.sf(t), "less": dist.cdf(t), "two-sided": 2 * dist.sf(abs(t))}
    return float(t), float(p[alternative])


def summarize(metrics: pd.DataFrame, ratio: float, by=(), conf_level: float = 0.95):
    """Mean and corrected CI of every metric in ``metrics`` (one row per fold), per group."""
    def one(group):
        out = {}
        for name in METRICS:
            mean, low, high = corrected_interval(group[name], ratio, conf_level)
            out[(name, "mean")], out[(name, "low")], out[(name, "high")] = mean, low, high
        return pd.Series(out)
    if not by:
        return one(metrics).to_frame().T
    return metrics.groupby(list(by), sort=False)[list(METRICS)].apply(one)


# -------------------------------------------------------------------- cross-validation

@dataclass
class CVResult:
    """Trained models (one per subset and fold; model m = subset * folds + fold) and scores."""
    model: MLPEnsemble
    metrics: pd.DataFrame  # one row per model: subset, fold, METRICS
    log: TrainLog
    input_masks: torch.Tensor  # (subsets, D)
    fold_of_model: torch.Tensor


def _check_masks(input_masks, D: int) -> torch.Tensor:
    masks = torch.as_tensor(input_masks, dtype=torch.bool)
    if masks.ndim != 2 or masks.shape[1] != D:
        raise ValueError(f"input_masks must be (subsets, {D}) booleans, got shape "
                         f"{tuple(masks.shape)}")
    if (masks.sum(1) == 0).any():
        raise ValueError("every feature subset must keep at least one feature")
    return masks


def cross_validate(X, y, splits: CVSplits, config: MLPConfig = MLPConfig(), *,
                   input_masks=None, seed: int = 0, features=None, desc="train",
                   chunk_models: int | None = None, show_progress=True) -> CVResult:
    """Train one MLP per (feature subset, fold) at once and score each on its fold's test rows.

    ``input_masks`` (subsets, D) booleans say which features each subset keeps (default: one
    subset with all). Every subset shares the folds, their preprocessing and, per fold, the
    initial weights (seeded by ``seed`` and the fold), so subsets are compared like for like.
    Models are trained ``chunk_models`` at a time (default ``TRAIN_CHUNK_MODELS``).
    """
    D, F = X.shape[1], splits.num_splits
    masks = _check_masks(torch.ones(1, D) if input_masks is None else input_masks, D)
    prep = fit_preprocessing(X, splits.train, features)
    S = masks.shape[0]
    fold = torch.arange(F).repeat(S)
    subset = torch.arange(S).repeat_interleave(F)
    chunk = chunk_models or TRAIN_CHUNK_MODELS
    parts, logs = [], []
    for start in range(0, S * F, chunk):
        f, s = fold[start:start + chunk], subset[start:start + chunk]
        part = MLPEnsemble(D, config.hidden, config.activation,
                           init_seeds=(seed * 100_003 + f).tolist(),
                           preprocessing=Preprocessing(prep.median[f], prep.mean[f],
                                                       prep.scale[f]),
                           input_mask=masks[s]).to(X.device)
        fd = f.to(X.device)
        logs.append(train(part, X, y, splits.fit[fd], splits.val[fd], config, desc=desc,
                          show_progress=show_progress))
        parts.append(part)
    model = parts[0] if len(parts) == 1 else _concatenate(parts)
    log = logs[0] if len(logs) == 1 else _concatenate_logs(logs)
    with torch.no_grad():
        scores = binary_metrics(model.logits(X), y, splits.test[fold.to(X.device)])
    metrics = pd.DataFrame({"subset": subset.numpy(), "fold": fold.numpy(),
                            **{k: v.cpu().numpy() for k, v in scores.items()}})
    return CVResult(model, metrics, log, masks, fold)


def _concatenate(parts: list) -> MLPEnsemble:
    first = parts[0]
    total = sum(p.num_models for p in parts)
    prep = Preprocessing(*(torch.cat([getattr(p, n)[:, 0] for p in parts])
                           for n in ("median", "mean", "scale")))
    joined = MLPEnsemble(first.median.shape[-1], first.hidden, first.activation,
                         init_seeds=[0] * total, preprocessing=prep,
                         input_mask=torch.cat([p.input_mask[:, 0] for p in parts]))
    with torch.no_grad():
        for i, target in enumerate(joined.parameters()):
            target.copy_(torch.cat([list(p.parameters())[i].cpu() for p in parts]))
    return joined.to(first.median.device).eval()


def _concatenate_logs(logs: list) -> TrainLog:
    epochs = max(log.val_loss.shape[0] for log in logs)
    padded = [torch.nn.functional.pad(log.val_loss, (0, 0, 0, epochs - log.val_loss.shape[0]),
                                      value=math.nan) for log in logs]
    return TrainLog(torch.cat([log.best_epoch for log in logs]),
                    torch.cat([log.best_val_loss for log in logs]), torch.cat(padded, dim=1))


def cross_validate_logistic(X, y, splits: CVSplits, C: float = 1.0) -> pd.DataFrame:
    """The reference: scikit-learn logistic regression with the same fold-wise preprocessing.

    ``SimpleImputer(median) -> StandardScaler -> LogisticRegression(C)`` fitted on each
    fold's training rows (fit and validation rows: it needs no early stopping), scored on its
    test rows. Returns one row per fold with the metrics.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    values, labels = X.cpu().double().numpy(), y.cpu().numpy()
    logits = np.empty((splits.num_splits, labels.size))
    for f, rows in enumerate(splits.train.cpu().numpy()):
        pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                 LogisticRegression(C=C, max_iter=1000))
        pipeline.fit(values[rows], labels[rows])
        logits[f] = pipeline.decision_function(values)
    scores = binary_metrics(torch.tensor(logits), y.cpu(), splits.test.cpu())
    return pd.DataFrame({"fold": np.arange(splits.num_splits),
                         **{k: v.numpy() for k, v in scores.items()}})


def cached_cross_validate(X, y, splits: CVSplits, config: MLPConfig = MLPConfig(), *,
                          input_masks=None, seed: int = 0, features=None, desc="train",
                          name="tabular-cv") -> CVResult:
    """``cross_validate``, stored on disk under a key of the data, splits, masks, config,
    seed and this module's source: a changed input never gets a stale result."""
    def digest(t):
        return cache.sha256_bytes(t.detach().cpu().contiguous().numpy().tobytes())
    masks = None if input_masks is None else torch.as_tensor(input_masks, dtype=torch.bool)
    key = cache.make_key(X=digest(torch.nan_to_num(X, nan=-1e30)), y=digest(y),
                         splits=[digest(m) for m in (splits.fit, splits.val, splits.test)],
                         masks=None if masks is None else digest(masks),
                         config=config.__dict__, seed=seed,
                         lib=cache.lib_source_digest(["tabular"]),
                         toolchain=cache.toolchain_digest(), torch=torch.__version__)
    result = cache.cached_torch("tabular", name, key, lambda: cross_validate(
        X, y, splits, config, input_masks=masks, seed=seed, features=features, desc=desc))
    result.model.to(X.device)
    return result


def interval_table(summary: pd.DataFrame, names=METRICS, digits: int = 3) -> pd.DataFrame:
    """Text cells "mean [low, high]" rounded to ``digits``, one column per name in ``names``.

    ``summary`` has columns ``(name, "mean" | "low" | "high")``, as ``summarize`` and
    ``indices_over_models`` return.
    """
    def cell(row, name):
        mean, low, high = (row[(name, part)] for part in ("mean", "low", "high"))
        return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return pd.DataFrame({name: [cell(row, name) for _, row in summary.iterrows()]
                         for name in names}, index=summary.index)


# --------------------------------------------------------------------------- importance

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
    _check_int("n_repeats", n_repeats, 1)
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


# ------------------------------------------------------------------- Sobol input models

def input_models(frame: pd.DataFrame, features=FEATURES) -> dict:
    """Two SALib problems for the features, both with independent inputs.

    ``"uniform"``: each feature uniform over its observed range [min, max] (missing values
    ignored); ``"empirical"``: each feature drawn from its observed values (its empirical
    marginal, ``dists = "empirical"`` in ``lib.sobol``).
    """
    features = list(features)
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


# ---------------------------------------------------------------------- feature reduction

@dataclass
class Reduction:
    """Per-fold scores of every (ordering, k) of a feature-reduction experiment."""
    folds: pd.DataFrame  # ordering, k, fold, features, METRICS
    orderings: dict      # name -> feature names, most important first
    ratio: float         # n_test / n_train of the CV
    num_features: int    # k of the reference network that keeps every feature
    num_networks: int    # networks trained (distinct feature sets x folds)


def _check_ranking(ranking, features) -> list:
    ranking = list(ranking)
    if sorted(ranking) != sorted(features):
        raise ValueError(f"ranking must order every feature exactly once; got {ranking}, "
                         f"features {list(features)}")
    return ranking


def _check_ks(ks, D: int) -> list:
    ks = list(range(D, 0, -1)) if ks is None else list(ks)
    bad = [k for k in ks if not isinstance(k, numbers.Integral) or isinstance(k, bool)
           or not 1 <= k <= D]
    if bad or not ks:
        raise ValueError(f"k must be integers from 1 to {D} (the number of features); "
                         f"got {bad or ks}")
    return ks


def reduction_orderings(ranking, n_random: int = 5, seed: int = 0) -> dict:
    """The ranking, its reverse and ``n_random`` random orderings of the same features."""
    _check_int("n_random", n_random, 0)
    rng = np.random.default_rng(seed)
    orderings = {"Sobol ST": list(ranking), "reverse": list(ranking)[::-1]}
    for r in range(n_random):
        orderings[f"random {r + 1}"] = [ranking[i] for i in rng.permutation(len(ranking))]
    return orderings


def feature_reduction(X, y, splits: CVSplits, ranking, config: MLPConfig = MLPConfig(), *,
                      features=FEATURES, ks=None, n_random: int = 5, seed: int = 0,
                      cached: bool = True) -> Reduction:
    """Retrain on the top-k features of ``ranking`` (and of the baselines) for every k.

    For each k in ``ks`` (default D .. 1) and each ordering (``ranking``, its reverse,
    ``n_random`` random ones), the networks keep the first k features and are cross-validated
    on ``splits``; a feature set shared by several orderings is trained once. All networks
    train in one batch. Returns every fold's scores.
    """
    features = list(features)
    ranking = _check_ranking(ranking, features)
    ks = _check_ks(ks, len(features))
    orderings = reduction_orderings(ranking, n_random, seed)
    subsets = {}  # frozenset of kept features -> subset number
    plan = []
    for name, order in orderings.items():
        for k in ks:
            kept = frozenset(order[:k])
            plan.append((name, k, subsets.setdefault(kept, len(subsets))))
    masks = torch.zeros(len(subsets), len(features), dtype=torch.bool)
    for kept, s in subsets.items():
        masks[s, [features.index(f) for f in kept]] = True
    run = cached_cross_validate if cached else cross_validate
    cv = run(X, y, splits, config, input_masks=masks, seed=seed, features=features,
             desc="reduction", **({"name": "tabular-reduction"} if cached else {}))
    kept_names = {s: ", ".join(f for f in features if f in kept) for kept, s in subsets.items()}
    plan = pd.DataFrame(plan, columns=["ordering", "k", "subset"])
    folds = plan.merge(cv.metrics, on="subset", how="left")  # keeps the plan's order
    folds["features"] = folds["subset"].map(kept_names)
    folds = folds[["ordering", "k", "fold", "features", *METRICS]].reset_index(drop=True)
    return Reduction(folds, orderings, splits.test_train_ratio(), len(features),
                     len(cv.metrics))


def _random_mean(folds: pd.DataFrame) -> pd.DataFrame:
    """Scores of the random orderings averaged per (k, fold), as one ordering "random"."""
    random = folds[folds["ordering"].str.startswith("random")]
    if random.empty:
        return random
    mean = random.groupby(["k", "fold"], as_index=False)[list(METRICS)].mean()
    return mean.assign(ordering="random (mean)", features="")


def reduction_summary(reduction: Reduction, conf_level: float = 0.95) -> pd.DataFrame:
    """Mean and corrected CI per (ordering, k) for "Sobol ST", "reverse" and the random mean."""
    folds = reduction.folds
    kept = folds[folds["ordering"].isin(["Sobol ST", "reverse"])]
    table = pd.concat([kept, _random_mean(folds)], ignore_index=True)
    return summarize(table, reduction.ratio, by=("ordering", "k"), conf_level=conf_level)


def reduction_tests(reduction: Reduction, ordering: str = "Sobol ST", alpha: float = 0.05,
                    metrics=("accuracy", "roc_auc")) -> pd.DataFrame:
    """Is keeping k features significantly worse than keeping all? One row per k.

    For each k of ``ordering`` and each metric, the one-sided corrected resampled t-test of
    the fold-wise differences (all features - k features), H1: the reduced network scores
    lower. Columns: the kept features, then per metric its mean, its p-value
    ``p (metric)`` and ``loss (metric)``: whether the loss is significant at ``alpha``.
    """
    folds = reduction.folds[reduction.folds["ordering"] == ordering]
    if folds.empty:
        raise ValueError(f"unknown ordering {ordering!r}; valid: "
                         f"{', '.join(reduction.orderings)}")
    full = folds[folds["k"] == reduction.num_features].set_index("fold")
    if full.empty:
        raise ValueError(f"the experiment has no k = {reduction.num_features} (all features) "
                         f"to compare with; include it in ks")
    rows = []
    for k, group in folds.groupby("k", sort=False):
        group = group.set_index("fold").loc[full.index]
        row = {"k": k, "features": group["features"].iloc[0]}
        for name in metrics:
            _, p = corrected_ttest(full[name], group[name], reduction.ratio, "greater")
            row[name], row[f"p ({name})"], row[f"loss ({name})"] = group[name].mean(), p, p < alpha
        rows.append(row)
    return pd.DataFrame(rows).set_index("k")


def smallest_sufficient_k(tests: pd.DataFrame, metric: str = "accuracy") -> int:
    """The smallest k without a significant loss in ``metric`` (from ``reduction_tests``)."""
    column = f"loss ({metric})"
    if column not in tests:
        raise ValueError(f"the tests hold no {column!r}; tested metrics: "
                         f"{[c[6:-1] for c in tests.columns if c.startswith('loss (')]}")
    return int(tests.index[~tests[column].astype(bool)].min())
