"""Choose the CNN training recipe on the validation split: train candidates, log them.

Each candidate is a complete set of training settings (``CANDIDATES``, on top of ``BASE``, the
book's recipe before this selection). Every (candidate, network, seed) is trained through
``lib.ultrasound.checkpoints.load_trained`` (cached by its key: rerunning skips what is done)
and appended to ``book/cnn-selection.csv`` with its validation loss, accuracy, balanced
accuracy, macro-F1 and AUC at the kept epoch, its training time and the machine's load. The
test split is never loaded here.

    NNSA_CACHE_DIR=/tmp/candidates python scripts/select_cnn.py --candidates base --seeds 0 1
    python scripts/select_cnn.py --summary    # mean over seeds per candidate and network

The rule, fixed before the candidates that follow it were trained: a network's recipe is
the candidate with the best validation balanced accuracy (ties within 0.01: the lower
validation loss) among those whose training of every book network (three seeds, plus the
shuffled-label ResNet-18) fits the cold-build budget on a 2-core CPU without bfloat16: about
50 minutes of the 75, two networks side by side, one thread each. If the best candidate within
the budget is more than 0.03 below the best overall, the book says so.

Point ``NNSA_CACHE_DIR`` elsewhere for exploratory candidates, so that the book's cache holds
only the networks it uses.
"""
import argparse
import csv
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import data  # noqa: E402
from lib.book import paths  # noqa: E402
from lib.ultrasound import checkpoints, evaluate, models, train  # noqa: E402

LOG = paths.ROOT / "book" / "cnn-selection.csv"
COLUMNS = ("candidate", "arch", "seed", "key", "epochs", "epochs_run", "best_epoch",
           "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_auc",
           "train_accuracy", "seconds", "threads", "load_1min", "settings")

# The book's recipe before the selection (per network: the epochs).
BASE = {"image_size": 96, "batch_size": 32, "lr": 2e-3, "weight_decay": 5e-4,
        "ema_decay": 0.99, "label_smoothing": 0.0, "mixup": False, "class_weighting": "inverse",
        "precision": "float32",
        "channels_last": False, "augment": {},
        "resnet18": {"epochs": 50, "patience": 50}, "vgg16": {"epochs": 35, "patience": 35}}
FAST = {"precision": "bfloat16", "channels_last": True}
STRONG_AUGMENT = {"rotate": 15.0, "scale": 0.2, "shift": 0.1, "gain": 0.15, "contrast": 0.3,
                  "speckle": 0.1}
STRONGER_AUGMENT = {"rotate": 20.0, "scale": 0.25, "shift": 0.15, "gain": 0.2, "contrast": 0.4,
                    "speckle": 0.15}


def epochs(resnet18, vgg16):
    return {"resnet18": {"epochs": resnet18, "patience": resnet18},
            "vgg16": {"epochs": vgg16, "patience": vgg16}}


def reduced_width(resnet18, vgg16, width=0.5):
    """VGG-16 at a fraction of its channel width (arithmetic scales with its square),
    precision "auto" (the book's: bfloat16 where the machine has it, else float32)."""
    changes = {**FAST, "precision": "auto", **epochs(resnet18, vgg16)}
    changes["vgg16"]["width"] = width
    return changes


CANDIDATES = {
    "base": {},
    "base-fast": FAST,
    "fast-wd0.05-ls0.1": {**FAST, "weight_decay": 0.05, "label_smoothing": 0.1},
    "fast-strongaug": {**FAST, "augment": STRONG_AUGMENT},
    "fast-lr1e-3": {**FAST, "lr": 1e-3},
    "fast-long": {**FAST, **epochs(80, 50)},
    "fast-long-halfwidth": reduced_width(80, 50),
    "xlong-halfwidth": reduced_width(80, 80),
    # Candidates that fit the cold-build budget on a 2-core CPU without bfloat16.
    "xlong-quarterwidth": reduced_width(30, 80, width=0.25),
    "fast-batch16": {**FAST, "batch_size": 16},
    "fast-batch16-short": {**FAST, "precision": "auto", "batch_size": 16, **epochs(30, 80)},
    "fast-mixup": {**FAST, "mixup": True},
    "fast-strongaug-mixup": {**FAST, "augment": STRONG_AUGMENT, "mixup": True},
    "fast-128px": {**FAST, "image_size": 128},
    "fast-sqrtweights": {**FAST, "class_weighting": "sqrt"},
    "fast-strongaug-sqrtweights": {**FAST, "augment": STRONG_AUGMENT, "class_weighting": "sqrt"},
    "fast-strongaug-sqrtweights-long": {**FAST, "augment": STRONG_AUGMENT,
                                        "class_weighting": "sqrt", **epochs(80, 50)},
    "fast-xaug-sqrtweights-long": {**FAST, "augment": STRONGER_AUGMENT,
                                   "class_weighting": "sqrt", **epochs(80, 50)},
}


def settings(name: str, arch: str) -> dict:
    """The complete training settings of candidate ``name`` for ``arch``."""
    merged = {key: value for key, value in BASE.items() if key not in models.ARCHS}
    merged.update(BASE[arch])
    changes = dict(CANDIDATES[name])
    per_arch = {a: changes.pop(a, {}) for a in models.ARCHS}
    merged.update(changes, **per_arch[arch])
    return merged


def validation_row(name: str, arch: str, seed: int) -> dict:
    changes = settings(name, arch)
    # The key before training: it hashes the training code as it is now.
    key = checkpoints.checkpoint_key(arch, checkpoints.config_for(arch, "book", **changes),
                                     None, seed)
    model, run = checkpoints.load_trained(arch, "book", seed=seed, **changes)
    val = data.load_busi("val", size=run.config.image_size)
    logits = models.predict_logits(model, val.images).float().cpu()
    train_labels = data.load_busi("train", size=run.config.image_size).labels
    weights = train.class_weights(train_labels, len(val.classes))
    scores = evaluate.metrics(val.labels, logits)
    loss = F.cross_entropy(logits, val.labels, weight=weights).item()
    return {"candidate": name, "arch": arch, "seed": seed,
            "key": key,
            "epochs": run.config.epochs, "epochs_run": run.epochs_run,
            "best_epoch": run.best_epoch, "val_loss": round(loss, 4),
            "val_accuracy": round(scores["accuracy"], 4),
            "val_balanced_accuracy": round(scores["balanced_accuracy"], 4),
            "val_macro_f1": round(scores["macro_f1"], 4), "val_auc": round(scores["auc_ovr"], 4),
            "train_accuracy": round((run.train_scores or {}).get("accuracy", float("nan")), 4),
            "seconds": round(run.seconds, 1), "threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 2),
            "settings": json.dumps(asdict(run.config), sort_keys=True)}


def logged_keys() -> set:
    if not LOG.exists():
        return set()
    with LOG.open() as file:
        return {(row["candidate"], row["arch"], row["seed"]) for row in csv.DictReader(file)}


def append(row: dict) -> None:
    new = not LOG.exists()
    with LOG.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)


def summary():
    import pandas as pd
    table = pd.read_csv(LOG)
    columns = ["val_loss", "val_accuracy", "val_balanced_accuracy", "val_auc", "seconds"]
    grouped = table.groupby(["arch", "candidate"], sort=False)
    result = grouped[columns].mean().round(3)
    result["seeds"] = grouped.size()
    result["bacc_min"] = grouped["val_balanced_accuracy"].min()
    result["bacc_max"] = grouped["val_balanced_accuracy"].max()
    print(result.to_string())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=[])
    parser.add_argument("--archs", nargs="+", choices=models.ARCHS, default=list(models.ARCHS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (default: torch's); a run repeats exactly only with "
                             "the same number")
    parser.add_argument("--summary", action="store_true", help="print the log's means")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done = logged_keys()
    for name in args.candidates:
        for arch in args.archs:
            for seed in args.seeds:
                if (name, arch, str(seed)) in done:
                    print(f"{name} {arch} seed {seed}: already logged")
                    continue
                row = validation_row(name, arch, seed)
                append(row)
                print({k: v for k, v in row.items() if k not in ("settings", "key")},
                      flush=True)
    if args.summary:
        summary()


if __name__ == "__main__":
    main()
