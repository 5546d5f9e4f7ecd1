"""Which test images a chapter analyses: reproducible picks by class and outcome."""
import torch


def by_class_and_outcome(labels, correct, classes, count: int, seed: int = 0) -> list:
    """Indices of up to ``count`` images per class of ``classes`` and per outcome.

    ``labels`` (N,) are the true classes, ``correct`` (N,) booleans say whether the prediction
    was right. The groups come class by class, the correct images before the wrong ones; the
    images of a group in a random order fixed by ``seed``. Returns a list of ints.
    """
    labels, correct = torch.as_tensor(labels), torch.as_tensor(correct)
    if labels.shape != correct.shape or labels.ndim != 1:
        raise ValueError(f"labels and correct must be vectors of one length; got shapes "
                         f"{tuple(labels.shape)} and {tuple(correct.shape)}")
    _check_count(count)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    chosen = []
    for label in classes:
        for outcome in (True, False):
            group = order[(labels[order] == label) & (correct[order] == outcome)]
            chosen += group[:count].tolist()
    return chosen


def first_per_class(labels, classes, count: int) -> torch.Tensor:
    """Indices of the first ``count`` images of each class of ``classes``, interleaved:
    the first of each class, then the second of each, ... A (count * len(classes),) long
    tensor on the device of ``labels``; a ValueError when a class has fewer images."""
    _check_count(count)
    per_class = []
    for label in classes:
        found = torch.nonzero(labels == label).flatten()
        if len(found) < count:
            raise ValueError(f"class {label} has {len(found)} images, fewer than the "
                             f"{count} asked for")
        per_class.append(found[:count])
    return torch.stack(per_class, dim=1).flatten()


def _check_count(count):
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
