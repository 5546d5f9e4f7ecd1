"""Differences of means of two unrelated sets, against cases with known answers."""
import math

import pytest
import torch

from lib.kernels import unpaired


def test_mean_interval_covers_the_mean_and_drops_nan():
    values = torch.tensor([0.0, 1.0] * 20 + [math.nan])
    mean, low, high = unpaired.mean_interval(values, n_boot=2000)
    assert mean == pytest.approx(0.5)
    assert low < 0.5 < high and high - low < 0.4
    assert math.isnan(unpaired.mean_interval([1.0])[1])


def test_a_clear_shift_is_higher_and_equal_sets_are_indistinguishable():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(50, generator=generator)
    shifted = unpaired.difference_of_means(a + 0.5, torch.rand(60, generator=generator))
    assert shifted.verdict == "higher" and shifted.ci_low > 0.3
    assert (shifted.n_a, shifted.n_b) == (50, 60)
    same = unpaired.difference_of_means(a, a.flip(0), seed=3)
    assert same.difference == pytest.approx(0, abs=1e-12)
    assert same.verdict == "indistinguishable" and same.ci_low < 0 < same.ci_high
    lower = unpaired.difference_of_means(a - 0.5, a)
    assert lower.verdict == "lower"


def test_the_interval_is_wider_than_the_paired_one_would_be_for_noisy_sets():
    # Resampling each set on its own keeps the spread between cases in the interval.
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(40, generator=generator)
    result = unpaired.difference_of_means(a + 0.01, a, n_boot=4000)
    assert result.ci_high - result.ci_low > 0.5


def test_too_few_cases_give_an_undefined_verdict_and_bad_inputs_are_refused():
    assert unpaired.difference_of_means([1.0], [0.0, 1.0]).verdict == "undefined"
    with pytest.raises(ValueError, match="infinite"):
        unpaired.difference_of_means([1.0, math.inf], [0.0, 1.0])
    with pytest.raises(ValueError, match="level"):
        unpaired.difference_of_means([1.0, 2.0], [0.0, 1.0], level=1.5)
