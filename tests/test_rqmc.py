"""Randomised QMC intervals for Sobol' indices (lib.kernels.rqmc): the interval's coverage on
a known answer, the designs' structure, and coverage studies on functions with known indices."""
import numpy as np
import pytest
import torch

from lib.kernels import analytic, rqmc, sobol
from lib.kernels.sobol_estimators import estimate_indices, point_indices, split_blocks

LINEAR = {"num_vars": 2, "names": ["x1", "x2"], "bounds": [[0.0, 1.0]] * 2}
LINEAR_EXACT = {"S1": np.array([0.2, 0.8]), "ST": np.array([0.2, 0.8])}


def linear(X):
    """x1 + 2 x2 on the unit square: Var = 1/12 + 4/12, S1 = ST = (1/5, 4/5)."""
    return X[:, 0] + 2 * X[:, 1]


def test_the_t_interval_holds_the_mean_at_its_level():
    """Independent normal replicates: the Student-t interval covers with probability 0.95."""
    rng = np.random.default_rng(0)
    estimates = rng.normal(3.0, 2.0, size=(8, 4000))
    mean, half = rqmc.interval(estimates, 0.95)
    coverage = (np.abs(mean - 3.0) <= half).mean()
    assert abs(coverage - 0.95) < 3 * np.sqrt(0.95 * 0.05 / 4000)
    t_mean, t_half = rqmc.interval(torch.as_tensor(estimates), 0.95)
    np.testing.assert_allclose(t_half.numpy(), half)
    np.testing.assert_allclose(t_mean.numpy(), mean)


def test_replicate_designs_are_saltelli_designs_with_their_own_scrambling():
    designs = rqmc.replicate_designs(LINEAR, 16, 3, calc_second_order=False, seed=1)
    assert designs.shape == (3, 16 * 4, 2)
    blocks = designs.reshape(3, 16, 4, 2)
    A, AB1, B = blocks[:, :, 0], blocks[:, :, 1], blocks[:, :, -1]
    np.testing.assert_array_equal(AB1[..., 1], A[..., 1])  # AB_1: A with column 1 from B
    np.testing.assert_array_equal(AB1[..., 0], B[..., 0])
    assert not np.allclose(A[0], A[1])  # independent scramblings
    np.testing.assert_array_equal(designs, rqmc.replicate_designs(LINEAR, 16, 3,
                                                                  calc_second_order=False,
                                                                  seed=1))


def test_point_indices_are_the_estimates_of_the_bootstrapped_estimator():
    X = sobol.sample(analytic.ishigami_problem(), 64, seed=2)
    Y = torch.as_tensor(analytic.ishigami(X))[:, None].repeat(1, 2)
    blocks = split_blocks(Y, 3, True)
    point, full = point_indices(blocks), estimate_indices(blocks, num_resamples=5, seed=0)
    for key in ("S1", "ST", "S2"):
        torch.testing.assert_close(point[key], full[key], equal_nan=True)


def test_analyze_averages_the_replicates_and_is_close_to_the_truth():
    result = rqmc.analyze(LINEAR, linear, 256, replicates=8, calc_second_order=False,
                          seed=3)
    assert result["replicates"]["S1"].shape == (8, 2)
    torch.testing.assert_close(result["S1"], result["replicates"]["S1"].mean(0))
    for key in ("S1", "ST"):
        error = (result[key].numpy() - LINEAR_EXACT[key])
        assert np.all(np.abs(error) < 0.01)
        assert np.all(np.abs(error) <= 3 * result[key + "_conf"].numpy())


def test_rqmc_intervals_cover_a_known_answer_near_their_level():
    table = rqmc.coverage(LINEAR, linear, LINEAR_EXACT, [6, 8], replicates=8,
                          repetitions=150, seed=4)
    rqmc_rows = table[table["method"] == "RQMC"]
    assert list(rqmc_rows["intervals"]) == [600, 600]  # 150 repetitions x 4 indices
    assert rqmc_rows["coverage"].between(0.88, 1.0).all()
    boot = table[table["method"] == "bootstrap"]
    # the bootstrap does not see the design's accuracy: wider than RQMC's at equal N
    # (RQMC pays 8 times the runs), and it covers at least as often
    assert (boot["mean_half_width"].to_numpy() > rqmc_rows["mean_half_width"].to_numpy()).all()
    assert (boot["coverage"].to_numpy() >= 0.95).all()
    assert list(table["model_runs"]) == [256, 2048, 1024, 8192]


def test_coverage_on_ishigami_with_second_order_counts_the_pairs():
    table = rqmc.coverage(analytic.ishigami_problem(), analytic.ishigami,
                          analytic.ishigami_indices(), [6], replicates=4, repetitions=5,
                          calc_second_order=True, seed=5)
    assert list(table["intervals"]) == [5 * 9, 5 * 9]  # S1, ST and the 3 pairs


@pytest.mark.parametrize("kwargs, message", [
    ({"replicates": 1}, "replicates must be an integer >= 2"),
    ({"repetitions": 0}, "repetitions must be a positive integer"),
    ({"conf_level": 1.0}, r"conf_level must be a number in \(0, 1\)")])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rqmc.coverage(LINEAR, linear, LINEAR_EXACT, [4], **kwargs)


def test_one_replicate_has_no_interval():
    with pytest.raises(ValueError, match="at least 2 replicates"):
        rqmc.interval(np.ones((1, 3)))


def test_verdicts_name_where_coverage_falls_short():
    import pandas as pd
    table = pd.DataFrame({"function": ["f", "f", "g", "g"], "N": [64, 256, 64, 256],
                          "method": ["RQMC"] * 4, "coverage": [0.80, 0.95, 0.94, 0.99],
                          "intervals": [400] * 4})
    assert list(rqmc.below_level(table, 0.95)) == [True, False, False, False]
    assert rqmc.coverage_verdict(table, "RQMC") == \
        "below their nominal level for f at N = 64"
    fine = table.assign(coverage=0.96)
    assert rqmc.coverage_verdict(fine, "RQMC") == "at or above their nominal level at every N"
    with pytest.raises(ValueError, match="no rows of method 'bootstrap'"):
        rqmc.coverage_verdict(table, "bootstrap")
