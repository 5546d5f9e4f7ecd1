"""Given-data Shapley effects for all cross-validation networks at once, against one at a time.

    .venv/bin/python benchmarks/bench_shapley.py [--repeats 2] [--device cpu] [--threads 1]

The Pima case: d = 8 inputs, 768 rows, 5 x 5 repeated stratified folds, so M = 25 outputs,
each with its own rows (the table imputed with its fold's training medians) and its own row
mask (its fold's training rows, about 614). The outputs are random two-layer networks of the
standardised inputs, one per fold: the cost does not depend on what the networks learnt.

Timed side by side (``lib.timing.best_times``):

1. ``batched``: one ``lib.kernels.shapley.given_data`` call for the 25 outputs;
2. ``one at a time``: 25 calls, one per output (its own rows, no mask);
3. ``shared rows``: one call for 25 outputs on one set of rows (all 768, imputed with the
   table's medians), where the distances of a subset serve every output.

Each with the default 3 rows per neighbourhood and 1000 bootstrap resamples. Prints the wall
and CPU times and the ratios to ``batched``, and the largest difference between the batched
and the one-at-a-time effects (0 up to rounding unless rows tie; tied rows are drawn from
other random streams).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import data, hardware, timing  # noqa: E402
from lib.diabetes import cv, ensemble, table  # noqa: E402
from lib.kernels import shapley  # noqa: E402


def fold_rows(device):
    """Per-fold imputed rows (25, 768, 8), training masks (25, 768) and random outputs."""
    X, y = table.table_tensors(data.load_pima(), device=device)
    splits = cv.cv_splits(y, n_repeats=5, n_folds=5, seed=0)
    train = splits.train.to(device)
    prep = ensemble.fit_preprocessing(X, train)
    median = prep.median.to(device)
    rows = torch.where(torch.isnan(X)[None], median[:, None, :], X[None])
    standard = (rows - prep.mean.to(device)[:, None]) / prep.scale.to(device)[:, None]
    generator = torch.Generator().manual_seed(0)
    W1 = torch.randn(train.shape[0], 8, 16, generator=generator).to(device)
    w2 = torch.randn(train.shape[0], 16, generator=generator).to(device)
    Y = torch.einsum("mnh,mh->nm", torch.tanh(standard @ W1), w2)
    shared = torch.where(torch.isnan(X), X.nanmedian(dim=0).values, X)
    return rows, train, Y, shared


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (fewer threads vary less on busy cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device) if args.device else hardware.device()
    rows, train, Y, shared = fold_rows(dev)
    M = Y.shape[1]
    print(f"device: {hardware.describe(dev)}; load average {os.getloadavg()[0]:.2f}")
    print(f"d = {rows.shape[-1]}, rows = {rows.shape[1]}, outputs = {M}, rows in use per "
          f"output = {int(train.sum(1).min())}..{int(train.sum(1).max())}, dtype {rows.dtype}")

    def batched():
        return shapley.given_data(rows, Y, mask=train)

    def one_at_a_time():
        return [shapley.given_data(rows[m][train[m]], Y[train[m], m]) for m in range(M)]

    def shared_rows():
        return shapley.given_data(shared, Y)

    times = timing.best_times({"batched": batched, "one at a time": one_at_a_time,
                               "shared rows": shared_rows}, repeats=args.repeats,
                              warmup=False, device=dev)
    base = times["batched"]
    for name, t in times.items():
        print(f"{name:>14}: wall {t.wall:7.2f} s  cpu {t.cpu:7.2f} s  "
              f"ratio to batched {t.wall / base.wall:5.2f} (cpu {t.cpu / base.cpu:5.2f})")
    alone = np.concatenate([r.effects for r in times["one at a time"].result], axis=1)
    print(f"largest |batched - one at a time| effect: "
          f"{np.abs(base.result.effects - alone).max():.2e}")
    frame = base.result.tidy().groupby("input", sort=False)["Sh"].agg(["mean", "std"])
    print("effects over the 25 random networks (mean, std):")
    print(frame.round(3).to_string())


if __name__ == "__main__":
    main()
