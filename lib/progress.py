"""Progress bars for long work, never mixed with a chapter's results.

Bars go to stderr; while the book's runner executes a chapter, it sets ``NNSA_PROGRESS_TO``
to a file that it forwards to the terminal, so the bars are seen as the work runs but are not
stored among the chapter's outputs (where they would differ from run to run).
"""
import functools
import os
import sys

from tqdm.std import tqdm

# A bar with ``show=None`` appears only once the work has taken this long: quick runs stay quiet.
LONG_RUN_SECONDS = 5.0


@functools.lru_cache(maxsize=4)
def _side_channel(path: str):
    return open(path, "a", buffering=1, encoding="utf-8")


def stream():
    """Where bars are written: the runner's side channel when there is one, else stderr."""
    path = os.environ.get("NNSA_PROGRESS_TO")
    return _side_channel(path) if path else sys.stderr


def progress(iterable=None, *, total=None, desc=None, unit="it", leave=True, show=True):
    """A tqdm bar. ``show``: True shows it, False hides it, None shows it only after
    ``LONG_RUN_SECONDS``. ``NNSA_PROGRESS=0`` hides every bar."""
    hidden = os.environ.get("NNSA_PROGRESS", "1") == "0" or show is False
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream(),
                disable=hidden, delay=LONG_RUN_SECONDS if show is None else 0,
                dynamic_ncols=False, ncols=100, mininterval=1.0)
