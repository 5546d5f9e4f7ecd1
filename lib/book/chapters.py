"""The book's chapters: where they are, their parameters, and the ``lib`` code they use."""
import ast
from dataclasses import dataclass
from pathlib import Path

import jupytext

from . import imports, paths, profiles


@dataclass(frozen=True)
class Chapter:
    stem: str
    path: Path

    def notebook(self):
        return jupytext.read(self.path)

    def defaults(self) -> dict:
        """The chapter's knobs and their ``book`` values, from its ``parameters`` cell."""
        cells = [c for c in self.notebook().cells
                 if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{self.path.name}: needs exactly one cell tagged 'parameters', "
                             f"found {len(cells)}")
        values = {}
        for node in ast.parse(cells[0].source).body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)):
                raise ValueError(f"{self.path.name}: the parameters cell may only hold "
                                 f"'name = literal' lines, found {ast.unparse(node)!r}")
            values[node.targets[0].id] = ast.literal_eval(node.value)
        return values

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


def launch_notebook(chapter: Chapter):
    """The chapter as a plain ``.ipynb`` without outputs, for Colab and Binder launch buttons."""
    notebook = chapter.notebook()
    notebook.metadata.pop("jupytext", None)
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                       "name": "python3"}
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


def parse_assignments(pairs) -> dict:
    """``["N=1024", "arch='vgg16'"]`` -> dict; values are Python literals, else strings."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"parameter {pair!r} is not of the form name=value")
        try:
            values[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key.strip()] = text
    return values


def check_type(name: str, value, default):
    """Return ``value`` if it has the type of ``default`` (an int is a valid float)."""
    expected = type(default)
    if default is None or (expected is float and type(value) is int):
        return float(value) if expected is float else value
    if type(value) is not expected:
        raise TypeError(f"parameter {name!r} must be {expected.__name__} like its default "
                        f"{default!r}, got {type(value).__name__} {value!r}")
    return value


def resolve(chapter: Chapter, profile: str, overrides: dict | None = None) -> dict:
    """The parameters to run ``chapter`` with: defaults, then the profile, then ``overrides``."""
    defaults = chapter.defaults()
    chosen = {**profiles.overrides(profile, chapter.stem), **(overrides or {})}
    unknown = sorted(set(chosen) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for chapter "
                         f"{chapter.stem}; valid parameters: {', '.join(defaults)}")
    resolved = dict(defaults)
    for name, value in chosen.items():
        resolved[name] = check_type(name, value, defaults[name])
    profiles.check_profile(resolved.get("profile", profile))
    return resolved
