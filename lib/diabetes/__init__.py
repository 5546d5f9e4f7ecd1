"""The Pima diabetes experiments: the table, a batched ensemble of small MLPs, cross-validation,
its statistics (corrected intervals, non-inferiority, equivalence), input importance, the
fold networks' own input models with their Sobol indices and Shapley effects (folds), the
feature-reduction study with its fixed-sequence test, and the chapters' tables and figures."""
from .. import lazy

__getattr__ = lazy.submodules(__name__, __path__)
