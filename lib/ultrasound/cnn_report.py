"""The CNN chapter's tables: how the recipe was chosen, each network over its training seeds on
validation and test, the networks compared on the same resamples, and a model card.

Kept apart from ``lib.ultrasound.evaluate`` (which training imports), so that editing a table
does not retrain the networks.
"""
import json

import pandas as pd
import torch

from ..book import paths
from ..kernels import bootstrap, paired
from . import evaluate

SELECTION_LOG = "cnn-selection.csv"
LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
          "macro_f1": "macro-F1", "auc_ovr": "one-vs-rest AUC"}


def selection_table(path=None) -> pd.DataFrame:
    """Every recipe tried while choosing the training, with its validation scores averaged
    over the seeds it was trained with (``book/cnn-selection.csv``; the test split was never
    used to choose), and the precision each trained in where the log records the settings.
    One row per (candidate, network), best validation balanced accuracy first within each
    network."""
    log = pd.read_csv(path or paths.BOOK_DIR / SELECTION_LOG)
    if "settings" in log:  # the precision each candidate trained in (minutes depend on it)
        log["precision"] = log["settings"].map(
            lambda text: json.loads(text).get("precision", "float32"))
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
    return table.sort_values(["arch", "validation balanced accuracy"],
                             ascending=[True, False]).round(3)


# Candidates within this much validation balanced accuracy of the best count as tied (about
# one validation image); the lower validation loss decides among them.
TIE = 0.01


# Cheaper versions of a candidate (same recipe, less arithmetic) -> the candidate they stand in
# for. A variant replaces the winner it stands in for when its validation balanced accuracy is
# at most ``TIE`` below the winner's: the time budget counts, a lost image does not.
SPEED_VARIANTS = {"fast-long-halfwidth": "fast-long", "xlong-halfwidth": "fast-long"}


def selection_winners(table: pd.DataFrame, tie: float = TIE,
                      variants: dict = SPEED_VARIANTS) -> dict:
    """The rule applied to :func:`selection_table`: per network, ``{"winner", "tied"}`` with the
    winning candidate's name and the names of the others within ``tie`` of the best validation
    balanced accuracy (the lower validation loss wins among the tied), then ``"speed_variant"``:
    the cheaper variant (``variants``) that replaced the winner, or None; ``"replaces"`` then
    names the winner it replaced."""
    winners = {}
    for arch, rows in table.groupby(level="arch", sort=False):
        rows = rows.droplevel("arch")
        score = rows["validation balanced accuracy"]
        tied = rows[score >= score.max() - tie - 1e-12]
        winner = tied["validation loss"].idxmin()
        stand_ins = [name for name, base in variants.items()
                     if base == winner and name in rows.index
                     and score[name] >= score[winner] - tie - 1e-12]
        picked = {"winner": winner, "tied": [c for c in tied.index if c != winner],
                  "speed_variant": None}
        if stand_ins:  # the best-scoring of them
            best_variant = max(stand_ins, key=lambda name: score[name])
            picked.update(speed_variant=best_variant, replaces=winner, winner=best_variant)
        winners[arch] = picked
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
