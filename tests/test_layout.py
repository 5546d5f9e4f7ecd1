"""The layout of ``lib``: wings by job, imports in one direction, no cycles, small modules, and
cache keys computed from the import closure (``lib.book.imports``)."""
import shutil
import subprocess
import sys

import pytest

from lib.book import imports, paths

RUNTIME = {"lib", "lib.hardware", "lib.progress", "lib.timing", "lib.files", "lib.lazy",
           "lib.version"}
WINGS = ("lib.kernels", "lib.diabetes", "lib.ultrasound", "lib.book")
MAX_LINES = 500


def wing(module: str) -> str:
    for name in WINGS:
        if module == name or module.startswith(name + "."):
            return name
    return module  # shared runtime, lib.data and lib.__main__ stand alone


def edges():
    return {m: set(imports.imports_of(m)) for m in imports.all_modules()}


def test_kernels_import_only_kernels_and_the_shared_runtime():
    allowed = RUNTIME - {"lib"}
    for module, targets in edges().items():
        if wing(module) == "lib.kernels":
            bad = {t for t in targets if wing(t) != "lib.kernels" and t not in allowed}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_book_machinery_imports_no_science():
    allowed = RUNTIME - {"lib"}
    for module, targets in edges().items():
        if wing(module) == "lib.book":
            bad = {t for t in targets if wing(t) != "lib.book" and t not in allowed}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_experiments_use_kernels_never_the_reverse_and_not_each_other():
    for module, targets in edges().items():
        if wing(module) == "lib.diabetes":
            assert not {t for t in targets if wing(t) == "lib.ultrasound"}, module
        if wing(module) == "lib.ultrasound":
            assert not {t for t in targets if wing(t) == "lib.diabetes"}, module
    for module in RUNTIME | {"lib.data"}:
        science = {t for t in edges()[module] if wing(t) in ("lib.kernels", "lib.diabetes",
                                                             "lib.ultrasound")}
        assert not science, f"{module} imports {sorted(science)}"


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    assert find_cycle(edges()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_is_longer_than_the_limit():
    long = {m: n for m in imports.all_modules()
            if (n := len(imports.module_file(m).read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_import_lib_stays_cheap():
    code = ("import sys, lib; print(sorted(m for m in sys.modules if m.startswith('lib')));"
            "print('pandas' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=paths.ROOT).stdout.splitlines()
    loaded = set(eval(out[0]))
    assert loaded <= {"lib", "lib.lazy", "lib.version", "lib.hardware", "lib.book",
                      "lib.book.paths", "lib.book.provenance"}, loaded
    assert out[1] == "False False"


def test_wings_load_their_modules_on_first_use():
    import lib

    assert lib.kernels.sobol.analyze is not None
    assert lib.diabetes.cv.cv_splits is not None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        lib.kernels.nonexistent  # noqa: B018


# --------------------------------------------------------------------- the import closure

@pytest.fixture
def toy_lib(tmp_path, monkeypatch):
    """A package ``lib`` with a subpackage, for closure tests."""
    root = tmp_path / "lib"
    (root / "wing").mkdir(parents=True)
    (root / "__init__.py").write_text("from . import core\n")
    (root / "core.py").write_text("x = 1\n")
    (root / "wing" / "__init__.py").write_text("")
    (root / "wing" / "alpha.py").write_text("from . import beta\nfrom ..core import x\n")
    (root / "wing" / "beta.py").write_text("def f():\n    from .gamma import g\n")
    (root / "wing" / "gamma.py").write_text("g = 1\n")
    (root / "wing" / "unused.py").write_text("u = 1\n")
    monkeypatch.setattr(paths, "LIB_DIR", root)
    return root


def test_closure_follows_relative_imports_into_subpackages(toy_lib):
    assert imports.closure(["lib.wing.alpha"]) == {
        "lib", "lib.core", "lib.wing", "lib.wing.alpha", "lib.wing.beta", "lib.wing.gamma"}


def test_chapter_code_uses_attribute_chains_and_absolute_imports(toy_lib):
    code = "import lib\nlib.wing.alpha.run()\nfrom lib.wing import gamma\n"
    assert imports.imports_in(code) == {"lib", "lib.wing.alpha", "lib.wing.gamma"}


def test_editing_a_module_changes_exactly_the_digests_that_depend_on_it(toy_lib):
    alpha, unused = imports.closure_digest("lib.wing.alpha"), imports.closure_digest(
        "lib.wing.unused")
    (toy_lib / "wing" / "unused.py").write_text("u = 2\n")
    assert imports.closure_digest("lib.wing.alpha") == alpha
    assert imports.closure_digest("lib.wing.unused") != unused
    (toy_lib / "wing" / "gamma.py").write_text("g = 2\n")  # reached through a deferred import
    assert imports.closure_digest("lib.wing.alpha") != alpha


def test_an_unknown_module_is_refused(toy_lib):
    with pytest.raises(ValueError, match="not a module"):
        imports.closure(["lib.nowhere"])


@pytest.fixture
def lib_copy(tmp_path, monkeypatch):
    """A private copy of the real ``lib`` sources, which the keys are computed from."""
    copy = tmp_path / "lib"
    shutil.copytree(paths.LIB_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(paths, "LIB_DIR", copy)
    return copy


def append_comment(path):
    with open(path, "a") as source:
        source.write("\n# an edit\n")


@pytest.mark.parametrize("edited, changes", [
    ("ultrasound/train.py", True), ("ultrasound/models.py", True), ("data.py", True),
    ("kernels/bootstrap.py", True),  # through lib.ultrasound.evaluate
    ("ultrasound/compare.py", False), ("kernels/sobol.py", False), ("book/runner.py", False),
    ("book/profiles.py", False),  # the settings themselves are part of the key
])
def test_trained_cnn_key_depends_on_the_training_code_only(lib_copy, edited, changes):
    from lib.ultrasound import checkpoints

    config = checkpoints.config_for("resnet18", "smoke")
    before = checkpoints.checkpoint_key("resnet18", config, None, 0)
    append_comment(lib_copy / edited)
    assert (checkpoints.checkpoint_key("resnet18", config, None, 0) != before) == changes


@pytest.mark.parametrize("edited, changes", [
    ("diabetes/ensemble.py", True), ("diabetes/cv.py", True), ("diabetes/stats.py", True),
    ("diabetes/reduction.py", False), ("diabetes/importance.py", False),
    ("kernels/sobol.py", False),
])
def test_cross_validation_key_depends_on_its_closure_only(lib_copy, edited, changes):
    before = imports.closure_digest("lib.diabetes.cv")
    append_comment(lib_copy / edited)
    assert (imports.closure_digest("lib.diabetes.cv") != before) == changes
