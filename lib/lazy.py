"""Submodules that load on first attribute access, so importing a package stays cheap."""
import importlib
from pathlib import Path


def submodules(package: str, path) -> callable:
    """A module-level ``__getattr__`` for ``package`` (its ``__name__`` and ``__path__``).

    ``package.name`` imports ``name.py`` or the subpackage ``name/`` on first use; anything
    else is an AttributeError as usual.
    """
    folder = Path(list(path)[0])

    def __getattr__(name):
        if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file():
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
