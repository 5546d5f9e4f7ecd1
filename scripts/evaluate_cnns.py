"""The frozen networks of a profile on validation and test: every seed, summarised over seeds.

Run once the recipe is frozen in ``lib.book.profiles.CNN_TRAINING`` (chosen on validation by
``scripts/select_cnn.py``); trains whatever is not cached yet.

    python scripts/evaluate_cnns.py [--profile book] [--n-boot 2000]
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import data  # noqa: E402
from lib.ultrasound import checkpoints, evaluate, models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="book")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    args = parser.parse_args()
    pd.set_option("display.width", 120)
    loaded = checkpoints.load_all(args.profile)
    size = next(iter(loaded.values()))[1].config.image_size
    train_labels = data.load_busi("train", size=size).labels
    for (arch, seed), (_, run) in loaded.items():
        print(f"{arch} seed {seed}: {run.seconds / 60:.1f} min on {run.trained_on}, "
              f"best epoch {run.best_epoch} of {run.epochs_run}, training accuracy "
              f"{run.train_scores['accuracy']:.3f}")
    for split in args.splits:
        images = data.load_busi(split, size=size)
        baseline = evaluate.majority_baseline(train_labels, images.labels, len(images.classes))
        print(f"\n=== {split}: {len(images.labels)} images; majority class "
              f"{images.classes[baseline['class']]}: accuracy {baseline['accuracy']:.3f}, "
              f"balanced accuracy {baseline['balanced_accuracy']:.3f}")
        for arch in models.ARCHS:
            scores = {seed: models.predict_proba(model, images.images).cpu()
                      for (name, seed), (model, _) in loaded.items() if name == arch}
            summary = evaluate.seed_summary(images.labels, scores.values(),
                                            classes=images.classes, n_boot=args.n_boot)
            print(f"\n{arch}, {len(scores)} seeds: mean, range over seeds, 95 % bootstrap "
                  f"interval of the seed mean")
            print(summary.round(3).to_string())
            for seed, probs in scores.items():
                matrix = evaluate.confusion_matrix(images.labels, probs.argmax(dim=1),
                                                   len(images.classes))
                per_seed = evaluate.metrics(images.labels, probs)
                print(f"  seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                     per_seed.items())
                      + f"; confusion (rows true) {matrix.tolist()}")
    _, run = checkpoints.load_shuffled_labels(args.profile)
    print(f"\nshuffled labels ({run.arch}): {run.seconds / 60:.1f} min, {run.epochs_run} "
          f"epochs, accuracy on its shuffled training labels "
          f"{run.train_scores['accuracy']:.3f}, validation balanced accuracy "
          f"{run.history['val_balanced_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
