"""The thin library behind the book's chapters, in wings by job (see book/contributing.md):

- ``lib.kernels``: the sensitivity kernels (Sobol, pixel perturbation, Grad-CAM, AM, metrics);
- ``lib.diabetes``: the Pima experiments (batched MLPs, cross-validation, reduction);
- ``lib.ultrasound``: the CNN experiments (networks, training, evaluation, comparison);
- ``lib.book``: the machinery that runs and renders the chapters;
- ``lib.data``, ``lib.hardware``, ``lib.progress``, ``lib.timing``: shared by all of them.

Submodules and wings load on first use (``lib.data``, ``lib.kernels.sobol``), so
``import lib`` is cheap and a chapter depends only on the modules it touches.
"""
from . import lazy
from .book.provenance import setup
from .hardware import device, seed_everything
from .version import VERSION as __version__

__all__ = ["setup", "device", "seed_everything", "__version__"]
__getattr__ = lazy.submodules(__name__, __path__)
