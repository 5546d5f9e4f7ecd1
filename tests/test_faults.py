"""Faults a user can cause, and what must happen: a clear error early, never a silent wrong
answer, a lost file, a hang or a stale result."""
import shutil
import threading
import time

import pytest
import torch

from lib.book import cache, chapters, knobs, paths, profiles, runner
from lib.kernels import am, cam, local, metrics, sobol, sobol_images


class Scores(torch.nn.Module):
    """A tiny image classifier whose scores are ``value`` for bright images (mean > 5), which
    stay bright under every perturbation the kernels make."""

    def __init__(self, value=float("nan"), scale=1.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.value, self.scale = value, scale

    def forward(self, x):
        out = self.conv(x).mean(dim=(2, 3)) * self.scale
        bright = x.flatten(1).mean(1) > 5
        return torch.where(bright[:, None], torch.full_like(out, self.value), out)


def images(bright=(), count=3, size=8):
    """Random images in [0, 1], except those in ``bright``, which are 10 everywhere."""
    x = torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(0))
    x[list(bright)] = 10.0
    return x


# ------------------------------------------------------------- non-finite model outputs

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_sobol_maps_refuse_a_non_finite_score_and_name_the_image(value):
    model = Scores(value=value).eval()
    with pytest.raises(ValueError, match=r"NaN or infinite for image \[1\]"):
        sobol_images.sobol_maps(model, images(bright=[1]), 0, grid=2, N=4, num_resamples=10,
                                show_progress=False)


def test_sobol_estimator_refuses_non_finite_outputs():
    problem = {"num_vars": 2, "names": ["a", "b"], "bounds": [[0, 1], [0, 1]]}
    Y = torch.rand(8 * 4, 3, dtype=torch.float64)
    Y[5, 2] = float("inf")
    blocks = sobol.split_blocks(Y, 2, calc_second_order=False)
    with pytest.raises(ValueError, match=r"outputs \[2\]"):
        sobol.estimate_indices(blocks, num_resamples=10, seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        sobol.analyze(problem, Y, calc_second_order=False, num_resamples=10, seed=0)


def test_a_huge_finite_output_keeps_its_indices():
    problem = {"num_vars": 3, "names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
    X = sobol.sample(problem, 64, calc_second_order=False, seed=0)
    y = torch.as_tensor(X[:, 0] + 2 * X[:, 1] ** 2)
    small = sobol.analyze(problem, y, calc_second_order=False, num_resamples=10, seed=0)
    huge = sobol.analyze(problem, y * 1e300, calc_second_order=False, num_resamples=10,
                         seed=0)
    tiny = sobol.analyze(problem, y * 1e-300, calc_second_order=False, num_resamples=10,
                         seed=0)
    for key in ("S1", "ST"):
        torch.testing.assert_close(huge[key], small[key], rtol=1e-12, atol=0)
        torch.testing.assert_close(tiny[key], small[key], rtol=1e-12, atol=0)
    assert small["ST"][1] > 0.5  # not read as a constant output


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_local_maps_refuse_non_finite_scores(value):
    model = Scores(value=value).eval()
    with pytest.raises(ValueError, match=r"image \[2\]"):
        local.fd_sensitivity(model, images(bright=[2]), 0, 0.1, patch=4, show_progress=False)
    with pytest.raises(ValueError, match=r"image \[2\]"):
        local.gradient(model, images(bright=[2]), 0)


def test_a_step_the_dtype_cannot_resolve_is_refused():
    x = torch.full((1, 1, 4, 4), 0.9)
    with pytest.raises(ValueError, match="does not change 16 pixel"):
        local.fd_sensitivity(Scores().eval(), x, 0, 1e-9, show_progress=False)
    resolved = local.fd_sensitivity(Scores().double().eval(), x.double(), 0, 1e-9,
                                    show_progress=False)
    assert resolved.abs().sum() > 0


def test_grad_cam_refuses_non_finite_scores():
    model = Scores().eval()
    with pytest.raises(ValueError, match=r"Grad-CAM is NaN or infinite for image \[0\]"):
        cam.grad_cam(model, images(bright=[0]), 0, layer="conv", show_progress=False)


def test_activation_maximisation_refuses_a_non_finite_objective():
    model = Scores(scale=float("inf")).eval()
    with pytest.raises(ValueError, match="NaN or infinite for target"):
        am.maximize(model, [0], size=8, channels=1, steps=1, param="pixel",
                    show_progress=False)


def test_deletion_refuses_non_finite_scores_and_baselines():
    x = images()
    maps = torch.rand(3, 1, 8, 8)
    with pytest.raises(ValueError, match="deletion curve is NaN or infinite"):
        metrics.deletion_auc(Scores().eval(), images(bright=[1]), maps, target=0, steps=2,
                             baseline=10.0, show_progress=False)
    bad_baseline = torch.zeros_like(x)
    bad_baseline[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"baseline is NaN or infinite for image \[1\]"):
        metrics.deletion_auc(Scores().eval(), x, maps, target=0, steps=2,
                             baseline=bad_baseline, show_progress=False)
    with pytest.raises(ValueError, match="constant baseline must be finite"):
        metrics.deletion_auc(Scores().eval(), x, maps, target=0, steps=2,
                             baseline=float("nan"), show_progress=False)


def test_an_empty_mask_is_the_only_reason_a_localisation_score_is_undefined():
    maps, masks = torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 2:4, 2:4] = True
    scores = metrics.localisation_scores(maps, masks)
    assert all(torch.isnan(v[1]) and not torch.isnan(v[0]) for v in scores.values())
    maps[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.localisation_scores(maps, masks)


# ------------------------------------------------------------------- knobs and profiles

def test_the_profile_cannot_be_contradicted_by_a_parameter():
    chapter = chapters.all_chapters()[0]
    with pytest.raises(knobs.KnobError, match="use --profile"):
        chapters.resolve(chapter, "smoke", {"profile": "full"})
    with pytest.raises(knobs.KnobError, match="use --profile"):
        knobs.parse_assignments(["profile=full"])


def bad_candidates(default):
    """Values a careless user might give, of the default's type and of others."""
    numbers = [-1, 0, -10 ** 9, 10 ** 9, 10 ** 12]
    if isinstance(default, bool):
        return ["yes", 2]
    if isinstance(default, (int, float)):
        return numbers + [float(n) for n in numbers] + [float("nan"), "many"]
    if isinstance(default, str):
        return ["", "nonsense-value", 3]
    if isinstance(default, list):
        return [[], [-1], [10 ** 9], "many", [float("nan")]]
    return numbers + ["nonsense-value", [-1]]  # None default


def every_knob():
    return [(chapter, knob) for chapter in chapters.all_chapters()
            for name, knob in chapter.knobs().items() if name != knobs.PROFILE]


@pytest.mark.parametrize("chapter, knob", every_knob(),
                         ids=[f"{c.stem}:{k.name}" for c, k in every_knob()])
def test_every_knob_has_a_rule_that_refuses_absurd_values_at_once(chapter, knob):
    assert knob.rule, f"{chapter.stem}: {knob.name} declares no rule"
    refused = 0
    for value in bad_candidates(knob.default):
        start = time.perf_counter()
        try:
            chapters.resolve(chapter, "smoke", {knob.name: value})
        except knobs.KnobError as error:
            assert knob.name in str(error) and time.perf_counter() - start < 1.0
            refused += 1
    assert refused >= 3, f"{chapter.stem}: {knob.name}'s rule refuses almost nothing"


@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_every_profile_satisfies_every_rule(profile):
    for chapter in chapters.all_chapters():
        chapters.resolve(chapter, profile)


# ------------------------------------------------------------------ builds and the cache

@pytest.fixture
def toy_book(tmp_path, monkeypatch, toy_chapter):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01-toy.md").write_text(toy_chapter("print(seed + 1)"))
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


def test_a_foreign_file_in_the_staging_folder_is_kept_and_the_build_stops(toy_book):
    root = toy_book / "out"
    runner.build("smoke", output_root=root, html=False, log=lambda line: None)
    mine = root / "_build" / "src" / "my-notes.txt"
    mine.write_text("keep me")
    beside = root / "_build" / "other.txt"
    beside.write_text("keep me too")
    with pytest.raises(RuntimeError, match="did not stage .*my-notes.txt.*nothing was deleted"):
        runner.build("smoke", output_root=root, html=False, log=lambda line: None)
    assert mine.read_text() == "keep me" and beside.read_text() == "keep me too"
    mine.unlink()
    runner.build("smoke", output_root=root, html=False, log=lambda line: None)
    assert beside.exists() and (root / "_build" / "src" / "notebooks" / "01-toy.ipynb").exists()


def test_two_builds_at_once_take_turns_and_both_succeed(toy_book):
    root, logs, errors = toy_book / "out", [[], []], []

    def build(log):
        try:
            runner.build("smoke", output_root=root, html=False, log=log.append)
        except Exception as error:  # collected, so the test fails with it
            errors.append(error)

    threads = [threading.Thread(target=build, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert any("Waiting for another build" in line for log in logs for line in log)
    assert (root / "_build" / "src" / "notebooks" / "01-toy.ipynb").exists()
    assert not [p for p in (root / "_build").iterdir() if p.name.startswith(".src")]


@pytest.mark.parametrize("damage", [b"\xff\xfe not a digest", b"", b"0" * 64])
def test_a_damaged_sidecar_is_a_cache_miss_not_a_failure(toy_book, damage):
    root = toy_book / "out"
    lines = []
    runner.build("smoke", output_root=root, html=False, log=lines.append)
    entry = next((toy_book / "cache" / "chapters").glob("*.ipynb"))
    entry.with_name(entry.name + ".sha256").write_bytes(damage)
    lines.clear()
    runner.build("smoke", output_root=root, html=False, log=lines.append)
    assert any("corrupt, incomplete or unreadable" in line for line in lines)
    assert any("01-toy: executing" in line for line in lines)
    assert cache.is_valid(entry)


def test_a_failing_chapter_reports_plain_text(toy_book, toy_chapter):
    (toy_book / "notebooks" / "01-toy.md").write_text(toy_chapter("raise KeyError('x')"))
    with pytest.raises(runner.ChapterFailed) as failure:
        runner.build("smoke", output_root=toy_book / "out", html=False, log=lambda line: None)
    assert "KeyError" in str(failure.value) and "\x1b[" not in str(failure.value)


def test_kernel_start_up_noise_stays_out_of_a_successful_run(toy_book, capfd):
    runner.build("smoke", output_root=toy_book / "out", html=False, log=print)
    captured = capfd.readouterr()
    assert "running over TCP" not in captured.err + captured.out
    assert "KeyboardInterrupt" not in captured.err + captured.out
    assert "01-toy: cell" in captured.err  # which cell runs is visible
    shutil.rmtree(toy_book / "out")
