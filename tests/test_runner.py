"""Executing chapters: cached, re-executed when anything they depend on changes, never stale."""
import shutil

import nbformat
import pytest

from lib.book import chapters, paths, runner

@pytest.fixture
def sandbox(tmp_path, monkeypatch, toy_chapter):
    """A book with two toy chapters and a private copy of lib's sources for the cache keys."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01-uses-checks.md").write_text(
        toy_chapter("import lib\nprint(lib.kernels.checks.positive_int('seed', seed + 1))"))
    (notebooks / "02-uses-progress.md").write_text(
        toy_chapter("import lib\nprint(len(list(lib.progress.progress(range(3)))))"))
    lib_copy = tmp_path / "lib"
    shutil.copytree(paths.LIB_DIR, lib_copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(paths, "LIB_DIR", lib_copy)
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    yield tmp_path


def build_log(root):
    lines = []
    runner.build("smoke", output_root=root, html=False, log=lines.append)
    status = {}
    for line in lines:
        if line.startswith("  "):
            stem, _, message = line.strip().partition(":")
            status.setdefault(stem, "executing" if "executing" in message else "cached")
    return status


def test_editing_a_lib_module_re_executes_exactly_the_chapters_using_it(sandbox):
    first = build_log(sandbox)
    assert first == {"01-uses-checks": "executing", "02-uses-progress": "executing"}
    again = build_log(sandbox)
    assert again == {"01-uses-checks": "cached", "02-uses-progress": "cached"}

    with open(sandbox / "lib" / "kernels" / "checks.py", "a") as source:  # in a subpackage
        source.write("\n# an edit\n")
    after_edit = build_log(sandbox)
    assert after_edit == {"01-uses-checks": "executing", "02-uses-progress": "cached"}
    for machinery in ("book/runner.py", "book/chapters.py", "__init__.py"):
        with open(sandbox / "lib" / machinery, "a") as source:
            source.write("\n# an edit\n")
        assert build_log(sandbox) == {"01-uses-checks": "executing",
                                      "02-uses-progress": "executing"}, machinery

    staged = sandbox / "_build" / "src" / "notebooks" / "01-uses-checks.ipynb"
    notebook = nbformat.read(staged, as_version=4)
    assert any(cell.get("outputs") for cell in notebook.cells)


def test_progress_bars_stay_out_of_the_stored_chapter(sandbox, monkeypatch, capfd):
    monkeypatch.setenv("NNSA_PROGRESS", "1")
    build_log(sandbox)
    staged = sandbox / "_build" / "src" / "notebooks" / "02-uses-progress.ipynb"
    notebook = nbformat.read(staged, as_version=4)
    streams = [o for cell in notebook.cells for o in cell.get("outputs", [])
               if o.output_type == "stream" and o.name == "stderr"]
    assert not streams
    assert "3/3" in capfd.readouterr().err  # the bar reached the terminal instead


def test_key_sees_parameters_data_and_toolchain(sandbox, monkeypatch, tmp_path):
    chapter = chapters.find("01-uses-checks")
    params = chapters.resolve(chapter, "smoke")
    key = runner.chapter_key(chapter, params)
    assert runner.chapter_key(chapter, {**params, "seed": 1}) != key

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "SHA256SUMS").write_text("abc  x.csv\n")
    monkeypatch.setattr(paths, "DATA_DIR", data_dir)
    with_data = runner.chapter_key(chapter, params)
    (data_dir / "SHA256SUMS").write_text("abd  x.csv\n")
    assert runner.chapter_key(chapter, params) != with_data

    lock = tmp_path / "book.txt"
    lock.write_text("torch==1\n")
    monkeypatch.setattr(paths, "LOCK_FILES", (lock,))
    with_lock = runner.chapter_key(chapter, params)
    lock.write_text("torch==2\n")
    assert runner.chapter_key(chapter, params) != with_lock


def test_failing_chapter_shows_the_traceback_and_caches_nothing(sandbox, toy_chapter):
    (sandbox / "notebooks" / "03-fails.md").write_text(
        toy_chapter("raise ValueError('the data went missing')"))
    with pytest.raises(runner.ChapterFailed, match="the data went missing"):
        build_log(sandbox)
    cached = list((sandbox / "cache" / "chapters").glob("03-fails*"))
    assert cached == []


def test_run_writes_one_executed_chapter_with_the_overrides(sandbox):
    path = runner.run("01-uses-checks", "smoke", {"seed": 7}, runs_dir=sandbox / "runs")
    assert path.parent == sandbox / "runs" and path.suffix == ".ipynb"
    notebook = nbformat.read(path, as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "seed = 7" in injected[0].source
