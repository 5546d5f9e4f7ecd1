"""The CNN chapter's tables: how the recipe was chosen, each network over its training seeds on
validation and test, the networks compared on the same resamples, and a model card.

Kept apart from ``lib.ultrasound.evaluate`` (which training imports), so that editing a table
does not retrain the networks.
"""
import itertools
import json

import pandas as pd
import torch

from ..book import paths
from ..kernels import bootstrap, paired
from . import evaluate

SELECTION_LOG = "cnn-selection.csv"
LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
          "macro_f1": "macro-F1", "auc_ovr": "one-vs-rest AUC"}


# The cold-build budget for training (of the book's 75 minutes) on the reference machine, a
# 2-core CPU without bfloat16 (AVX2), where the book trains two networks side by side, one
# thread each, in float32. The minutes per epoch were measured there, per (network, channel
# width, image side), from the selection log's rows "xlong-halfwidth", "xlong-quarterwidth" and
# "fast-batch16-short"; a candidate of any other shape is not counted as fitting (each has more
# arithmetic per epoch than a measured shape that already misses the budget).
BUDGET_MINUTES = 50
BUDGET_PARALLEL = 2
BUDGET_NETWORKS = {"vgg16": 3, "resnet18": 4}  # three seeds; plus the shuffled-label ResNet-18
BUDGET_EPOCH_MINUTES = {("vgg16", 0.5, 96): 64.4 / 80, ("vgg16", 0.25, 96): 15.1 / 80,
                        ("resnet18", 1.0, 96): 10.3 / 30}
# A budget-fitting recipe this far below the best candidate overall is reported as a loss.
BUDGET_MARGIN = 0.03


def budget_minutes(arch: str, settings: dict) -> float:
    """Estimated minutes to train one network of ``arch`` with ``settings`` on the reference
    machine (NaN for a shape not measured there)."""
    key = (arch, float(settings.get("width", 1.0)), int(settings.get("image_size", 0)))
    per_epoch = BUDGET_EPOCH_MINUTES.get(key)
    return float("nan") if per_epoch is None else per_epoch * settings.get("epochs", 0)


def selection_table(path=None) -> pd.DataFrame:
    """Every recipe tried while choosing the training, with its validation scores averaged
    over the seeds it was trained with (``book/cnn-selection.csv``; the test split was never
    used to choose), the precision each trained in and the estimated minutes per network on
    the budget's reference machine, where the log records the settings. One row per
    (candidate, network), best validation balanced accuracy first within each network."""
    log = pd.read_csv(path or paths.BOOK_DIR / SELECTION_LOG)
    if "settings" in log:  # the precision each candidate trained in (minutes depend on it)
        settings = log["settings"].map(json.loads)
        log["precision"] = settings.map(lambda value: value.get("precision", "float32"))
        log["budget"] = [budget_minutes(arch, value)
                         for arch, value in zip(log["arch"], settings)]
    grouped = log.groupby(["arch", "candidate"], sort=False)
    table = pd.DataFrame({
        "seeds": grouped["seed"].nunique(),
        "validation balanced accuracy": grouped["val_balanced_accuracy"].mean(),
        "validation loss": grouped["val_loss"].mean(),
        "validation AUC": grouped["val_auc"].mean(),
        "best epoch": grouped["best_epoch"].mean(),
        "training minutes": grouped["seconds"].mean() / 60})
    if "precision" in log:
        table["precision"] = grouped["precision"].first()
        table["budget minutes"] = grouped["budget"].first()
    return table.sort_values(["arch", "validation balanced accuracy"],
                             ascending=[True, False]).round(3)


# Candidates within this much validation balanced accuracy of the best count as tied (about
# one validation image); the lower validation loss decides among them.
TIE = 0.01


def _best(rows: pd.DataFrame, score: pd.Series, loss: pd.Series, tie: float):
    """The best of ``rows`` by ``score``, ties within ``tie`` broken by the lower ``loss``;
    and the others tied with it."""
    tied = rows.index[score >= score.max() - tie - 1e-12]
    winner = loss[tied].idxmin()
    return winner, [name for name in tied if name != winner]


def cold_training_minutes(choice: dict, table: pd.DataFrame) -> float:
    """Wall minutes to train every book network with ``choice`` ({arch: candidate}) on the
    reference machine, ``BUDGET_PARALLEL`` at a time."""
    total = sum(BUDGET_NETWORKS[arch] * table.loc[(arch, name), "budget minutes"]
                for arch, name in choice.items())
    return total / BUDGET_PARALLEL


def selection_winners(table: pd.DataFrame, tie: float = TIE,
                      budget: float = BUDGET_MINUTES) -> dict:
    """The rule applied to :func:`selection_table`. Of the pairs of candidates (one per
    network) whose cold training fits ``budget`` minutes on the reference machine, the pair
    with the highest mean validation balanced accuracy wins; pairs within ``tie`` of it count
    as tied and the lower mean validation loss decides. Per network: ``{"winner", "tied"}``
    (the other candidates of the tied pairs), ``"best"`` (the best candidate regardless of
    the budget, by the same tie rule), ``"gap"`` (its lead over the winner), ``"exceeds_margin"``
    (whether the gap exceeds ``BUDGET_MARGIN``); plus ``"minutes"``, the winning pair's
    cold-training minutes. Without a fitting pair (or without budget minutes in the table)
    each network takes its best candidate and ``"minutes"`` is NaN."""
    archs = list(dict.fromkeys(table.index.get_level_values("arch")))
    score = table["validation balanced accuracy"]
    loss = table["validation loss"]
    best = {arch: _best(table.loc[arch], score[arch], loss[arch], tie) for arch in archs}
    pairs = []
    if "budget minutes" in table:
        for names in itertools.product(*(table.loc[arch].index for arch in archs)):
            choice = dict(zip(archs, names))
            minutes = cold_training_minutes(choice, table)
            if minutes <= budget:  # NaN never fits
                pairs.append((choice, minutes))
    if pairs:
        frame = pd.DataFrame({
            "score": [sum(score[(a, n)] for a, n in c.items()) / len(c) for c, _ in pairs],
            "loss": [sum(loss[(a, n)] for a, n in c.items()) / len(c) for c, _ in pairs]})
        chosen, tied = _best(frame, frame["score"], frame["loss"], tie)
        choice, minutes = pairs[chosen]
        tied_names = {arch: sorted({pairs[i][0][arch] for i in tied} - {choice[arch]})
                      for arch in archs}
    else:
        choice = {arch: winner for arch, (winner, _) in best.items()}
        tied_names = {arch: tied for arch, (_, tied) in best.items()}
        minutes = float("nan")
    winners = {}
    for arch in archs:
        top = best[arch][0]
        gap = float(score[(arch, top)] - score[(arch, choice[arch])])
        winners[arch] = {"winner": choice[arch], "tied": tied_names[arch], "best": top,
                         "gap": gap, "exceeds_margin": gap > BUDGET_MARGIN, "minutes": minutes}
    return winners


def winner_settings(arch: str, candidate: str, path=None) -> dict:
    """The training settings logged for ``candidate`` of ``arch`` (the selection log's JSON)."""
    import json

    log = pd.read_csv(path or paths.BOOK_DIR / SELECTION_LOG)
    rows = log[(log["arch"] == arch) & (log["candidate"] == candidate)]
    if rows.empty:
        raise ValueError(f"no candidate {candidate!r} for {arch} in the selection log")
    return json.loads(rows["settings"].iloc[0])


def over_seeds(summaries: dict) -> pd.DataFrame:
    """``{split: evaluate.seed_summary(...)}`` side by side: per metric, the mean over seeds,
    its range and the bootstrap interval of the seed mean, on each split, as text cells."""
    columns = {}
    for split, table in summaries.items():
        columns[f"{split}: mean [95 % CI]"] = [
            f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            for _, row in table.iterrows()]
        columns[f"{split}: seed range"] = [f"{row['min']:.3f}–{row['max']:.3f}"
                                           for _, row in table.iterrows()]
    index = [LABELS.get(name, name) for name in next(iter(summaries.values())).index]
    return pd.DataFrame(columns, index=pd.Index(index, name="metric"))


def paired_difference(labels, scores_a: list, scores_b: list, *, metric="balanced_accuracy",
                      n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                      margin: float = 0.0) -> dict:
    """Network A minus network B in ``metric``, each averaged over its seeds, on the same
    bootstrap resamples of the cases: the difference, its percentile interval and the verdict
    (``lib.kernels.paired.verdict``: higher, lower or indistinguishable)."""
    counts = bootstrap.bootstrap_counts(len(labels), n_boot, seed, device=labels.device)
    ones = torch.ones(1, len(labels), dtype=torch.float64, device=labels.device)

    def seed_mean(scores, weights):
        return torch.stack([evaluate.replicate_metrics(labels, s, weights)[metric]
                            for s in scores]).mean(dim=0)
    point = (seed_mean(scores_a, ones) - seed_mean(scores_b, ones)).item()
    replicates = seed_mean(scores_a, counts) - seed_mean(scores_b, counts)
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64,
                         device=replicates.device)
    low, high = torch.nanquantile(replicates, tails).tolist()
    return {"difference": point, "ci_low": low, "ci_high": high,
            "verdict": paired.verdict(low, high, margin, len(labels))}


def comparison_table(comparisons: dict, digits: int = 3) -> pd.DataFrame:
    """``{label: paired_difference(...)}`` as a table: difference, interval, verdict."""
    table = pd.DataFrame(comparisons).T
    numbers = ["difference", "ci_low", "ci_high"]
    table[numbers] = table[numbers].astype(float).round(digits)
    return table.rename(columns={"ci_low": "95 % CI low", "ci_high": "95 % CI high"})


def weakest_class(recall: pd.DataFrame) -> tuple:
    """The class with the lowest recall estimate and that estimate."""
    name = recall["estimate"].idxmin()
    return name, float(recall.loc[name, "estimate"])


def model_card(arch_title: str, config, runs: list, *, split_sizes: dict,
               validation: pd.DataFrame, test: pd.DataFrame, recall: pd.DataFrame,
               baseline: dict, recall_seed: int = 0) -> pd.Series:
    """A network's model card as a column of short entries: the data and split, the recipe,
    validation and test balanced accuracy over seeds (mean [95 % CI], range), the
    majority-class baseline and the weakest class's recall (``recall``, of seed
    ``recall_seed``)."""
    def entry(table, name="balanced_accuracy"):
        row = table.loc[name]
        return (f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}], seeds "
                f"{row['min']:.2f}–{row['max']:.2f}")
    weak, weak_recall = weakest_class(recall)
    minutes = sum(run.seconds for run in runs) / 60 / len(runs)
    return pd.Series({
        "data": "BUSI, 3 classes, images of " f"{config.image_size} px",
        "split (train / val / test)": " / ".join(str(split_sizes[s])
                                                 for s in ("train", "val", "test")),
        "recipe": (f"{config.epochs} epochs, AdamW one-cycle, peak lr {config.lr:g}, "
                   f"weight decay {config.weight_decay:g}, batch {config.batch_size}"
                   + (f", {config.width:g} x channel width" if config.width != 1 else "")),
        "training seeds": ", ".join(str(run.seed) for run in runs),
        "minutes per training": f"{minutes:.1f}",
        "validation balanced accuracy": entry(validation),
        "test balanced accuracy": entry(test),
        "test accuracy": entry(test, "accuracy"),
        "majority-class accuracy (test)": f"{baseline['accuracy']:.2f}",
        f"weakest class (test recall, seed {recall_seed})": f"{weak} ({weak_recall:.2f})",
    }, name=arch_title)
