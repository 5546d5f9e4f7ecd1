"""The chapter tables and figures of lib.diabetes (report, figures) and the ranking helpers of
importance: known inputs, exact outputs."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.diabetes import figures, importance, report  # noqa: E402
from lib.kernels import analytic, sobol  # noqa: E402

NAMES = ["a", "b", "c"]


def summary_frame():
    """An ``indices_over_models``-shaped table with round numbers."""
    columns = {}
    for key, means in (("S1", [0.5, 0.1, 0.2]), ("ST", [0.6, 0.15, 0.3])):
        means = np.array(means)
        columns[(key, "mean")], columns[(key, "low")] = means, means - 0.05
        columns[(key, "high")], columns[(key, "conf")] = means + 0.05, [0.01, 0.02, 0.03]
    return pd.DataFrame(columns, index=pd.Index(NAMES, name="feature"))


class FakeResult(dict):
    names = NAMES


def test_index_table_cells_and_ranking():
    table = report.index_table(summary_frame())
    assert list(table.columns) == ["S1", "S1 ± (bootstrap)", "ST", "ST ± (bootstrap)"]
    assert table.loc["a", "ST"] == "0.600 [0.550, 0.650]"
    assert table.loc["c", "S1 ± (bootstrap)"] == 0.03
    assert importance.ranked_inputs(summary_frame()) == ["a", "c", "b"]
    assert importance.ranked_inputs(summary_frame(), "S1") == ["a", "c", "b"]


def test_mean_pairs_average_the_outputs_and_keep_the_upper_triangle():
    S2 = torch.full((3, 3, 2), float("nan"), dtype=torch.float64)
    S2[0, 1], S2[0, 2], S2[1, 2] = torch.tensor([0.1, 0.3]), torch.tensor([0.0, 0.2]), 0.05
    pairs = report.mean_pairs(FakeResult(S2=S2))
    assert pairs.loc["a", "b"] == pytest.approx(0.2) and np.isnan(pairs.loc["b", "a"])
    assert report.largest_pair(pairs) == (("a", "b"), pytest.approx(0.2))
    with pytest.raises(ValueError, match="no second-order"):
        report.mean_pairs(FakeResult(S1=S2))


def test_strongest_correlations_by_absolute_value():
    corr = pd.DataFrame([[1, 0.2, -0.7], [0.2, 1, 0.5], [-0.7, 0.5, 1]], index=NAMES,
                        columns=NAMES, dtype=float)
    assert report.strongest_correlations(corr, 2) == [(("a", "c"), -0.7), (("b", "c"), 0.5)]


def test_agreement_table_ranks_orders_and_correlates():
    measures = pd.DataFrame({"ref": [3.0, 1.0, 2.0], "same": [30.0, 10.0, 20.0],
                             "reversed": [1.0, 3.0, 2.0]}, index=NAMES)
    table, rho = report.agreement_table(measures, "ref")
    assert rho == {"same": pytest.approx(1.0), "reversed": pytest.approx(-1.0)}
    assert list(table.index) == ["a", "c", "b", "Spearman ρ with ref"]
    assert table.loc["a", "ref"] == "3.0 (1)" and table.loc["b", "reversed"] == "3.0 (1)"
    assert list(table.iloc[-1]) == ["", "1.00", "-1.00"]
    with pytest.raises(ValueError, match="unknown reference 'nope'"):
        report.agreement_table(measures, "nope")


def test_seed_table_and_its_stable_prefix():
    table = report.seed_table({0: ["a", "b", "c"], 1: ["a", "b", "c"], 2: ["a", "c", "b"]})
    assert table.index.name == "rank" and list(table.index) == [1, 2, 3]
    assert report.stable_prefix(table) == 1
    assert report.stable_prefix(report.seed_table({0: NAMES, 1: NAMES})) == 3
    with pytest.raises(ValueError, match="same number of inputs"):
        report.seed_table({0: ["a", "b"], 1: NAMES})


def test_share_same_top_counts_models_with_the_same_leading_order():
    values = np.array([[0.9, 0.9, 0.1, 0.9],    # a
                       [0.5, 0.1, 0.5, 0.5],    # b
                       [0.1, 0.5, 0.9, 0.1]])   # c
    assert importance.share_same_top(values, NAMES, ["a", "b", "c"], k=2) == 0.5
    assert importance.share_same_top(values, NAMES, ["a", "b", "c"], k=1) == 0.75
    with pytest.raises(ValueError, match="k <= 3"):
        importance.share_same_top(values, NAMES, NAMES, k=4)


def test_total_indices_equal_the_sobol_workflow():
    problem = analytic.ishigami_problem()

    def model(X):  # two outputs: Ishigami and its double
        y = analytic.ishigami(X)
        return torch.stack([y, 2 * y], dim=1)
    result = importance.total_indices(model, problem, 256, num_resamples=10, seed=3)
    X = sobol.sample(problem, 256, calc_second_order=False, seed=3)
    expected = sobol.analyze(problem, model(torch.as_tensor(X)), calc_second_order=False,
                             num_resamples=10, seed=3)
    assert "S2" not in result
    for key in ("S1", "ST", "ST_conf"):
        torch.testing.assert_close(result[key].cpu(), expected[key].cpu())
    # indices of a scaled output are the same
    torch.testing.assert_close(result["ST"][:, 0], result["ST"][:, 1])


def test_reduction_table_shows_intervals_and_readable_names():
    tests = pd.DataFrame({"features": ["a, b", "a"], "accuracy": [0.8, 0.7],
                          "p (accuracy)": [1.0, 0.01234], "loss (accuracy)": [False, True],
                          "roc_auc": [0.9, 0.8], "p (roc_auc)": [1.0, 0.2],
                          "loss (roc_auc)": [False, False]},
                         index=pd.Index([2, 1], name="k"))
    index = pd.MultiIndex.from_tuples([("Sobol ST", 2), ("Sobol ST", 1)],
                                      names=["ordering", "k"])
    summary = pd.DataFrame({(m, part): [v - 0.1 if part == "low" else v] * 2
                            for m, v in (("accuracy", 0.8), ("roc_auc", 0.9))
                            for part in ("mean", "low", "high")}, index=index)
    shown = report.reduction_table(tests, summary)
    assert "ROC AUC" in shown and "p (ROC AUC)" in shown
    assert shown.loc[2, "accuracy"] == "0.800 [0.700, 0.800]"
    assert shown.loc[1, "p (accuracy)"] == 0.012


def test_figures_draw_what_they_are_given():
    fig, ax = plt.subplots()
    figures.index_bars(ax, summary_frame(), ["b", "a", "c"])
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == pytest.approx([0.1, 0.5, 0.2, 0.15, 0.6, 0.3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a", "c"]
    fig, ax = plt.subplots()
    values = np.array([[1.0, np.nan], [0.25, 1.0]])
    image = figures.annotated_heatmap(ax, values, ["x", "y"], fmt=".1f")
    assert [t.get_text() for t in ax.texts] == ["1.0", "0.2", "1.0"]
    assert image.get_array().shape == (2, 2)
    plt.close("all")
