"""Many small MLPs trained at once as one batched model, each with its own preprocessing.

The diabetes chapters train hundreds of small feed-forward networks (cross-validation folds
times feature subsets). They are trained *together*: each layer's weights are stacked on a
leading model axis and applied with ``torch.baddbmm``; every model has its own preprocessing
(median imputation and standardisation fitted on its fold's training rows only), its own input
mask (the features it may use), its own training and validation rows, and its own early
stopping. Adam and the loss act on each model's slice independently, so a model trained in a
batch follows the same path as when trained alone.

Layout: ``X`` is the raw table (rows, features) with missing values as NaN; a model's
predictions are ``logits(X)`` (models, rows), and ``model(X)`` gives the predicted
probabilities (rows, models), the layout ``lib.kernels.sobol.evaluate`` expects. Masks over
rows are (models, rows) booleans.
"""
import contextlib
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from ..kernels import checks
from ..progress import progress

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}
# Models trained at once; more only costs memory (about 0.2 MB per model for 768 rows).
TRAIN_CHUNK_MODELS = 1024
# CPU threads while training. The per-epoch tensors are small (a few MB), so a second
# thread saves little, and on a busy machine its synchronisation costs far more than it saves.
TRAIN_CPU_THREADS = 1


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
        checks.integer("max_epochs", self.max_epochs, 1)
        checks.integer("patience", self.patience, 1)


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
    bar = progress(total=config.max_epochs, desc=desc, unit="epoch", leave=False,
                   show=show_progress)
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
