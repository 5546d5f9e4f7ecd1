"""The thin library behind the book's chapters: data, models and sensitivity kernels.

Submodules load on first use (``lib.sobol``, ``lib.data``, ...), so ``import lib`` is cheap and
a chapter depends only on the modules it touches.
"""
import importlib
from pathlib import Path

from .hardware import device, seed_everything
from .provenance import setup

__version__ = "0.1.0"


def __getattr__(name):
    if (Path(__file__).parent / f"{name}.py").exists():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lib' has no attribute {name!r}")
