"""The sensitivity kernels: Sobol indices (tabular and image regions), pixel-perturbation maps,
Grad-CAM, activation maximisation, explanation metrics, and the analytic test functions.

A kernel imports only other kernels, ``lib.hardware``, ``lib.progress`` and ``lib.timing``:
never experiment or book code, so it can be lifted into another project as it is.
"""
from .. import lazy

__getattr__ = lazy.submodules(__name__, __path__)
