"""lib.book.console: progress bars forwarded from a chapter's kernel to the terminal."""
import io
import os

from lib.book import console


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_reach_a_log_as_plain_lines(monkeypatch):
    monkeypatch.setattr(console, "POLL_SECONDS", 0.01)
    out = io.StringIO()
    with console.forwarded_progress(out) as path:
        assert os.environ["NNSA_PROGRESS_TO"] == str(path)
        with open(path, "a") as bar:
            bar.write("\rtrain:  10%\rtrain:  50%\x1b[A\rtrain: 100%\nresult line\n\rnext:  5%")
    assert "NNSA_PROGRESS_TO" not in os.environ
    lines = out.getvalue().splitlines()
    assert lines == ["train: 100%", "result line", "next:  5%"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_bars_reach_a_terminal_as_they_are(monkeypatch):
    monkeypatch.setattr(console, "POLL_SECONDS", 0.01)
    out = FakeTerminal()
    with console.forwarded_progress(out) as path:
        with open(path, "a") as bar:
            bar.write("\rtrain:  10%\rtrain: 100%\n")
    assert out.getvalue() == "\rtrain:  10%\rtrain: 100%\n"


def test_plain_removes_escape_sequences():
    assert console.plain("\x1b[91mfailed\x1b[0m \x1b[2K\x1b[1A") == "failed "
