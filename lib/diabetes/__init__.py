"""The Pima diabetes experiments: the table, a batched ensemble of small MLPs, cross-validation,
its statistics, input importance, and the feature-reduction study."""
from .. import lazy

__getattr__ = lazy.submodules(__name__, __path__)
