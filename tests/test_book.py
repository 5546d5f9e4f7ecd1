"""The whole book at the smoke profile: every chapter executes, nbval reproduces the outputs,
and the HTML renders with warnings as errors."""
import subprocess
import sys

import nbformat
import pytest
import yaml

from lib.book import chapters, paths, runner

OUTPUT_ROOT = paths.ROOT / "_build" / "test"
SANITIZE = paths.ROOT / "tests" / "nbval_sanitize.cfg"

pytestmark = pytest.mark.slow


def staged_notebooks():
    return sorted((OUTPUT_ROOT / "_build" / "src" / "notebooks").glob("*.ipynb"))


def nbval(*notebooks):
    command = [sys.executable, "-m", "pytest", "--nbval", *map(str, notebooks),
               "--nbval-sanitize-with", str(SANITIZE), "--nbval-kernel-name", runner.KERNEL_NAME,
               "--nbval-cell-timeout", "1800", "-p", "no:cacheprovider", "-q"]
    return subprocess.run(command, capture_output=True, text=True, cwd=paths.ROOT)


def test_every_toc_page_is_rendered(smoke_book):
    toc = yaml.safe_load((paths.ROOT / "_toc.yml").read_text())
    pages = [toc["root"]] + [e["file"] for part in toc["parts"] for e in part["chapters"]]
    html = smoke_book.parent
    for page in pages:
        assert (html / f"{page}.html").stat().st_size > 0, page
    assert len(staged_notebooks()) == len(chapters.all_chapters())


def test_nbval_reproduces_every_executed_chapter(smoke_book):
    result = nbval(*staged_notebooks())
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_nbval_fails_when_a_stored_output_is_changed(smoke_book, tmp_path):
    for source in staged_notebooks():
        notebook = nbformat.read(source, as_version=4)
        for cell in notebook.cells:
            checked = "nbval-ignore-output" not in cell.metadata.get("tags", [])
            texts = [o for o in cell.get("outputs", [])
                     if o.output_type == "stream" and o.name == "stdout"
                     or "text/plain" in o.get("data", {})]
            if cell.cell_type == "code" and checked and texts:
                output = texts[0]
                if output.output_type == "stream":
                    output.text += "a changed number: 42\n"
                else:
                    output.data["text/plain"] = "a changed number: 42"
                tampered = tmp_path / source.name
                nbformat.write(notebook, tampered)
                result = nbval(tampered)
                assert result.returncode != 0
                assert "Cell outputs differ" in result.stdout
                return
    pytest.fail("no chapter has a checked text output to tamper with")
