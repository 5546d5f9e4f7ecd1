"""The line every executed chapter starts with: what produced these results."""
import platform
import subprocess

import torch

from .. import hardware
from ..version import VERSION
from . import paths


def git_commit() -> str:
    """Short commit of the book's checkout, ``+dirty`` when it has uncommitted edits."""
    def git(*args):
        return subprocess.run(["git", "-C", str(paths.ROOT), *args], capture_output=True,
                              text=True, timeout=10)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def setup(profile: str, seed: int) -> torch.device:
    """Seed everything, print the provenance line, and return the device to compute on.

    ``profile`` is only reported (the runner has checked it): this module stays out of the
    profiles, so that editing them does not touch what every cached result depends on.
    """
    hardware.seed_everything(seed)
    dev = hardware.device()
    # two short lines, so that the page shows them whole
    print(f"profile {profile} | seed {seed} | device {hardware.describe(dev)}\n"
          f"commit {git_commit()} | torch {torch.__version__} | lib {VERSION} | "
          f"python {platform.python_version()}")
    return dev
