"""Classification metrics with bootstrap confidence intervals.

Accuracy, balanced accuracy, macro-F1 and the macro one-vs-rest ROC AUC, defined as in
scikit-learn, for any number of classes. A bootstrap replicate is a vector of counts (how
often each test case was drawn), so all replicates are computed at once from a
(replicates x cases) count matrix: the confusion matrices are one matrix product, and the AUCs
come from one sort of the scores. The point estimates are the same computation with every
count equal to one.
"""
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
    preds = scores.argmax(dim=1)
    cells = torch.nn.functional.one_hot(labels * num_classes + preds, num_classes ** 2)
    confusion = (counts @ cells.to(counts)).view(-1, num_classes, num_classes)
    result = _confusion_metrics(confusion)
    result["auc_ovr"] = torch.stack([_weighted_auc(scores[:, k], labels == k, counts)
                                     for k in range(num_classes)]).mean(dim=0)
    return result


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
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    estimate = metrics(labels, scores)
    counts = bootstrap_counts(len(labels), n_boot, seed, device=labels.device)
    chunks = [replicate_metrics(labels, scores, counts[start:start + chunk_size])
              for start in range(0, n_boot, chunk_size)]
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64,
                         device=labels.device)
    rows = {}
    for name in METRICS:
        replicates = torch.cat([chunk[name] for chunk in chunks])
        low, high = torch.nanquantile(replicates, tails).tolist()
        rows[name] = {"estimate": estimate[name], "ci_low": low, "ci_high": high}
    return pd.DataFrame.from_dict(rows, orient="index")
