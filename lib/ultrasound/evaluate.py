"""Classification metrics with bootstrap confidence intervals, baselines and seed summaries.

Accuracy, balanced accuracy, macro-F1 and the macro one-vs-rest ROC AUC, defined as in
scikit-learn, for any number of classes, and the recall of each class. A bootstrap replicate is
a vector of counts (how often each test case was drawn), so all replicates are computed at once
from a (replicates x cases) count matrix: the confusion matrices are one matrix product, and the
AUCs come from one sort of the scores. The point estimates are the same computation with every
count equal to one.

Several training seeds of one network are summarised by the mean and range of their point
estimates (the variation of training) beside a bootstrap interval of the seed mean, with every
seed scored on the same resampled test cases (the variation of the test sample).
"""
import numbers

import pandas as pd
import torch

from ..kernels.bootstrap import bootstrap_counts

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr")


def _check(labels: torch.Tensor, scores: torch.Tensor):
    if not (torch.is_tensor(labels) and torch.is_tensor(scores)):
        raise TypeError("labels and scores must be torch tensors")
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be N x K with K >= 2 classes, got {tuple(scores.shape)}")
    if labels.ndim != 1 or len(labels) != len(scores) or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty vector with one label per row of scores, "
                         f"got {tuple(labels.shape)} for scores {tuple(scores.shape)}")
    if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be integers in [0, {scores.shape[1] - 1}]")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels.long(), scores.double().to(labels.device)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int):
    """``num_classes`` x ``num_classes`` counts: row = true class, column = predicted class."""
    flat = torch.bincount(labels.long() * num_classes + preds.long(), minlength=num_classes ** 2)
    return flat.view(num_classes, num_classes)


def replicate_metrics(labels: torch.Tensor, scores: torch.Tensor, counts: torch.Tensor):
    """Every metric for each row of ``counts`` (R x N: how often each case is drawn).

    Returns a dict of length-R tensors. A metric that is undefined for a replicate (an AUC when
    a class is missing from it) is NaN.
    """
    labels, scores = _check(labels, scores)
    counts = counts.to(scores)
    num_classes = scores.shape[1]
    result = _confusion_metrics(_replicate_confusion(labels, scores, counts))
    result["auc_ovr"] = torch.stack([_weighted_auc(scores[:, k], labels == k, counts)
                                     for k in range(num_classes)]).mean(dim=0)
    return result


def replicate_recall(labels: torch.Tensor, scores: torch.Tensor, counts: torch.Tensor):
    """The recall of each class for each row of ``counts``: an R x K tensor, NaN where a class
    is missing from a replicate."""
    labels, scores = _check(labels, scores)
    confusion = _replicate_confusion(labels, scores, counts.to(scores))
    return confusion.diagonal(dim1=1, dim2=2) / confusion.sum(dim=2)


def _replicate_confusion(labels, scores, counts):
    """R x K x K weighted confusion matrices (row = true class) of checked inputs."""
    num_classes = scores.shape[1]
    cells = torch.nn.functional.one_hot(labels * num_classes + scores.argmax(dim=1),
                                        num_classes ** 2)
    return (counts @ cells.to(counts)).view(-1, num_classes, num_classes)


def _confusion_metrics(confusion: torch.Tensor) -> dict:
    diagonal = confusion.diagonal(dim1=1, dim2=2)
    support, predicted = confusion.sum(dim=2), confusion.sum(dim=1)
    recall = diagonal / support  # NaN for a class absent from the replicate: left out below
    f1_denominator = support + predicted
    f1 = torch.where(f1_denominator > 0, 2 * diagonal / f1_denominator.clamp(min=1),
                     torch.zeros_like(diagonal))
    return {"accuracy": diagonal.sum(dim=1) / confusion.sum(dim=(1, 2)),
            "balanced_accuracy": recall.nanmean(dim=1),
            "macro_f1": f1.mean(dim=1)}


def _weighted_auc(score: torch.Tensor, positive: torch.Tensor, counts: torch.Tensor):
    """ROC AUC of ``score`` for each row of case weights ``counts``; ties count one half."""
    values, group = torch.unique(score, sorted=True, return_inverse=True)
    pos = torch.zeros(len(counts), len(values), dtype=counts.dtype, device=counts.device)
    neg = torch.zeros_like(pos)
    pos.index_add_(1, group, counts * positive)
    neg.index_add_(1, group, counts * ~positive)
    negatives_below = neg.cumsum(dim=1) - neg
    wins = (pos * (negatives_below + 0.5 * neg)).sum(dim=1)
    pairs = pos.sum(dim=1) * neg.sum(dim=1)
    return torch.where(pairs > 0, wins / pairs.clamp(min=1), torch.full_like(wins, torch.nan))


def metrics(labels: torch.Tensor, scores: torch.Tensor) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and one-vs-rest AUC of class ``scores`` (N x K,
    probabilities or logits: the prediction is the arg-max) against integer ``labels``."""
    ones = torch.ones(1, len(labels), dtype=torch.float64, device=labels.device)
    return {name: value.item() for name, value in replicate_metrics(labels, scores, ones).items()}


def bootstrap_metrics(labels: torch.Tensor, scores: torch.Tensor, *, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0, chunk_size: int = 500):
    """Point estimates and percentile bootstrap intervals of every metric.

    Returns a DataFrame indexed by metric with columns ``estimate``, ``ci_low``, ``ci_high``
    (replicates where a metric is undefined are left out of its interval).
    """
    _check_bootstrap(n_boot, level, chunk_size)
    estimate = metrics(labels, scores)
    counts = bootstrap_counts(len(labels), n_boot, seed, device=labels.device)
    chunks = [replicate_metrics(labels, scores, counts[start:start + chunk_size])
              for start in range(0, n_boot, chunk_size)]
    rows = {}
    for name in METRICS:
        low, high = _percentile_interval(torch.cat([chunk[name] for chunk in chunks]), level)
        rows[name] = {"estimate": estimate[name], "ci_low": low, "ci_high": high}
    return pd.DataFrame.from_dict(rows, orient="index")


def class_recall(labels: torch.Tensor, scores: torch.Tensor, *, classes=None,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """The recall (sensitivity) of each class with its percentile bootstrap interval.

    Returns a DataFrame indexed by class (``classes``, default 0..K-1) with columns
    ``support`` (cases of the class), ``estimate``, ``ci_low``, ``ci_high``.
    """
    _check_bootstrap(n_boot, level, 1)
    labels, scores = _check(labels, scores)
    names = _class_names(classes, scores.shape[1])
    ones = torch.ones(1, len(labels), dtype=torch.float64, device=labels.device)
    estimate = replicate_recall(labels, scores, ones)[0].tolist()
    counts = bootstrap_counts(len(labels), n_boot, seed, device=labels.device)
    replicates = replicate_recall(labels, scores, counts)
    support = torch.bincount(labels, minlength=len(names)).tolist()
    rows = {}
    for k, name in enumerate(names):
        low, high = _percentile_interval(replicates[:, k], level)
        rows[name] = {"support": support[k], "estimate": estimate[k], "ci_low": low,
                      "ci_high": high}
    return pd.DataFrame.from_dict(rows, orient="index")


def majority_class(train_labels: torch.Tensor, num_classes: int) -> int:
    """The most frequent class of ``train_labels`` (the smallest index among tied ones)."""
    if not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if train_labels.ndim != 1 or len(train_labels) == 0 or train_labels.is_floating_point():
        raise ValueError(f"train_labels must be a non-empty vector of integer labels, got "
                         f"shape {tuple(train_labels.shape)} and dtype {train_labels.dtype}")
    if train_labels.min() < 0 or train_labels.max() >= num_classes:
        raise ValueError(f"train_labels must be integers in [0, {num_classes - 1}]")
    return int(torch.bincount(train_labels.long(), minlength=num_classes).argmax())


def majority_scores(train_labels: torch.Tensor, num_cases: int, num_classes: int):
    """Scores (``num_cases`` x ``num_classes``, one-hot) of the classifier that always predicts
    the most frequent training class: every case tied, so each one-vs-rest AUC is 0.5."""
    scores = torch.zeros(num_cases, num_classes, dtype=torch.float64)
    scores[:, majority_class(train_labels, num_classes)] = 1.0
    return scores


def majority_baseline(train_labels: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Every metric of always predicting the training split's most frequent class, on the
    cases ``labels`` of any split; ``"class"`` holds that class's index.

    Its accuracy is the share of that class in ``labels`` and its balanced accuracy is
    1 / (classes present): what a network must beat to have learnt anything.
    """
    scores = majority_scores(train_labels, len(labels), num_classes).to(labels.device)
    return {"class": majority_class(train_labels, num_classes), **metrics(labels, scores)}


def seed_summary(labels: torch.Tensor, scores_per_seed, *, classes=None, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0, chunk_size: int = 500):
    """Every metric and each class's recall over the training seeds of one network.

    ``scores_per_seed`` holds one N x K score tensor per seed (the same cases, same order).
    Returns a DataFrame indexed by metric (``METRICS``, then ``recall <class>``) with columns
    ``mean``, ``min``, ``max`` (over the seeds' point estimates: the variation of training)
    and ``ci_low``, ``ci_high``: the percentile bootstrap interval of the seed mean, every seed
    scored on the same resampled cases (the variation of the test sample, for this set of
    seeds). Not an interval of seed-averaged probabilities: each seed is a network of its own.
    """
    _check_bootstrap(n_boot, level, chunk_size)
    scores_per_seed = list(scores_per_seed)
    if not scores_per_seed:
        raise ValueError("scores_per_seed must hold the scores of at least one seed")
    checked = [_check(labels, scores) for scores in scores_per_seed]
    shapes = {tuple(scores.shape) for _, scores in checked}
    if len(shapes) != 1:
        raise ValueError(f"every seed's scores must have the same shape, got {sorted(shapes)}")
    labels = checked[0][0]
    names = [f"recall {name}" for name in _class_names(classes, checked[0][1].shape[1])]

    def per_seed(counts):  # seeds x R for every metric
        values = []
        for _, scores in checked:
            row = replicate_metrics(labels, scores, counts)
            recall = replicate_recall(labels, scores, counts)
            row.update({name: recall[:, k] for k, name in enumerate(names)})
            values.append(row)
        return {name: torch.stack([row[name] for row in values]) for name in values[0]}

    ones = torch.ones(1, len(labels), dtype=torch.float64, device=labels.device)
    points = {name: value[:, 0] for name, value in per_seed(ones).items()}
    counts = bootstrap_counts(len(labels), n_boot, seed, device=labels.device)
    chunks = [per_seed(counts[start:start + chunk_size])
              for start in range(0, n_boot, chunk_size)]
    rows = {}
    for name in points:
        seed_means = torch.cat([chunk[name] for chunk in chunks], dim=1).mean(dim=0)
        low, high = _percentile_interval(seed_means, level)
        rows[name] = {"mean": points[name].mean().item(), "min": points[name].min().item(),
                      "max": points[name].max().item(), "ci_low": low, "ci_high": high,
                      "seeds": len(checked)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _class_names(classes, num_classes: int) -> list:
    names = list(range(num_classes)) if classes is None else list(classes)
    if len(names) != num_classes:
        raise ValueError(f"classes must name all {num_classes} classes, got {names!r}")
    return names


def _check_bootstrap(n_boot, level, chunk_size) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _percentile_interval(replicates: torch.Tensor, level: float) -> tuple:
    """The central ``level`` percentile interval, replicates where a statistic is undefined
    (NaN) left out."""
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64,
                         device=replicates.device)
    low, high = torch.nanquantile(replicates.double(), tails).tolist()
    return low, high
