"""lib.sobol against SALib, timed side by side in one run on the same data.

    .venv/bin/python benchmarks/bench_sobol.py [--log2-n 16] [--dims 8] [--resamples 100]
                                               [--repeats 5] [--threads T]

1. ``analyze``: SALib's ``analyze.sobol.analyze`` and ``lib.kernels.sobol.analyze`` on the same Y
   (second order, the same bootstrap seed); prints both times, their ratio and the largest
   difference between the two results.
2. End to end, sample + evaluate + analyze for a small MLP (D -> 16 -> 16 -> 1, sigmoid): ours
   on ``lib.device()``, and SALib's sampler and analyser around the same model for reference.

Times are the best of ``--repeats`` runs (SALib: one run, it is the slow side), as wall time
and as CPU time of this process. The machine's load average is printed: other work on the same
cores slows both sides, and the wall-time ratio with them. On a machine whose cores are busy
with other work, ``--threads 1`` avoids torch waiting for its own descheduled threads.
"""
import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from SALib.analyze import sobol as salib_analyze
from SALib.sample import sobol as salib_sample

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import sobol  # noqa: E402
from lib.timing import best_time  # noqa: E402


def report(label: str, salib, ours, note: str = "") -> None:
    """One line of wall and CPU times (``lib.timing.Timing``) and their ratios."""
    print(f"{label:9s} wall: SALib {salib.wall:7.3f} s | lib.sobol {ours.wall:7.4f} s | ratio "
          f"{salib.wall / ours.wall:6.1f}x    cpu: SALib {salib.cpu:7.3f} s | lib.sobol "
          f"{ours.cpu:7.4f} s | ratio {salib.cpu / ours.cpu:6.1f}x{note}")


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
    salib = best_time(lambda: salib_analyze.analyze(problem, Y, num_resamples=resamples,
                                                    seed=7), 1, warmup=False, device=dev)
    Y_dev = torch.as_tensor(Y, device=dev)
    ours = best_time(lambda: sobol.analyze(problem, Y_dev, num_resamples=resamples, seed=7),
                     repeats, warmup=False, device=dev)
    report("analyze", salib, ours,
           f"    max |difference| {largest_difference(ours.result, salib.result):.1e}")


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

    mine = best_time(ours, repeats, warmup=False, device=dev)
    salib = best_time(theirs, 1, warmup=False, device=dev)
    report("end2end", salib, mine, "    (sample + evaluate MLP + analyze)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log2-n", type=int, default=16)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
