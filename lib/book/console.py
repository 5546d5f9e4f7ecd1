"""What the terminal shows while a chapter runs: the progress bars of its long work.

The chapter's kernel writes its bars to a side file (``lib.progress``); a thread forwards
what arrives to this process's stderr. On a terminal the bars update in place; elsewhere
(a log file, CI) only finished lines and, every ``SNAPSHOT_SECONDS``, the latest state of a
bar are written, each on a line of its own, so a log has no carriage returns or escapes.
"""
import contextlib
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

SNAPSHOT_SECONDS = 30.0
POLL_SECONDS = 0.2
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor moves)."""
    return _ESCAPES.sub("", text)


class _Forwarder(threading.Thread):
    def __init__(self, path: Path, out, interactive: bool):
        super().__init__(daemon=True)
        self.path, self.out, self.interactive = path, out, interactive
        self.stopped = threading.Event()
        self.pending, self.last_snapshot = "", time.monotonic()

    def run(self):
        with open(self.path, encoding="utf-8", errors="replace", newline="") as source:
            while not self.stopped.is_set():
                self.forward(source.read())
                self.stopped.wait(POLL_SECONDS)
            self.forward(source.read(), final=True)

    def forward(self, text: str, final: bool = False):
        if self.interactive:
            if text:
                self.out.write(text)
                self.out.flush()
            return
        self.pending += plain(text)
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            state = line.split("\r")[-1].strip()
            if state:
                self.out.write(state + "\n")
        now = time.monotonic()
        latest = self.pending.split("\r")[-1].strip()
        if latest and (final or now - self.last_snapshot > SNAPSHOT_SECONDS):
            self.out.write(latest + "\n")
            self.last_snapshot = now
        if lines or final:
            self.out.flush()


def cell_announcer(stem: str, cells: int, out=None):
    """A hook for nbclient's ``on_cell_start``: one line per code cell of the ``cells`` as
    it starts, e.g. ``05-cnns: cell 7/31 | loaded = {arch: checkpoints.load_trained(...``."""
    def announce(cell, cell_index):
        if cell.cell_type != "code" or not cell.source.strip():
            return
        first = cell.source.strip().splitlines()[0]
        stream = out or sys.stderr
        stream.write(f"  {stem}: cell {cell_index}/{cells} | {first[:60]}\n")
        stream.flush()
    return announce


@contextlib.contextmanager
def forwarded_progress(out=None):
    """Inside the block, kernels started from this process send their bars to ``out``
    (default stderr) through a side file, instead of into the notebook."""
    out = out or sys.stderr
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "progress.txt"
        path.touch()
        before = os.environ.get("NNSA_PROGRESS_TO")
        os.environ["NNSA_PROGRESS_TO"] = str(path)
        forwarder = _Forwarder(path, out, interactive=out.isatty())
        forwarder.start()
        try:
            yield path
        finally:
            forwarder.stopped.set()
            forwarder.join()
            if before is None:
                os.environ.pop("NNSA_PROGRESS_TO", None)
            else:
                os.environ["NNSA_PROGRESS_TO"] = before
