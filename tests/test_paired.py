"""Paired comparisons of per-image scores: known differences, NaN handling, multiplicity."""
import math

import pytest
import torch

from lib.kernels import bootstrap, paired

NAN = float("nan")


def uniform(n, seed):
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def percentile_interval(values, counts, level=0.95):
    """Unpaired percentile interval of the mean of ``values`` over the resamples ``counts``."""
    means = counts @ values / values.numel()
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    return torch.quantile(means, tails).tolist()


# --- one pair ------------------------------------------------------------------------------

def test_verdicts_read_as_phrases():
    assert paired.phrase("higher") == "higher than"
    assert paired.phrase("indistinguishable") == "not distinguishable from"
    with pytest.raises(ValueError, match="unknown verdict"):
        paired.phrase("better")


def test_a_constant_shift_gives_that_difference_with_a_zero_width_interval():
    b = uniform(40, seed=1)
    result = paired.paired_difference(b + 0.1, b)
    assert result.difference == pytest.approx(0.1, abs=1e-12)
    assert result.ci_low == pytest.approx(0.1, abs=1e-12)
    assert result.ci_high - result.ci_low < 1e-12
    assert result.verdict == "higher"
    assert (result.n, result.n_excluded, result.level) == (40, 0, 0.95)
    assert math.isnan(result.p_value)  # the permutation test was not asked for
    assert paired.paired_difference(b, b + 0.1).verdict == "lower"


def test_a_dyadic_shift_is_exact():
    b = torch.arange(16, dtype=torch.float64) / 8
    result = paired.paired_difference(b + 0.125, b)
    assert result.difference == result.ci_low == result.ci_high == 0.125


def test_identical_scores_are_indistinguishable():
    a = uniform(30, seed=2)
    result = paired.paired_difference(a, a.clone(), n_permutations=999)
    assert result.difference == result.ci_low == result.ci_high == 0.0
    assert result.verdict == "indistinguishable"
    assert result.p_value == 1.0


def test_a_shared_offset_hides_the_difference_from_unpaired_intervals_but_not_paired_ones():
    # Images differ a lot (offset), the methods by 0.05 on every image plus small noise.
    offset = 2 * torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = 0.01 * torch.randn(2, 40, generator=torch.Generator().manual_seed(4),
                               dtype=torch.float64)
    a, b = offset + 0.05 + noise[0], offset + noise[1]
    counts = bootstrap.bootstrap_counts(40, 2000, seed=0)
    low_a, high_a = percentile_interval(a, counts)
    low_b, high_b = percentile_interval(b, counts)
    assert low_a < high_b and low_b < high_a  # the separate intervals overlap
    result = paired.paired_difference(a, b)
    assert result.ci_low > 0.03 and result.ci_high < 0.07
    assert result.verdict == "higher"


def test_margin_decides_what_counts_as_a_difference():
    b = torch.arange(10, dtype=torch.float64) / 4
    assert paired.paired_difference(b + 0.25, b, margin=0.125).verdict == "higher"
    assert paired.paired_difference(b + 0.25, b, margin=0.5).verdict == "indistinguishable"
    assert paired.paired_difference(b - 0.25, b, margin=0.5).verdict == "indistinguishable"
    # The interval must lie strictly beyond the margin.
    assert paired.paired_difference(b + 0.25, b, margin=0.25).verdict == "indistinguishable"


def test_undefined_scores_are_left_out_pairwise_and_counted():
    a = torch.tensor([1.0, NAN, 3.0, 4.0, 5.0, 6.0])
    b = torch.tensor([0.5, 2.0, NAN, 3.0, 4.5, 5.0])
    result = paired.paired_difference(a, b)
    both = ~(a.isnan() | b.isnan())
    assert (result.n, result.n_excluded) == (4, 2)
    assert result.difference == pytest.approx((a[both] - b[both]).mean().item(), abs=1e-15)
    assert result.ci_low >= 0.5 - 1e-12 and result.ci_high <= 1.0 + 1e-12


def test_too_few_defined_pairs_give_no_verdict():
    one = paired.paired_difference([1.0, NAN, 3.0], [0.0, 1.0, NAN])
    assert (one.n, one.verdict) == (1, "undefined")
    none = paired.paired_difference([NAN, 1.0], [0.0, NAN], n_permutations=10)
    assert none.n == 0 and none.verdict == "undefined"
    assert math.isnan(none.difference) and math.isnan(none.ci_low) and math.isnan(none.p_value)


def test_an_exact_sign_flip_test_enumerates_every_pattern():
    # Five positive differences: only "no flip" and "all flipped" are as extreme, 2 of 32.
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    result = paired.paired_difference(a, torch.zeros(5), n_permutations=32)
    assert result.p_value == 2 / 32
    # One difference of opposite sign and the smallest size: patterns with a sum at least 13
    # in size are the identity, its mirror and the flips of the first value alone.
    a[0] = -1.0
    assert paired.paired_difference(a, torch.zeros(5), n_permutations=32).p_value == 4 / 32


def test_a_random_sign_flip_test_counts_the_observed_pattern():
    # 30 positive differences: no random pattern is as extreme, so p = 1 / (1 + draws).
    b = uniform(30, seed=5)
    result = paired.paired_difference(b + 1.0 + uniform(30, seed=6), b, n_permutations=999)
    assert result.p_value == 1 / 1000


def test_seeds_reproduce_and_differ():
    a, b = uniform(25, seed=7), uniform(25, seed=8)
    first = paired.paired_difference(a, b, seed=3, n_permutations=500)
    assert first == paired.paired_difference(a, b, seed=3, n_permutations=500)
    other = paired.paired_difference(a, b, seed=4, n_permutations=500)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


# --- many pairs ----------------------------------------------------------------------------

def scores_of_three():
    base = uniform(30, seed=9)
    return {"grad_cam": base + 0.2 + 0.01 * uniform(30, seed=10), "gradient": base,
            "random": base - 0.25}


def test_the_table_has_every_pair_once_with_readable_columns():
    table = paired.pairwise_table(scores_of_three())
    assert list(table.columns) == ["method A", "method B", "difference", "CI low", "CI high",
                                   "CI level", "p", "p (Holm)", "verdict", "n", "n excluded",
                                   "correction"]
    assert list(zip(table["method A"], table["method B"])) == [
        ("grad_cam", "gradient"), ("grad_cam", "random"), ("gradient", "random")]
    assert table["verdict"].tolist() == ["higher"] * 3
    assert table["CI level"].tolist() == pytest.approx([1 - 0.05 / 3] * 3)
    assert table["correction"].iloc[0] == "Bonferroni intervals over 3 pairs; Holm p over 3 pairs"
    assert table["p (Holm)"].tolist() == pytest.approx(paired.holm(table["p"]))


def test_every_pair_is_computed_on_the_same_resamples():
    # "random" is "gradient" shifted by a constant, so with shared resamples the intervals of
    # (grad_cam, random) are those of (grad_cam, gradient) shifted by that constant.
    table = paired.pairwise_table(scores_of_three()).set_index(["method A", "method B"])
    limits = ["CI low", "CI high"]
    shifted = table.loc[("grad_cam", "random"), limits].to_numpy(dtype=float)
    unshifted = table.loc[("grad_cam", "gradient"), limits].to_numpy(dtype=float)
    assert (shifted - unshifted).tolist() == pytest.approx([0.25, 0.25], abs=1e-12)


def test_a_single_comparison_is_the_tables_row_without_correction():
    scores = scores_of_three()
    table = paired.pairwise_table(scores, correction="none", n_permutations=200, seed=11)
    single = paired.paired_difference(scores["grad_cam"], scores["gradient"],
                                      n_permutations=200, seed=11)
    row = table.iloc[0]
    # The same resamples and sign patterns; only the rounding of the matrix products differs.
    assert [row["difference"], row["CI low"], row["CI high"]] == pytest.approx(
        [single.difference, single.ci_low, single.ci_high], rel=1e-12)
    assert row["p"] == single.p_value
    assert row["CI level"] == 0.95
    assert row["correction"] == "no interval correction; Holm p over 3 pairs"


def test_bonferroni_intervals_are_wider():
    scores = {"a": uniform(30, seed=12), "b": uniform(30, seed=13), "c": uniform(30, seed=14)}
    plain = paired.pairwise_table(scores, correction="none", n_permutations=0)
    adjusted = paired.pairwise_table(scores, n_permutations=0)
    assert (adjusted["CI low"] <= plain["CI low"]).all()
    assert (adjusted["CI high"] >= plain["CI high"]).all()
    assert plain["p"].isna().all() and plain["p (Holm)"].isna().all()
    assert adjusted["correction"].iloc[0] == "Bonferroni intervals over 3 pairs"


def test_nans_of_one_method_leave_the_other_pairs_alone():
    scores = scores_of_three()
    scores["gradient"] = scores["gradient"].clone()
    scores["gradient"][:4] = NAN
    table = paired.pairwise_table(scores).set_index(["method A", "method B"])
    assert table.loc[("grad_cam", "gradient"), "n"] == 26
    assert table.loc[("grad_cam", "gradient"), "n excluded"] == 4
    assert table.loc[("grad_cam", "random"), "n"] == 30


def test_versus_reference_compares_every_method_with_the_reference():
    scores = scores_of_three()
    table = paired.versus_reference(scores, "random")
    assert list(zip(table["method"], table["reference"])) == [("grad_cam", "random"),
                                                              ("gradient", "random")]
    above_gradient = paired.paired_difference(scores["grad_cam"], scores["gradient"]).difference
    assert table["difference"].tolist() == pytest.approx([above_gradient + 0.25, 0.25],
                                                         abs=1e-12)
    assert table["CI level"].tolist() == pytest.approx([0.975, 0.975])
    with pytest.raises(ValueError, match="reference 'noise' is not among"):
        paired.versus_reference(scores_of_three(), "noise")


def test_network_labels_name_the_columns():
    table = paired.pairwise_table({"VGG-16": [1.0, 2.0, 3.0], "ResNet-18": [0.0, 1.5, 2.0]},
                                  labels=("network A", "network B"), n_permutations=0)
    assert list(table.columns[:2]) == ["network A", "network B"]


# --- Holm ----------------------------------------------------------------------------------

def test_holm_on_known_p_values():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> kept at 0.06.
    assert paired.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = paired.holm([0.2, NAN, 0.6])  # two tests: 0.4, then max(0.4, 0.6)
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        paired.holm([0.2, 1.5])


def test_verdict_words():
    assert paired.verdict(0.1, 0.2) == "higher"
    assert paired.verdict(-0.2, -0.1) == "lower"
    assert paired.verdict(-0.1, 0.2) == "indistinguishable"
    assert paired.verdict(0.1, 0.2, margin=0.1) == "indistinguishable"
    assert paired.verdict(NAN, 0.2) == "undefined"


# --- bad inputs ----------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"n_boot": 0}, "n_boot must be a positive integer"),
    ({"level": 1.0}, "level must be a number in \\(0, 1\\)"),
    ({"margin": -0.1}, "margin must be a finite non-negative"),
    ({"n_permutations": -1}, "n_permutations must be a non-negative"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"correction": "holm"}, "correction must be one of 'bonferroni', 'none'"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        paired.pairwise_table({"a": [1.0, 2.0], "b": [0.0, 1.0]}, **options)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="same images"):
        paired.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="infinite"):
        paired.paired_difference([1.0, math.inf], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty vector"):
        paired.paired_difference(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="at least two"):
        paired.pairwise_table({"a": [1.0, 2.0]})
    with pytest.raises(TypeError, match="must be a dict"):
        paired.pairwise_table([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="clash"):
        paired.pairwise_table({"a": [1.0], "b": [2.0]}, labels=("verdict", "other"))
