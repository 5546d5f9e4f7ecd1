"""Numbers about activation-maximisation images: robustness and roughness."""
from collections import OrderedDict

import pytest
import pandas as pd
import torch
from torch import nn

from lib.kernels import am
from lib.ultrasound import am_measures

IDENTITY = am.Transforms(0, (1, 1), 0)


def tiny_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 4, 3, padding=1)), ("relu", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(4, 3))])).eval()


@pytest.fixture(scope="module")
def result():
    return am.maximize(tiny_cnn(0), [0, 1, 2], size=8, channels=1, param="pixel",
                       transforms=None, steps=3, show_progress=False)


def test_identity_transforms_leave_the_final_values(result):
    values = am_measures.transformed_values(tiny_cnn(0), result, IDENTITY, draws=3)
    torch.testing.assert_close(values, result.final_values)


def test_transformed_values_are_the_mean_over_seeded_draws(result):
    model, transforms = tiny_cnn(0), am.Transforms(jitter=2, scale=(0.8, 1.2), rotate=30)
    generator = torch.Generator().manual_seed(7)
    draws = [am.target_values(model, transforms(result.images, generator), result.targets)
             for _ in range(2)]
    values = am_measures.transformed_values(model, result, transforms, draws=2, seed=7)
    assert torch.equal(values, torch.stack(draws).mean(dim=0))
    assert not torch.equal(values, result.final_values)
    with pytest.raises(ValueError, match="draws must be a positive integer; got 0"):
        am_measures.transformed_values(model, result, transforms, draws=0)


def test_mean_scores_average_over_the_targets(result):
    row = am_measures.mean_scores(tiny_cnn(0), result, IDENTITY)
    assert list(row) == ["logit", "logit, transformed", "total variation"]
    assert row["logit"] == result.final_values.mean().item()
    assert row["logit, transformed"] == pytest.approx(row["logit"])
    assert row["total variation"] == am.total_variation(result.images).mean().item()



def grid_table(**changes):
    rows = {"pixels": (2.0, 1.0, 0.30), "pixels + L2": (1.5, 0.9, 0.20),
            "pixels + TV": (1.8, 1.0, 0.10), "pixels + blur": (2.5, 1.2, 0.40),
            "pixels + transforms": (1.6, 1.5, 0.25), "Fourier": (3.0, 1.0, 0.30),
            "Fourier + transforms": (2.0, 1.9, 0.15),
            "Fourier + transforms + TV": (1.9, 1.8, 0.05)} | changes
    return pd.DataFrame(rows, index=["logit", "logit, transformed", "total variation"]).T


def test_grid_story_reads_its_comparisons_off_the_table():
    story = am_measures.grid_story(grid_table())
    assert "its logit is 1.00 (50 % of its logit)" in story
    assert "lower than plain pixels' for L2 and TV, at a lower logit for L2 and TV." in story
    assert "(the highest of the grid) with a total variation equal to plain" in story
    assert "copies is 1.90 (95 % of its logit) for Fourier" in story
    assert "with the smoothest image of the 8 settings" in story
    changed = am_measures.grid_story(grid_table(**{
        "pixels": (-1.0, -2.0, 0.30), "Fourier": (0.5, 0.4, 0.50),
        "Fourier + transforms + TV": (1.9, 1.8, 0.12)}))
    assert "is -2.00 (no share: the logit is not positive)" in changed
    assert "(not the highest) with a total variation higher than plain" in changed
    assert "with the second smoothest image" in changed
