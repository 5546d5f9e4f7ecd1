"""Train every network a profile's chapters load, before the chapters run.

On a CPU, small convolutions scale poorly across threads, so one single-thread training per
core side by side can beat one multi-thread training at a time
(``benchmarks/bench_parallel_training.py`` on 2 cores: 1.13x for ResNet-18, 0.99x for VGG-16).
The networks land in the checkpoint cache (``lib.ultrasound.checkpoints``), where the
chapters find them; a network already cached is skipped. On a GPU the trainings run one
after the other.
"""
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time

import torch

from .. import hardware
from ..kernels import checks
from . import checkpoints


def _train_one(job, threads: int) -> tuple:
    """Worker: train (or find) one network with ``threads`` CPU threads; its name and seconds."""
    arch, seed, changes, profile = job
    torch.set_num_threads(threads)
    start = time.perf_counter()
    checkpoints.load_trained(arch, profile, seed=seed, verbose=False, **changes)
    name = f"{arch} seed {seed}" + (" (shuffled labels)" if changes else "")
    return name, time.perf_counter() - start


def _die_with_parent(parent: int) -> None:
    """Worker start-up: on Linux, ask the kernel to end this worker when the parent dies, so
    that a killed build leaves no trainings running; a parent already gone ends it now."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def _terminate_on_sigterm():
    """Turn SIGTERM into SystemExit inside the block, so the pool's exit stops its workers."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_jobs() -> int:
    """Parallel trainings: one per CPU core (at most 4) on a CPU, one on a GPU."""
    if hardware.device().type != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def train_all(profile: str = "book", jobs: int | None = None, log=print) -> list:
    """Train the networks of ``profile`` that are not cached, ``jobs`` at a time.

    Returns ``[(name, seconds)]`` for the networks trained. Each worker gets an equal share of
    the CPU threads.
    """
    jobs = default_jobs() if jobs is None else jobs
    jobs = checks.integer("jobs", jobs)
    todo = [(arch, seed, changes, profile) for arch, seed, changes in checkpoints.planned(profile)
            if not checkpoints.is_cached(arch, profile, seed=seed, **changes)]
    if not todo:
        log(f"All networks of profile {profile} are cached.")
        return []
    jobs = min(jobs, len(todo))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log(f"Training {len(todo)} network(s) of profile {profile}, {jobs} at a time, "
        f"{threads} thread(s) each ...")
    start = time.perf_counter()
    done = []
    if jobs == 1:
        results = (_train_one(job, torch.get_num_threads()) for job in todo)
        for name, seconds in results:
            log(f"  {name}: {seconds:.0f} s")
            done.append((name, seconds))
    else:
        context = multiprocessing.get_context("spawn")
        with _terminate_on_sigterm(), context.Pool(jobs, initializer=_die_with_parent,
                                                   initargs=(os.getpid(),),
                                                   maxtasksperchild=1) as pool:
            waiting = [pool.apply_async(_train_one, (job, threads)) for job in todo]
            for result in waiting:
                name, seconds = result.get()
                log(f"  {name}: {seconds:.0f} s")
                done.append((name, seconds))
    log(f"Networks ready in {time.perf_counter() - start:.0f} s")
    return done
