"""lib.sobol against SALib (design, indices, confidence intervals) and against exact indices."""
import warnings

import numpy as np
import pytest
import torch
from SALib.analyze import sobol as salib_analyze
from SALib.sample import sobol as salib_sample

from lib.kernels import analytic, sobol

KEYS_FIRST = ("S1", "S1_conf", "ST", "ST_conf")
KEYS_SECOND = KEYS_FIRST + ("S2", "S2_conf")


def uniform_problem(D, low=-1.0, high=2.0):
    return {"num_vars": D, "names": [f"x{i + 1}" for i in range(D)],
            "bounds": [[low, high]] * D}


def nonadditive(X):
    """A test model with interactions and unequal inputs (works on arrays of any D)."""
    return (np.sin(3 * X).sum(1) + X[:, 0] * X[:, min(1, X.shape[1] - 1)] ** 2
            + 0.4 * X[:, -1] ** 3 + 0.3 * np.cos(X[:, 0] + X[:, -1]))


def as_numpy(result, key, column=None):
    values = result[key].cpu().numpy()
    return values if column is None else values[..., column]


def assert_equal_to_salib(ours, theirs, second_order, column=None, atol=1e-10):
    for key in KEYS_SECOND if second_order else KEYS_FIRST:
        mine, reference = as_numpy(ours, key, column), np.asarray(theirs[key])
        assert mine.shape == reference.shape, key
        assert np.array_equal(np.isnan(mine), np.isnan(reference)), key
        np.testing.assert_allclose(mine, reference, rtol=0, atol=atol, equal_nan=True,
                                   err_msg=key)
    assert not second_order or "S2" in ours


# ------------------------------------------------------------------------------ the design

@pytest.mark.parametrize("D, second_order", [(2, True), (5, False), (6, True)])
def test_sample_equals_salib_row_for_row(D, second_order):
    problem = uniform_problem(D)
    ours = sobol.sample(problem, 256, calc_second_order=second_order, seed=3)
    theirs = salib_sample.sample(problem, 256, calc_second_order=second_order, seed=3)
    assert ours.shape == (256 * sobol.rows_per_base_sample(D, second_order), D)
    np.testing.assert_array_equal(ours, theirs)


def test_sample_equals_salib_for_every_parametric_distribution():
    problem = {"num_vars": 7, "names": list("abcdefg"),
               "bounds": [[0, 2], [1, 10], [1, 3, 0.3], [5, 2], [0, 4, 1, 2], [0, 0.5],
                          [1.5, 2, 0.5]],
               "dists": ["unif", "logunif", "triang", "norm", "truncnorm", "lognorm",
                         "weibull"]}
    ours = sobol.sample(problem, 128, seed=11)
    theirs = salib_sample.sample(dict(problem), 128, seed=11)
    np.testing.assert_array_equal(ours, theirs)


def test_empirical_marginal_is_the_inverse_empirical_cdf():
    problem = sobol.problem_from_data(np.array([[3.0], [1.0], [2.0], [2.0]]), names=["x"])
    U = np.array([[0.0], [0.25], [0.2500001], [0.5], [0.75], [0.7500001], [0.999]])
    np.testing.assert_array_equal(sobol.scale_to_inputs(U, problem)[:, 0],
                                  [1, 1, 2, 2, 2, 3, 3])


def test_an_input_model_needs_as_many_rows_as_inputs():
    with pytest.raises(ValueError, match="at least as many rows .* got 2 rows for 3 inputs"):
        sobol.problem_from_data(np.ones((2, 3)))


def test_empirical_inputs_reproduce_the_data_marginals():
    rng = np.random.default_rng(0)
    data = np.column_stack([rng.integers(0, 5, 300), rng.normal(size=300)])
    X = sobol.sample(sobol.problem_from_data(data), 1024, calc_second_order=False, seed=2)
    assert set(np.unique(X[:, 0])) <= set(np.unique(data[:, 0]))
    assert set(np.unique(X[:, 1])) <= set(data[:, 1])
    for value in range(5):
        expected = np.mean(data[:, 0] == value)
        assert abs(np.mean(X[:, 0] == value) - expected) < 0.01
    np.testing.assert_allclose(np.quantile(X[:, 1], [0.1, 0.5, 0.9]),
                               np.quantile(data[:, 1], [0.1, 0.5, 0.9]), atol=0.05)


# ----------------------------------------------------------------------- equality with SALib

@pytest.mark.parametrize("D, second_order, N", [(1, True, 128), (2, True, 512), (3, False, 1024),
                                                (4, True, 256), (7, True, 512),
                                                (7, False, 256)])
def test_analyze_equals_salib(D, second_order, N):
    problem = uniform_problem(D)
    X = salib_sample.sample(problem, N, calc_second_order=second_order, seed=D)
    Y = nonadditive(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # SALib's std of an empty S2 (D = 1)
        theirs = salib_analyze.analyze(problem, Y, calc_second_order=second_order, seed=42)
    ours = sobol.analyze(problem, Y, calc_second_order=second_order, seed=42)
    assert_equal_to_salib(ours, theirs, second_order)


def test_analyze_equals_salib_at_other_levels_and_resample_counts():
    problem = uniform_problem(3)
    Y = nonadditive(salib_sample.sample(problem, 512, seed=5))
    theirs = salib_analyze.analyze(problem, Y, num_resamples=37, conf_level=0.8, seed=9)
    ours = sobol.analyze(problem, Y, num_resamples=37, conf_level=0.8, seed=9)
    assert_equal_to_salib(ours, theirs, True)


def test_without_seed_both_draw_from_numpys_global_generator():
    problem = uniform_problem(3)
    Y = nonadditive(salib_sample.sample(problem, 256, seed=1))
    np.random.seed(123)
    theirs = salib_analyze.analyze(problem, Y)
    np.random.seed(123)
    ours = sobol.analyze(problem, Y)
    assert_equal_to_salib(ours, theirs, True)


@pytest.mark.parametrize("second_order", [True, False])
def test_several_outputs_equal_salib_column_by_column(second_order):
    problem = uniform_problem(4)
    X = salib_sample.sample(problem, 512, calc_second_order=second_order, seed=8)
    Y = np.column_stack([nonadditive(X), np.exp(X[:, 1]) * X[:, 2], 5.0 + 1e-3 * X[:, 3]])
    ours = sobol.analyze(problem, Y, calc_second_order=second_order, seed=4)
    assert ours["S1"].shape == (4, 3)
    for column in range(Y.shape[1]):
        theirs = salib_analyze.analyze(problem, Y[:, column], calc_second_order=second_order,
                                       seed=4)
        assert_equal_to_salib(ours, theirs, second_order, column)


def test_output_axes_are_kept_and_chunking_changes_nothing():
    problem = uniform_problem(3)
    X = sobol.sample(problem, 256, seed=2)
    Y = np.stack([nonadditive(X), X[:, 0] ** 2, np.cos(X).prod(1), X.sum(1)], axis=1)
    whole = sobol.analyze(problem, Y.reshape(-1, 2, 2), seed=5)
    chunked = sobol.analyze(problem, Y.reshape(-1, 2, 2), seed=5, chunk_size=37)
    assert whole["S1"].shape == (3, 2, 2) and whole["S2"].shape == (3, 3, 2, 2)
    for key in KEYS_SECOND:
        np.testing.assert_allclose(as_numpy(chunked, key), as_numpy(whole, key), rtol=0,
                                   atol=1e-12, equal_nan=True)
    flat = sobol.analyze(problem, Y, seed=5)
    np.testing.assert_allclose(as_numpy(whole, "ST").reshape(3, 4), as_numpy(flat, "ST"),
                               atol=1e-14)


def test_float32_outputs_on_a_tensor_give_salibs_numbers_for_the_same_values():
    problem = uniform_problem(3)
    Y = torch.as_tensor(nonadditive(sobol.sample(problem, 256, seed=0)), dtype=torch.float32)
    theirs = salib_analyze.analyze(problem, Y.double().numpy(), seed=6)
    assert_equal_to_salib(sobol.analyze(problem, Y, seed=6), theirs, True)


def test_constant_output_gets_zero_indices_like_salib():
    problem = uniform_problem(2)
    Y = np.full(256 * 6, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = salib_analyze.analyze(problem, Y, seed=1)
    with pytest.warns(UserWarning, match="constant"):
        ours = sobol.analyze(problem, Y, seed=1)
    assert_equal_to_salib(ours, theirs, True)
    assert np.all(as_numpy(ours, "S1") == 0)


def test_tables_match_salibs_layout():
    problem = uniform_problem(3)
    Y = nonadditive(salib_sample.sample(problem, 256, seed=3))
    theirs = salib_analyze.analyze(problem, Y, seed=2).to_df()
    ours = sobol.analyze(problem, Y, seed=2).to_df()
    for mine, reference in zip(ours, theirs):
        assert list(mine.index) == list(reference.index)
        assert list(mine.columns) == list(reference.columns)
        np.testing.assert_allclose(mine.to_numpy(), reference.to_numpy(), atol=1e-10)


def test_tidy_table_has_one_row_per_output_and_index():
    problem = uniform_problem(3)
    X = sobol.sample(problem, 64, seed=3)
    Y = np.column_stack([nonadditive(X), X[:, 1]])
    result = sobol.analyze(problem, Y, seed=2, output_names=["f", "x2"])
    table = result.tidy()
    assert len(table) == 2 * (3 + 3 + 3)
    row = table.query("output == 'x2' and index == 'S1' and input == 'x2'")
    assert row["value"].item() == pytest.approx(as_numpy(result, "S1")[1, 1])
    with pytest.raises(ValueError, match="choose one"):
        result.to_df()
    assert result.to_df(output="x2")[1].loc["x2", "S1"] == row["value"].item()


# ------------------------------------------------------------------ the estimator kernel

def test_bootstrap_weights_count_salibs_resamples():
    weights = sobol.bootstrap_weights(50, 13, seed=4).numpy()
    draws = np.random.default_rng(4).integers(50, size=(50, 13))
    assert np.all(weights[0] == 1)
    for b in range(13):
        np.testing.assert_array_equal(weights[1 + b], np.bincount(draws[:, b], minlength=50))


def test_kernel_takes_blocks_with_any_output_axes():
    problem = uniform_problem(3)
    X = sobol.sample(problem, 128, seed=1)
    Y = torch.as_tensor(np.stack([nonadditive(X), X[:, 2]], axis=1))
    blocks = sobol.split_blocks(Y, 3, calc_second_order=True)
    assert blocks.A.shape == (128, 2) and blocks.AB.shape == (128, 3, 2)
    np.testing.assert_array_equal(blocks.AB[:, 1].numpy(), Y[2::8].numpy())
    np.testing.assert_array_equal(blocks.BA[:, 0].numpy(), Y[4::8].numpy())
    indices = sobol.estimate_indices(blocks, num_resamples=10, seed=1)
    direct = sobol.analyze(problem, Y, num_resamples=10, seed=1)
    for key in KEYS_SECOND:
        np.testing.assert_array_equal(indices[key].numpy(), direct[key].numpy())


# ------------------------------------------------------------------- the analytic functions

def test_analytic_functions_agree_between_numpy_and_torch():
    X = np.random.default_rng(0).uniform(0, 1, size=(100, 8))
    for f in (analytic.g_function, lambda x: analytic.ishigami(x[:, :3])):
        np.testing.assert_allclose(f(torch.as_tensor(X)).numpy(), f(X), rtol=1e-14)


def test_ishigami_closed_form_matches_quadrature():
    """Partial variances by Gauss-Legendre quadrature of the conditional expectations."""
    nodes, weights = np.polynomial.legendre.leggauss(40)
    x, w = np.pi * nodes, weights / 2  # uniform on [-pi, pi]
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3)
    f = analytic.ishigami(grid).reshape(40, 40, 40)
    W = np.einsum("i,j,k->ijk", w, w, w)
    mean = (W * f).sum()
    V = (W * (f - mean) ** 2).sum()
    V1 = (w * ((f * W).sum((1, 2)) / w - mean) ** 2).sum()
    V2 = (w * ((f * W).sum((0, 2)) / w - mean) ** 2).sum()
    exact = analytic.ishigami_indices()
    np.testing.assert_allclose([V1 / V, V2 / V], exact["S1"][:2], atol=1e-10)
    # all three inputs account for the variance: S1 sums with the only interaction S13 to 1
    assert exact["S1"].sum() + exact["S2"][0, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(exact["ST"], exact["S1"] + [exact["S2"][0, 2], 0,
                                                           exact["S2"][0, 2]])


def test_g_function_closed_form_is_a_complete_decomposition():
    a = np.array([0.0, 1.0, 4.5])
    exact = analytic.g_function_indices(a)
    S2 = exact["S2"][np.triu_indices(3, 1)]
    Vi = 1 / (3 * (1 + a) ** 2)
    S123 = np.prod(Vi) / (np.prod(1 + Vi) - 1)
    assert exact["S1"].sum() + S2.sum() + S123 == pytest.approx(1.0)
    # a factor's variance by quadrature: (|4x - 2| + a) / (1 + a) on [0, 1]
    x = (np.arange(200000) + 0.5) / 200000
    factor = (np.abs(4 * x - 2) + a[1]) / (1 + a[1])
    assert factor.var() == pytest.approx(Vi[1], rel=1e-8)


@pytest.mark.parametrize("name", ["ishigami", "g_function"])
def test_estimates_converge_and_lie_within_their_intervals(name):
    problem = getattr(analytic, f"{name}_problem")()
    f, exact = getattr(analytic, name), getattr(analytic, f"{name}_indices")()
    errors = {}
    for log2_n in (8, 14):
        X = sobol.sample(problem, 2 ** log2_n, seed=0)
        result = sobol.analyze(problem, sobol.evaluate(f, X), seed=1)
        errors[log2_n] = max(np.nanmax(np.abs(as_numpy(result, k) - exact[k]))
                             for k in ("S1", "ST", "S2"))
    for key in ("S1", "ST", "S2"):
        known = ~np.isnan(exact[key])
        error = np.abs(as_numpy(result, key) - exact[key])[known]
        assert np.all(error <= as_numpy(result, key + "_conf")[known]), key
    assert errors[14] < 0.005 and errors[14] < errors[8] / 10


# ------------------------------------------------------------------------------ evaluate

def test_evaluate_runs_modules_in_chunks_and_restores_their_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 2))
    X = sobol.sample(uniform_problem(3), 64, seed=0)
    chunked = sobol.evaluate(model, X, chunk_size=100, device="cpu")
    with torch.no_grad():
        expected = model.eval()(torch.as_tensor(X, dtype=torch.float32))
    model.train()
    assert chunked.shape == (len(X), 2) and chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, expected)
    assert model.training


def test_evaluate_runs_vectorised_functions_in_float64():
    X = sobol.sample(analytic.ishigami_problem(), 128, seed=0)
    Y = sobol.evaluate(analytic.ishigami, X, chunk_size=77, device="cpu")
    assert Y.dtype == torch.float64 and Y.shape == (len(X),)
    np.testing.assert_allclose(Y.numpy(), analytic.ishigami(X), rtol=1e-15)


def test_evaluate_rejects_a_model_that_drops_rows():
    with pytest.raises(ValueError, match="one output"):
        sobol.evaluate(lambda x: x.sum(), np.ones((10, 2)), device="cpu")


# ----------------------------------------------------------------------------- bad input

def test_nan_in_y_names_the_rows():
    problem = uniform_problem(2)
    Y = nonadditive(sobol.sample(problem, 64, seed=0))
    Y[[5, 17]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=r"2 row\(s\): \[5, 17\]"):
        sobol.analyze(problem, Y)


def test_wrong_length_says_the_expected_lengths():
    problem = uniform_problem(3)
    with pytest.raises(ValueError, match=r"N\*8 rows.*1000 \(N=125\) and 1008 \(N=126\)"):
        sobol.analyze(problem, np.zeros(1001))
    with pytest.raises(ValueError, match="calc_second_order=False"):
        sobol.analyze(problem, np.zeros(5 * 65), calc_second_order=True)


@pytest.mark.parametrize("bounds, dists, match", [
    ([[1.0, 0.0], [0, 1]], None, r"'x1'.*lower < upper"),
    ([[0, 1], [2.0, 2.0]], None, r"'x2'.*lower < upper"),
    ([[0, 1], [0, 1]], ["unif", "gamma"], r"unknown distribution 'gamma'.*truncnorm"),
    ([[0, 1], [0, -1]], ["unif", "norm"], r"'x2'.*std > 0"),
    ([[0, 1], [0, 1, 2]], None, r"'x2': unif takes"),
    ([[0, 1], [0, np.nan]], None, r"NaN or inf"),
])
def test_bad_problems_are_named(bounds, dists, match):
    problem = {"num_vars": 2, "names": ["x1", "x2"], "bounds": bounds}
    if dists:
        problem["dists"] = dists
    with pytest.raises(ValueError, match=match):
        sobol.sample(problem, 8)


def test_other_bad_arguments():
    problem = uniform_problem(2)
    Y = nonadditive(sobol.sample(problem, 16, seed=0))
    with pytest.raises(ValueError, match="distinct names"):
        sobol.check_problem({"num_vars": 3, "names": ["a", "b"], "bounds": [[0, 1]] * 3})
    with pytest.raises(ValueError, match="groups"):
        sobol.check_problem({**problem, "groups": ["g", "g"]})
    with pytest.raises(ValueError, match="conf_level"):
        sobol.analyze(problem, Y, conf_level=95)
    with pytest.raises(ValueError, match="num_resamples"):
        sobol.analyze(problem, Y, num_resamples=1)
    with pytest.raises(TypeError, match="seed"):
        sobol.analyze(problem, Y, seed="abc")
    with pytest.raises(ValueError, match="output_names"):
        sobol.analyze(problem, Y, output_names=["a", "b"])
    with pytest.raises(ValueError, match="positive integer"):
        sobol.sample(problem, 0)


def test_n_not_a_power_of_two_warns_like_salib():
    with pytest.warns(UserWarning, match=r"N=100 is not a power of two.*N=128"):
        sobol.sample(uniform_problem(2), 100)
