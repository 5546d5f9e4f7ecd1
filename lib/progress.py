"""Progress bars for long work, on stderr so they never mix with a chapter's results."""
import os
import sys

from tqdm.std import tqdm


def progress(iterable=None, *, total=None, desc=None, unit="it", leave=True):
    """A tqdm bar; ``NNSA_PROGRESS=0`` turns every bar off."""
    disabled = os.environ.get("NNSA_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=disabled, dynamic_ncols=False, ncols=100, mininterval=1.0)
