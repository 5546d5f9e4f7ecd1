"""The book's machinery: where things are, profiles, the cache, chapters, running, rendering.

It imports no science: nothing here knows about networks or sensitivity indices.
"""
from .. import lazy

__getattr__ = lazy.submodules(__name__, __path__)
