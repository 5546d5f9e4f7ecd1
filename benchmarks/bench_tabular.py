"""Training many small MLPs: lib.diabetes's batched training against one model at a time.

    .venv/bin/python benchmarks/bench_tabular.py [--subsets 8] [--big-subsets 64]

On the Pima table under 5 x 5 repeated stratified cross-validation, the same networks
(8 -> 16 -> 8 -> 1, ReLU, full-batch Adam, lr 0.01, L2 1e-4, early stopping with patience 50)
are trained

1. by ``lib.cv.cross_validate``, all ``--subsets`` x 25 networks in one batch;
2. by the same code, one network at a time (a Python loop over networks);
3. by scikit-learn's ``MLPClassifier`` (the tool a practitioner would reach for), one pipeline
   per network: median imputation, scaling, then the same architecture with full-batch Adam
   and early stopping on 20 % of the training part (scikit-learn stops on validation
   accuracy, not loss).

It prints the wall and CPU time of each, and their ratios to the batched run; then the
batched run alone at the size of the chapter's feature-reduction study
(``--big-subsets`` x 25 networks). The load average is printed too: other work on the same
cores slows every side.
"""
import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.diabetes import cv, ensemble, table  # noqa: E402
from lib.timing import best_times  # noqa: E402


def subset_masks(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` feature subsets: all features first, then random ones that keep Glucose."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, 8, generator=generator) < 0.6
    masks[0] = True
    masks[:, 1] = True
    return masks


def batched(X, y, splits, masks, config):
    return cv.cross_validate(X, y, splits, config, input_masks=masks, seed=0,
                             show_progress=False)


def one_at_a_time(X, y, splits, masks, config):
    """The same networks, each trained alone (chunks of one model)."""
    return cv.cross_validate(X, y, splits, config, input_masks=masks, seed=0,
                             show_progress=False, chunk_models=1)


def scikit_learn(X, y, splits, masks, config):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    values, labels = X.cpu().numpy(), y.cpu().numpy()
    scores = []
    for mask in masks.numpy():
        for training, test in zip(splits.train.cpu().numpy(), splits.test.cpu().numpy()):
            fit_rows = int(training.sum()) - math.ceil(0.2 * int(training.sum()))  # full batch
            network = MLPClassifier(hidden_layer_sizes=config.hidden, activation="relu",
                                    solver="adam", learning_rate_init=config.lr,
                                    alpha=config.weight_decay, batch_size=fit_rows,
                                    max_iter=config.max_epochs, early_stopping=True,
                                    validation_fraction=0.2, n_iter_no_change=config.patience,
                                    random_state=0)
            pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), network)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pipeline.fit(values[training][:, mask], labels[training])
            scores.append(roc_auc_score(labels[test],
                                        pipeline.predict_proba(values[test][:, mask])[:, 1]))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subsets", type=int, default=8, help="feature subsets compared")
    parser.add_argument("--big-subsets", type=int, default=64,
                        help="feature subsets of the batched-only run")
    args = parser.parse_args()
    lib.seed_everything(0)
    frame = lib.data.load_pima(missing="nan")
    X, y = table.table_tensors(frame, device="cpu")
    splits = cv.cv_splits(y, n_repeats=5, n_folds=5, seed=0)
    config = ensemble.MLPConfig()
    masks = subset_masks(args.subsets)
    networks = len(masks) * splits.num_splits
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch "
          f"{torch.__version__}; {networks} networks")
    batched(X, y, splits, masks[:1], ensemble.MLPConfig(max_epochs=5))  # warm-up
    timed = best_times({"batched": lambda: batched(X, y, splits, masks, config),
                        "one at a time": lambda: one_at_a_time(X, y, splits, masks, config),
                        "scikit-learn": lambda: scikit_learn(X, y, splits, masks, config)},
                       1, warmup=False, device="cpu")
    ours = timed["batched"]
    auc = {"batched": ours.result.metrics["roc_auc"].mean(),
           "one at a time": timed["one at a time"].result.metrics["roc_auc"].mean(),
           "scikit-learn": timed["scikit-learn"].result}
    for label, timing in timed.items():
        print(f"{label:14s} wall {timing.wall:7.2f} s ({timing.wall / ours.wall:5.1f}x)   "
              f"cpu {timing.cpu:7.2f} s ({timing.cpu / ours.cpu:5.1f}x)   "
              f"mean test AUC {auc[label]:.3f}")
    big = subset_masks(args.big_subsets)
    timing = best_times({"big": lambda: batched(X, y, splits, big, config)}, 1,
                        warmup=False, device="cpu")["big"]
    count = len(big) * splits.num_splits
    print(f"batched, {count} networks: wall {timing.wall:.2f} s, cpu {timing.cpu:.2f} s "
          f"({1000 * timing.cpu / count:.1f} ms of CPU per network)")


if __name__ == "__main__":
    main()
