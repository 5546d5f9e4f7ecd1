"""The book's chapters: where they are, their parameters, and the ``lib`` code they use."""
from dataclasses import dataclass
from pathlib import Path

import jupytext

from . import imports, knobs, paths, profiles


@dataclass(frozen=True)
class Chapter:
    stem: str
    path: Path

    def notebook(self):
        return jupytext.read(self.path)

    def knobs(self) -> dict:
        """The chapter's knobs (``lib.book.knobs.Knob``), from its ``parameters`` cell."""
        cells = [c for c in self.notebook().cells
                 if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{self.path.name}: needs exactly one cell tagged 'parameters', "
                             f"found {len(cells)}")
        return knobs.parse(cells[0].source, where=f"{self.path.name}'s parameters cell")

    def defaults(self) -> dict:
        """The chapter's knobs and their ``book`` values."""
        return {name: knob.default for name, knob in self.knobs().items()}

    def code(self) -> str:
        """The chapter's Python code, with IPython magics and shell lines left out."""
        lines = []
        for cell in self.notebook().cells:
            if cell.cell_type == "code":
                lines += [ln for ln in cell.source.splitlines()
                          if not ln.lstrip().startswith(("%", "!"))]
        return "\n".join(lines)

    def lib_modules(self) -> set:
        """Every ``lib`` module this chapter uses, directly or through other modules; ``lib``
        itself included, since every chapter imports it."""
        return imports.closure(imports.imports_in(self.code()) | {imports.PACKAGE})


# The first code cell of every launch notebook: on Colab or Binder, fetch the book's code and
# data; in a checkout, where `lib` is installed, it does nothing. Chapters do not carry it.
COLAB_SETUP = """\
# On Colab, fetch the book's code and data first; in a checkout this does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("lib") is None and not os.path.isdir("../lib"):
    subprocess.run("git clone -q --depth 1 "
                   "https://github.com/nn-sensitivity-book/nn-sensitivity-book.git nnsa"
                   " && pip install -q -e nnsa", shell=True, check=True)
sys.path.insert(0, os.path.abspath("nnsa" if os.path.isdir("nnsa") else ".."))"""


def launch_notebook(chapter: Chapter):
    """The chapter as a plain ``.ipynb`` without outputs, for Colab and Binder launch buttons,
    with ``COLAB_SETUP`` before its parameters cell."""
    import nbformat

    notebook = chapter.notebook()
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                       "name": "python3"}
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    setup = nbformat.v4.new_code_cell(COLAB_SETUP, metadata={"tags": ["remove-cell"]})
    notebook.cells.insert(first_code, setup)
    for index, cell in enumerate(notebook.cells):
        cell.id = f"{chapter.stem[:2]}-{index:03d}"  # stable, so regenerating changes nothing
    return notebook


def write_launch_notebooks() -> list:
    """Write ``notebooks/NN-topic.ipynb`` next to every chapter source; returns their paths."""
    written = []
    for chapter in all_chapters():
        target = chapter.path.with_suffix(".ipynb")
        jupytext.write(launch_notebook(chapter), target, fmt="ipynb")
        written.append(target)
    return written


def all_chapters() -> list:
    return [Chapter(p.stem, p) for p in sorted(paths.NOTEBOOKS_DIR.glob("[0-9][0-9]-*.md"))]


def find(name: str) -> Chapter:
    """A chapter by its file stem (``02-sobol-method``) or the stem without its number."""
    chapters = all_chapters()
    for chapter in chapters:
        if name in (chapter.stem, chapter.stem[3:], chapter.path.name):
            return chapter
    raise ValueError(f"unknown chapter {name!r}; valid chapters: "
                     f"{', '.join(c.stem for c in chapters)}")


def resolve(chapter: Chapter, profile: str, overrides: dict | None = None) -> dict:
    """The parameters to run ``chapter`` with: defaults, then the profile, then ``overrides``."""
    declared = chapter.knobs()
    if knobs.PROFILE in (overrides or {}):
        raise knobs.KnobError("profile cannot be set as a parameter; use --profile")
    chosen = {**profiles.overrides(profile, chapter.stem), **(overrides or {})}
    unknown = sorted(set(chosen) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for chapter "
                         f"{chapter.stem}; valid parameters: {', '.join(declared)}")
    resolved = {name: knob.default for name, knob in declared.items()} | chosen
    for name, knob in declared.items():  # defaults too: a profile may leave one unusable
        if name != knobs.PROFILE:
            resolved[name] = knob.check(resolved[name], chapter.stem)
    profiles.check_profile(resolved.get("profile", profile))
    return resolved
