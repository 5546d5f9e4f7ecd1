"""Feature reduction: retrain on the top-k inputs of a ranking and compare with all inputs.

Baselines show what the ranking is worth: its reverse and random orderings of the same inputs.
"""
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..kernels import checks
from .cv import CVSplits, cached_cross_validate, cross_validate
from .ensemble import MLPConfig
from .stats import METRICS, corrected_ttest, summarize
from .table import FEATURES


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
    checks.integer("n_random", n_random, 0)
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
