"""Summaries of Sobol maps of image regions, on indices whose answers are known."""
import pytest
import torch

from lib.kernels.sobol_images import SobolMaps
from lib.ultrasound import sobol_summary


def maps():
    S1 = torch.tensor([[[0.5, 0.3], [0.1, 0.0]],
                       [[0.2, 0.2], [0.2, 0.2]]], dtype=torch.float64)
    ST = S1 + torch.tensor([[[0.1, 0.0], [0.0, 0.0]],
                            [[0.0, 0.3], [0.0, 0.0]]], dtype=torch.float64)
    S1_conf = torch.full_like(S1, 0.02)
    ST_conf = torch.full_like(S1, 0.05)
    return SobolMaps(S1=S1, ST=ST, S1_conf=S1_conf, ST_conf=ST_conf,
                     target=torch.zeros(2, dtype=torch.long), grid=2, N=4, conf_level=0.95)


def test_certainty_of_known_indices():
    row = sobol_summary.certainty(maps())
    assert row["largest ST per image (mean)"] == pytest.approx((0.6 + 0.5) / 2)
    assert row["ST interval half-width (mean)"] == pytest.approx(0.05)
    assert row["S1 interval half-width (mean)"] == pytest.approx(0.02)
    assert row["regions with ST > 0 (share)"] == pytest.approx(7 / 8)  # all but ST = 0
    assert row["sum of S1 per image (mean)"] == pytest.approx((0.9 + 0.8) / 2)
    assert row["sum of ST per image (mean)"] == pytest.approx((1.0 + 1.1) / 2)


def test_interaction_of_known_indices():
    row = sobol_summary.interaction(maps())
    assert row["sum of S1 (mean over images)"] == pytest.approx(0.85)
    assert row["sum of S1 (lowest image)"] == pytest.approx(0.8)
    assert row["sum of S1 (highest image)"] == pytest.approx(0.9)
    # gaps of 0.1 and 0.3 exceed 0.07, the others are 0
    assert row["regions with ST − S1 beyond both intervals (share)"] == pytest.approx(2 / 8)
