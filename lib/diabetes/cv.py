"""Repeated stratified cross-validation of the MLP ensemble, cached, and its reference model.

Fold ``f`` trains on ``fit`` rows (gradient steps), stops early on ``val`` rows (carved from its
training part) and is scored on ``test`` rows; every (feature subset, fold) model is trained in
one batch. Logistic regression with the same fold-wise preprocessing is the reference.
"""
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..book import cache, imports
from ..files import sha256_bytes
from ..kernels import checks
from .ensemble import (TRAIN_CHUNK_MODELS, MLPConfig, MLPEnsemble, Preprocessing, TrainLog,
                       fit_preprocessing, train)
from .stats import binary_metrics


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


def cv_splits(y, n_repeats: int = 5, n_folds: int = 5, val_fraction: float = 0.2,
              seed: int = 0) -> CVSplits:
    """Repeated stratified k-fold splits of labels ``y``, each training part split again.

    A stratified ``val_fraction`` of each training part is held out for early stopping.
    Deterministic for a given ``seed``.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

    n_repeats = checks.integer("n_repeats", n_repeats, 1)
    n_folds = checks.integer("n_folds", n_folds, 2)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    labels = torch.as_tensor(y).cpu().numpy()
    smallest = np.bincount(labels).min()
    if n_folds > smallest:
        raise ValueError(f"n_folds={n_folds} exceeds the {smallest} rows of the smallest class")
    splitter = RepeatedStratifiedKFold(n_splits=n_folds, n_repeats=n_repeats, random_state=seed)
    masks = np.zeros((3, n_repeats * n_folds, labels.size), dtype=bool)
    for f, (training, test) in enumerate(splitter.split(np.zeros(labels.size), labels)):
        fit, val = train_test_split(training, test_size=val_fraction,
                                    stratify=labels[training], random_state=seed * 1009 + f)
        masks[0, f, fit], masks[1, f, val], masks[2, f, test] = True, True, True
    dev = torch.as_tensor(y).device
    fit, val, test = (torch.tensor(m, device=dev) for m in masks)
    return CVSplits(fit, val, test, n_repeats, n_folds)


@dataclass
class CVResult:
    """Trained models and their scores: one per subset and fold, model m = subset * folds +
    fold; with ``fold_of_model``, model m is mask m on fold ``fold_of_model[m]``."""
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


def _check_folds(fold_of_model, masks: torch.Tensor, F: int) -> torch.Tensor:
    fold = torch.as_tensor(fold_of_model)
    if fold.ndim != 1 or fold.numel() != masks.shape[0] or fold.is_floating_point() \
            or fold.dtype == torch.bool:
        raise ValueError(f"fold_of_model must hold one integer fold per input mask "
                         f"({masks.shape[0]}), got {tuple(fold.shape)} of {fold.dtype}")
    if ((fold < 0) | (fold >= F)).any():
        raise ValueError(f"fold_of_model must name folds 0 .. {F - 1}; got "
                         f"{sorted(set(fold.tolist()))[:10]}")
    return fold.long().cpu()


def cross_validate(X, y, splits: CVSplits, config: MLPConfig = MLPConfig(), *,
                   input_masks=None, fold_of_model=None, seed: int = 0, features=None,
                   desc="train", chunk_models: int | None = None,
                   show_progress=True) -> CVResult:
    """Train one MLP per (feature subset, fold) at once and score each on its fold's test rows.

    ``input_masks`` (subsets, D) booleans say which features each subset keeps (default: one
    subset with all). Every subset shares the folds, their preprocessing and, per fold, the
    initial weights (seeded by ``seed`` and the fold), so subsets are compared like for like.
    With ``fold_of_model`` (one fold per row of ``input_masks``) model m instead trains on
    fold ``fold_of_model[m]`` with mask m only (its ``subset`` is m): each fold its own
    feature sets, as a nested selection needs. Models are trained ``chunk_models`` at a time
    (default ``TRAIN_CHUNK_MODELS``).
    """
    D, F = X.shape[1], splits.num_splits
    masks = _check_masks(torch.ones(1, D) if input_masks is None else input_masks, D)
    prep = fit_preprocessing(X, splits.train, features)
    S = masks.shape[0]
    if fold_of_model is None:
        fold = torch.arange(F).repeat(S)
        subset = torch.arange(S).repeat_interleave(F)
    else:
        fold, subset = _check_folds(fold_of_model, masks, F), torch.arange(S)
    chunk = chunk_models or TRAIN_CHUNK_MODELS
    parts, logs = [], []
    for start in range(0, len(fold), chunk):
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
                          input_masks=None, fold_of_model=None, seed: int = 0, features=None,
                          desc="train", name="tabular-cv") -> CVResult:
    """``cross_validate``, stored on disk under a key of the data, splits, masks, folds,
    config, seed and this module's source: a changed input never gets a stale result."""
    def digest(t):
        return sha256_bytes(t.detach().cpu().contiguous().numpy().tobytes())
    masks = None if input_masks is None else torch.as_tensor(input_masks, dtype=torch.bool)
    folds = None if fold_of_model is None else torch.as_tensor(fold_of_model).long()
    key = cache.make_key(X=digest(torch.nan_to_num(X, nan=-1e30)), y=digest(y),
                         splits=[digest(m) for m in (splits.fit, splits.val, splits.test)],
                         masks=None if masks is None else digest(masks),
                         folds=None if folds is None else digest(folds),
                         config=config.__dict__, seed=seed,
                         lib=imports.closure_digest(__name__),
                         toolchain=cache.toolchain_digest(), torch=torch.__version__)
    result = cache.cached_torch("tabular", name, key, lambda: cross_validate(
        X, y, splits, config, input_masks=masks, fold_of_model=folds, seed=seed,
        features=features, desc=desc))
    result.model.to(X.device)
    return result
