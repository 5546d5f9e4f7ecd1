"""Train every network a profile's chapters load, before the chapters run.

On a CPU, small convolutions scale poorly across threads, so one single-thread training per
core side by side can beat one multi-thread training at a time
(``benchmarks/bench_parallel_training.py`` on 2 cores: 1.13x for ResNet-18, 0.99x for VGG-16).
The networks land in the checkpoint cache (``lib.ultrasound.checkpoints``), where the
chapters find them; a network already cached is skipped. On a GPU the trainings run one
after the other.
"""
import collections
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback

import torch

from .. import hardware
from ..book import profiles
from ..kernels import checks
from . import checkpoints


def _train_one(job, threads: int) -> tuple:
    """Train (or find) one network with ``threads`` CPU threads; its name and seconds."""
    arch, seed, changes, profile = job
    torch.set_num_threads(threads)
    start = time.perf_counter()
    checkpoints.load_trained(arch, profile, seed=seed, verbose=False, **changes)
    return _job_name(job), time.perf_counter() - start


def _die_with_parent(parent: int) -> None:
    """On Linux, ask the kernel to end this worker when the parent dies, so that a killed
    build leaves no trainings running; a parent already gone ends it now."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _worker(parent: int, job, threads: int, reply) -> None:
    """One training in its own process; sends ``("done", result)`` or ``("failed", trace)``."""
    _die_with_parent(parent)
    try:
        reply.send(("done", _train_one(job, threads)))
    except Exception:
        reply.send(("failed", traceback.format_exc()))
    finally:
        reply.close()


@contextlib.contextmanager
def _terminate_on_sigterm():
    """Turn SIGTERM into SystemExit inside the block, so that the workers are stopped."""
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


def _job_name(job) -> str:
    arch, seed, changes, _ = job
    if changes.get("shuffled_labels_seed") is not None:  # its other changes follow from it
        return f"{arch} seed {seed} (shuffled labels)"
    notes = ", ".join(f"{key}={value}" for key, value in sorted(changes.items()))
    return f"{arch} seed {seed}" + (f" ({notes})" if notes else "")


def _run_in_processes(todo: list, jobs: int, threads: int):
    """Yield ``(name, seconds)`` per job, each trained in a fresh process, ``jobs`` at once.

    A fresh process per network returns its memory when it ends. A worker that fails or dies
    raises ``RuntimeError`` naming the network; leaving early stops the workers still running.
    """
    context = multiprocessing.get_context("spawn")
    pending = collections.deque(todo)
    running = {}  # reply connection -> (process, job)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                job = pending.popleft()
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_worker, daemon=True,
                                          args=(os.getpid(), job, threads, send))
                process.start()
                send.close()
                running[receive] = (process, job)
            for receive in multiprocessing.connection.wait(list(running)):
                process, job = running.pop(receive)
                try:
                    status, payload = receive.recv()
                except EOFError:
                    status, payload = "died", None
                receive.close()
                process.join()
                if status == "died":
                    raise RuntimeError(f"training {_job_name(job)} died "
                                       f"(exit code {process.exitcode})")
                if status == "failed":
                    raise RuntimeError(f"training {_job_name(job)} failed:\n{payload}")
                yield payload
    finally:
        for process, _ in running.values():
            process.terminate()
        for process, _ in running.values():
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def default_jobs() -> int:
    """Parallel trainings: one per CPU core (at most 4) on a CPU, one on a GPU."""
    if hardware.device().type != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def precision_note(profile: str) -> str | None:
    """A line for the log when ``profile`` asks for bfloat16 where the device only emulates it,
    so training runs in float32 (slower than on a machine with bfloat16 instructions)."""
    asked = profiles.CNN_TRAINING[profile].get("precision")
    dev = hardware.device()
    if asked != checkpoints.AUTO_PRECISION or hardware.has_fast_bfloat16(dev):
        return None
    return (f"  {hardware.describe(dev)} has no bfloat16 instructions: training runs in "
            f"float32, several times slower than with them (see the README's profile table)")


def train_all(profile: str = "book", jobs: int | None = None, log=print) -> list:
    """Train the networks of ``profile`` that are not cached, ``jobs`` at a time.

    Returns ``[(name, seconds)]`` for the networks trained. Each worker gets an equal share of
    the CPU threads. A training that fails, or whose worker dies, raises ``RuntimeError``
    naming the network, and the other trainings are stopped.
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
    note = precision_note(profile)
    if note:
        log(note)
    start = time.perf_counter()
    done = []
    if jobs == 1:
        results = (_train_one(job, torch.get_num_threads()) for job in todo)
    else:
        results = _run_in_processes(todo, jobs, threads)
    with _terminate_on_sigterm(), contextlib.closing(results):
        for name, seconds in results:
            log(f"  {name}: {seconds:.0f} s")
            done.append((name, seconds))
    log(f"Networks ready in {time.perf_counter() - start:.0f} s")
    return done
