"""Numbers about activation-maximisation images: robustness and roughness."""
from collections import OrderedDict

import pytest
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

