"""lib.progress: one kind of bar, shown, hidden, or shown only once work takes long."""
import time

import pytest

from lib import progress as progress_module
from lib.kernels import sobol


@pytest.mark.parametrize("show, delay, visible", [(True, 0.0, True), (False, 0.0, False),
                                                   (None, 1e9, False), (None, 0.0, True)])
def test_bar_is_shown_hidden_or_delayed(monkeypatch, capsys, show, delay, visible):
    monkeypatch.setenv("NNSA_PROGRESS", "1")
    monkeypatch.setattr(progress_module, "LONG_RUN_SECONDS", delay)
    bar = progress_module.progress(total=3, desc="work", show=show)
    for _ in range(3):
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    assert ("work" in capsys.readouterr().err) == visible


def test_environment_hides_every_bar(monkeypatch, capsys):
    monkeypatch.setenv("NNSA_PROGRESS", "0")
    for _ in progress_module.progress(range(3), desc="quiet", show=True):
        pass
    assert "quiet" not in capsys.readouterr().err


def test_sobol_evaluate_shows_its_bar_only_for_long_runs(monkeypatch, capsys):
    import numpy as np

    monkeypatch.setenv("NNSA_PROGRESS", "1")
    monkeypatch.setattr(progress_module, "LONG_RUN_SECONDS", 1e9)
    sobol.evaluate(lambda x: x.sum(1), np.zeros((100, 2)), chunk_size=10, device="cpu")
    assert "evaluate" not in capsys.readouterr().err
    sobol.evaluate(lambda x: x.sum(1), np.zeros((100, 2)), chunk_size=10, device="cpu",
                   show_progress=True)
    assert "evaluate" in capsys.readouterr().err
