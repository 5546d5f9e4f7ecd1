"""lib.sobol against SALib, timed side by side in one run on the same data.

    .venv/bin/python benchmarks/bench_sobol.py [--log2-n 16] [--dims 8] [--resamples 100]

1. ``analyze``: SALib's ``analyze.sobol.analyze`` and ``lib.sobol.analyze`` on the same Y
   (second order, the same bootstrap seed); prints both times, their ratio and the largest
   difference between the two results.
2. End to end, sample + evaluate + analyze for a small MLP (D -> 16 -> 16 -> 1, sigmoid): ours
   on ``lib.device()``, and SALib's sampler and analyser around the same model for reference.

Times are the best of ``--repeats`` runs (SALib's analyze: one run, it is the slow side).
The machine's load average is printed, since other work on the same cores slows both sides.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from SALib.analyze import sobol as salib_analyze
from SALib.sample import sobol as salib_sample

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib import sobol  # noqa: E402


def best_time(run, repeats: int):
    """(best wall time in seconds, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def make_problem(D: int) -> dict:
    return {"num_vars": D, "names": [f"x{i + 1}" for i in range(D)], "bounds": [[0.0, 1.0]] * D}


def make_mlp(D: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Sigmoid(),
                               torch.nn.Linear(16, 16), torch.nn.Sigmoid(),
                               torch.nn.Linear(16, 1), torch.nn.Sigmoid())


def largest_difference(ours, theirs) -> float:
    return max(float(np.nanmax(np.abs(ours[key].cpu().numpy().reshape(np.shape(theirs[key]))
                                      - theirs[key]))) for key in theirs)


def bench_analyze(problem, N, resamples, repeats, dev):
    X = sobol.sample(problem, N, seed=1)
    Y = sobol.evaluate(make_mlp(problem["num_vars"]).to(dev), X).double().cpu().numpy()[:, 0]
    start = time.perf_counter()
    theirs = salib_analyze.analyze(problem, Y, num_resamples=resamples, seed=7)
    salib_s = time.perf_counter() - start
    Y_dev = torch.as_tensor(Y, device=dev)
    ours_s, ours = best_time(lambda: sobol.analyze(problem, Y_dev, num_resamples=resamples,
                                                   seed=7), repeats)
    print(f"analyze   SALib {salib_s:8.3f} s | lib.sobol {ours_s:8.4f} s | "
          f"ratio {salib_s / ours_s:7.1f}x | max |difference| "
          f"{largest_difference(ours, theirs):.1e}")


def bench_end_to_end(problem, N, resamples, repeats, dev):
    model = make_mlp(problem["num_vars"]).to(dev)

    def ours():
        X = sobol.sample(problem, N, seed=1)
        return sobol.analyze(problem, sobol.evaluate(model, X)[:, 0], num_resamples=resamples,
                             seed=7)

    def theirs():
        X = salib_sample.sample(problem, N, seed=1)
        Y = sobol.evaluate(model, X).double().cpu().numpy()[:, 0]
        return salib_analyze.analyze(problem, Y, num_resamples=resamples, seed=7)

    ours_s, _ = best_time(ours, repeats)
    salib_s, _ = best_time(theirs, 1)
    print(f"end2end   SALib {salib_s:8.3f} s | lib.sobol {ours_s:8.4f} s | "
          f"ratio {salib_s / ours_s:7.1f}x   (sample + evaluate MLP + analyze)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log2-n", type=int, default=16)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dev = lib.device()
    problem, N = make_problem(args.dims), 2 ** args.log2_n
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"D={args.dims} N=2^{args.log2_n} rows={N * (2 * args.dims + 2)} second order, "
          f"{args.resamples} resamples | device {lib.hardware.describe(dev)} | "
          f"{os.cpu_count()} CPUs, load average {load} | torch {torch.__version__} | "
          f"python {platform.python_version()}")
    bench_analyze(problem, N, args.resamples, args.repeats, dev)
    bench_end_to_end(problem, N, args.resamples, args.repeats, dev)


if __name__ == "__main__":
    main()
