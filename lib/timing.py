"""Wall-clock and CPU timing of competing implementations, measured side by side in one run."""
import time
from dataclasses import dataclass

import torch

from .hardware import synchronize


@dataclass(frozen=True)
class Timing:
    wall: float    # best wall time over the repeats, seconds
    cpu: float     # best CPU time of this process (all its threads), seconds
    result: object  # what the run with the best wall time returned


def best_times(runs: dict, repeats: int = 3, *, warmup: bool = True, device=None) -> dict:
    """``{name: Timing}`` for ``runs`` ``{name: callable}``.

    Each callable runs once untimed when ``warmup`` is set (caches, lazy initialisation),
    then ``repeats`` times, the names interleaved so that a change of load on shared cores
    hits every side alike. Queued device work is waited for before and after each run, so
    that a time covers it. The CPU time is less sensitive to other work on the machine.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer; got {repeats!r}")
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if warmup:
        for run in runs.values():
            run()
    best = {name: Timing(float("inf"), float("inf"), None) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            synchronize(dev)
            start, start_cpu = time.perf_counter(), time.process_time()
            result = run()
            synchronize(dev)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            kept = best[name]
            best[name] = Timing(min(wall, kept.wall), min(cpu, kept.cpu),
                                result if wall < kept.wall else kept.result)
    return best


def best_time(run, repeats: int = 3, *, warmup: bool = True, device=None) -> Timing:
    """:func:`best_times` of a single callable."""
    return best_times({"run": run}, repeats, warmup=warmup, device=device)["run"]
