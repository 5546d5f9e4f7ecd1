"""Training every network of a profile ahead of the chapters, several at a time."""
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from lib.book import cache, paths
from lib.ultrasound import checkpoints, pretrain


def test_planned_lists_every_seed_of_both_networks_then_the_shuffled_one():
    for profile in ("smoke", "book"):
        plan = checkpoints.planned(profile)
        seeds = checkpoints.seeds(profile)
        assert [(a, s) for a, s, _ in plan[:-1]] == [(a, s) for a in ("vgg16", "resnet18")
                                                    for s in seeds]
        arch, seed, changes = plan[-1]
        assert arch == "resnet18" and changes["shuffled_labels_seed"] is not None


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "2"])
def test_bad_job_counts_are_refused(jobs):
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        pretrain.train_all("smoke", jobs)


def forget(arch, seed, profile="smoke"):
    """Remove a cached network, so that the test trains it."""
    config = checkpoints.config_for(arch, profile)
    path = cache.entry_path("models", checkpoints._entry_name(arch, profile, seed, None, config),
                            checkpoints.checkpoint_key(arch, config, None, seed), ".pt")
    for stale in (path, path.with_name(path.name + ".sha256")):
        stale.unlink(missing_ok=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_trains_what_is_missing_then_finds_it_cached(monkeypatch, jobs):
    seed = 90 + jobs  # seeds no chapter uses
    plan = [("resnet18", seed, {}), ("vgg16", seed, {})]
    monkeypatch.setattr(checkpoints, "planned", lambda profile: plan)
    for arch, _, _ in plan:
        forget(arch, seed)
    assert not any(checkpoints.is_cached(a, "smoke", seed=s) for a, s, _ in plan)
    lines = []
    trained = pretrain.train_all("smoke", jobs, log=lines.append)
    assert [name for name, _ in trained] == [f"resnet18 seed {seed}", f"vgg16 seed {seed}"]
    assert all(seconds > 0 for _, seconds in trained)
    assert all(checkpoints.is_cached(a, "smoke", seed=s) for a, s, _ in plan)
    assert f"{min(jobs, 2)} at a time" in lines[0]
    assert pretrain.train_all("smoke", jobs, log=lines.append) == []
    assert "cached" in lines[-1]
    for arch, _, _ in plan:
        forget(arch, seed)


LONG_TRAINING = textwrap.dedent("""\
    from lib.ultrasound import checkpoints, pretrain
    checkpoints.planned = lambda profile: [
        ("resnet18", 97, {"epochs": 10_000, "patience": 10_000}),
        ("resnet18", 98, {"epochs": 10_000, "patience": 10_000})]
    pretrain.train_all("smoke", 2)
    """)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_build_stops_its_trainings(signum):
    parent = subprocess.Popen([sys.executable, "-c", LONG_TRAINING], cwd=paths.ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        for _ in range(120):  # wait for both trainings to start
            workers = [p for p in psutil.Process(parent.pid).children(recursive=True)
                       if "spawn_main" in " ".join(p.cmdline())]
            if len(workers) == 2:
                break
            time.sleep(0.5)
        assert len(workers) == 2, "the trainings did not start"
        parent.send_signal(signum)
        parent.wait(timeout=60)
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, f"{len(alive)} training(s) outlived the build"
    finally:
        parent.kill()
        for worker in workers:
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_failing_training_names_its_network():
    jobs = [("no-such-net", 0, {}, "smoke")]
    with pytest.raises(RuntimeError, match="training no-such-net seed 0 failed"):
        list(pretrain._run_in_processes(jobs, 1, 1))


def test_a_training_that_dies_is_reported_not_waited_for():
    jobs = [("resnet18", 96, {"epochs": 10_000, "patience": 10_000}, "smoke")]

    def kill_the_worker():
        for _ in range(240):
            workers = [p for p in psutil.Process().children()
                       if "spawn_main" in " ".join(p.cmdline())]
            if workers:
                workers[0].kill()
                return
            time.sleep(0.25)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    try:
        died = r"resnet18 seed 96 \(epochs=10000, patience=10000\) died \(exit code -9\)"
        with pytest.raises(RuntimeError, match=died):
            list(pretrain._run_in_processes(jobs, 1, 1))
    finally:
        killer.join()


def test_the_log_names_the_shuffled_network_and_any_changed_setting():
    arch, seed, changes = checkpoints.planned("book")[-1]
    assert pretrain._job_name((arch, seed, changes, "book")) == "resnet18 seed 0 (shuffled labels)"
    named = pretrain._job_name(("vgg16", 2, {"epochs": 3, "lr": 0.1}, "book"))
    assert named == "vgg16 seed 2 (epochs=3, lr=0.1)"
    assert pretrain._job_name(("vgg16", 2, {}, "book")) == "vgg16 seed 2"


@pytest.mark.parametrize("fast", [True, False])
def test_the_log_says_when_bfloat16_would_be_emulated(monkeypatch, fast):
    monkeypatch.setattr(pretrain.hardware, "has_fast_bfloat16", lambda dev: fast)
    note = pretrain.precision_note("book")  # the book asks for precision "auto"
    assert (note is None) == fast
    if not fast:
        assert "no bfloat16 instructions" in note and "float32" in note
    assert pretrain.precision_note("smoke") is None  # float32 asked for: nothing to say
