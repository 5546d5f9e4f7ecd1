"""Feature reduction: retrain on the top-k inputs of a ranking and test it against all inputs.

Two designs: ``feature_reduction`` ranks once for all folds (the ranking of the networks of
every fold, which together saw every row, the test rows included) and adds baselines (the
reverse and random orderings); ``nested_reduction`` lets each outer fold keep the top-k of
its own ranking, computed from that fold's network and training rows only, so no test row
takes part in choosing the inputs it is scored with. ``fixed_sequence`` then asks, for
k = D - 1, D - 2, ..., 1 in turn, whether the networks on k inputs are non-inferior to the
network on all D within pre-specified margins, and stops at the first k that fails: every
k is tested at level alpha and the family-wise error stays at alpha.
"""
import numbers
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..kernels import checks
from .cv import CVSplits, cached_cross_validate, cross_validate
from .ensemble import MLPConfig
from .stats import (METRIC_LABELS, METRICS, check_level, check_margin, detectable_difference,
                    noninferiority_test, standard_error_floor, summarize)
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
    """Mean and corrected CI per (ordering, k): every ordering but the random ones, which
    are averaged per fold into one ordering "random (mean)"."""
    folds = reduction.folds
    kept = folds[~folds["ordering"].str.startswith("random")]
    table = pd.concat([kept, _random_mean(folds)], ignore_index=True)
    return summarize(table, reduction.ratio, by=("ordering", "k"), conf_level=conf_level)


NESTED = "nested Sobol ST"


def nested_reduction(X, y, splits: CVSplits, fold_rankings, config: MLPConfig = MLPConfig(),
                     *, features=FEATURES, ks=None, seed: int = 0,
                     cached: bool = True) -> Reduction:
    """Retrain every fold on the top-k inputs of its own ranking, for every k.

    ``fold_rankings``: one ranking per fold (all features, most important first), computed
    from that fold's training rows only (e.g. ``folds.rankings`` of the fold networks under
    their folds' input models). Fold f's network on k inputs keeps the first k of ranking
    f and is trained and scored on fold f's rows, with the fold's preprocessing and initial
    weights; a feature set met twice in a fold is trained once. The ordering is named
    ``NESTED`` in the result.
    """
    features = list(features)
    fold_rankings = [_check_ranking(r, features) for r in fold_rankings]
    if len(fold_rankings) != splits.num_splits:
        raise ValueError(f"need one ranking per fold ({splits.num_splits}); got "
                         f"{len(fold_rankings)}")
    ks = _check_ks(ks, len(features))
    models = {}  # (fold, kept features) -> model number
    plan = []
    for fold, order in enumerate(fold_rankings):
        for k in ks:
            kept = frozenset(order[:k])
            plan.append((k, fold, models.setdefault((fold, kept), len(models))))
    masks = torch.zeros(len(models), len(features), dtype=torch.bool)
    for (fold, kept), m in models.items():
        masks[m, [features.index(f) for f in kept]] = True
    fold_of_model = torch.tensor([fold for fold, _ in models])
    run = cached_cross_validate if cached else cross_validate
    cv = run(X, y, splits, config, input_masks=masks, fold_of_model=fold_of_model, seed=seed,
             features=features, desc="nested reduction",
             **({"name": "tabular-nested"} if cached else {}))
    names = {m: ", ".join(f for f in features if f in kept) for (_, kept), m in models.items()}
    scores = cv.metrics.set_index("subset")
    folds = pd.DataFrame(plan, columns=["k", "fold", "model"])
    folds.insert(0, "ordering", NESTED)
    folds["features"] = folds["model"].map(names)
    for name in METRICS:
        folds[name] = folds["model"].map(scores[name])
    folds = folds[["ordering", "k", "fold", "features", *METRICS]]
    return Reduction(folds, {NESTED: "per fold"}, splits.test_train_ratio(), len(features),
                     len(models))


@dataclass
class FixedSequence:
    """Non-inferiority of the networks on k inputs, k = D - 1, D - 2, ..., tested in order.

    ``table``: one row per k (in test order) with the most frequent kept set (``features``,
    and ``folds with it``); per metric the mean loss against all D inputs, its corrected
    standard error ``se``, its one-sided upper confidence bound, the p-value, the smallest
    loss the design detects with ``power`` (``detectable``) and what that would be with
    infinitely many repeats of the same split (``floor``: the corrected variance keeps its
    n_test / n_train part); and the ``decision``: "non-inferior", "not shown to be
    non-inferior" (the sequence stops here) or "not tested" (after a stop; the numbers are
    shown, the decision is not made).
    """
    table: pd.DataFrame
    num_features: int
    margins: dict
    alpha: float
    power: float

    @property
    def smallest_k(self) -> int:
        """The smallest k shown non-inferior; D when no input could be dropped."""
        passed = self.table.index[self.table["decision"] == "non-inferior"]
        return int(passed.min()) if len(passed) else self.num_features

    @property
    def stopped_at(self):
        """The k at which non-inferiority was not shown (None when every k passed)."""
        failed = self.table.index[self.table["decision"] == "not shown to be non-inferior"]
        return int(failed[0]) if len(failed) else None

    @property
    def verdict(self) -> str:
        """Short: "non-inferior down to k = 2", or "no k shown non-inferior"."""
        if self.smallest_k == self.num_features:
            return "no k shown non-inferior"
        return f"non-inferior down to k = {self.smallest_k}"

    def conclusion(self) -> str:
        """What the sequence shows, in words, from its decisions."""
        D, k, stop = self.num_features, self.smallest_k, self.stopped_at
        margins = " and ".join(f"{100 * margin:g} points of {METRIC_LABELS[name]}"
                               for name, margin in self.margins.items())
        if stop is None:
            return (f"the networks are non-inferior to the network on all {D} inputs at "
                    f"every k down to a single input (margins {margins})")
        if k == D:
            return (f"non-inferiority within {margins} is not shown even for k = {stop}: "
                    f"the data do not show that any input can be dropped")
        return (f"the networks on k = {k} or more inputs are non-inferior to the network on "
                f"all {D} (margins {margins}); at k = {stop} non-inferiority is not shown "
                f"and the sequence stops")


def _kept_sets(group: pd.DataFrame) -> tuple:
    counts = Counter(group["features"])
    features, count = counts.most_common(1)[0]
    return features, count


def fixed_sequence(reduction: Reduction, ordering: str, margins: dict, *, alpha: float = 0.05,
                   power: float = 0.8, ks=None) -> FixedSequence:
    """The fixed-sequence non-inferiority procedure over k for one ordering of a reduction.

    ``margins``: ``{metric: margin}``, e.g. ``{"accuracy": 0.05, "roc_auc": 0.05}``, each in
    (0, 1). At each k the networks on k inputs must be non-inferior in every metric at once
    (one-sided corrected tests at ``alpha``, ``stats.noninferiority_test``; an
    intersection-union test, which needs no further correction); k runs from ``ks`` (default
    D - 1 down to 1, in that order) and the first k that fails ends the sequence, which keeps
    the family-wise error at ``alpha``. Pre-specify margins, ``alpha`` and the order.
    """
    if not margins:
        raise ValueError("give at least one margin, e.g. {'accuracy': 0.05}")
    for name, margin in margins.items():
        checks.choice("metric", name, METRICS)
        check_margin(f"margin of {name}", margin)
    alpha, power = check_level("alpha", alpha), check_level("power", power)
    folds = reduction.folds[reduction.folds["ordering"] == ordering]
    if folds.empty:
        raise ValueError(f"unknown ordering {ordering!r}; valid: "
                         f"{', '.join(sorted(set(reduction.folds['ordering'])))}")
    D = reduction.num_features
    full = folds[folds["k"] == D].set_index("fold").sort_index()
    if full.empty:
        raise ValueError(f"the experiment has no k = {D} (all features) to compare with; "
                         f"include it in ks")
    order = [k for k in range(D - 1, 0, -1) if k in set(folds["k"])] if ks is None \
        else _check_ks(ks, D - 1)
    rows, stopped = [], False
    for k in order:
        group = folds[folds["k"] == k].set_index("fold").loc[full.index]
        features, count = _kept_sets(group)
        row = {"k": k, "features": features, "folds with it": count}
        passed = True
        for name, margin in margins.items():
            test = noninferiority_test(full[name], group[name], reduction.ratio, margin, alpha)
            row.update({f"loss ({name})": test.loss, f"se ({name})": test.se,
                        f"bound ({name})": test.bound, f"p ({name})": test.p,
                        f"detectable ({name})": detectable_difference(test.se, test.folds,
                                                                      alpha, power),
                        f"floor ({name})": detectable_difference(
                            standard_error_floor(test.se, test.folds, reduction.ratio),
                            test.folds, alpha, power)})
            passed &= test.non_inferior
        row["decision"] = "not tested" if stopped else (
            "non-inferior" if passed else "not shown to be non-inferior")
        stopped |= not passed
        rows.append(row)
    return FixedSequence(pd.DataFrame(rows).set_index("k"), D, dict(margins), alpha, power)


