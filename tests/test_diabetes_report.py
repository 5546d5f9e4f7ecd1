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


def test_rank_changes_partners_and_agreement():
    first = pd.Series([0.5, 0.3, 0.2], index=NAMES, name="ST")
    second = pd.Series([0.4, 0.2, 0.3], index=NAMES, name="Sh")
    changes = report.rank_changes(first, second)
    assert list(changes.index) == ["c", "b"] and list(changes["gain"]) == [1, -1]
    assert list(changes.loc["c", ["ST", "Sh"]]) == [3, 2]
    assert report.rank_changes(first, first.rename("again")).empty
    corr = pd.DataFrame([[1, 0.2, -0.7], [0.2, 1, 0.5], [-0.7, 0.5, 1]], index=NAMES,
                        columns=NAMES, dtype=float)
    assert report.strongest_partner(corr, "c") == ("a", -0.7)
    both = pd.DataFrame({"ST": first, "Sh": second})
    assert report.agreed_prefix(both) == 1  # a first in both; then b vs c
    assert report.agreed_prefix(pd.DataFrame({"x": first, "y": first * 2})) == 3
    assert report.agreed_prefix(pd.DataFrame({"x": first, "y": -first})) == 0


def test_convergence_check_compares_with_the_largest_design():
    study = pd.DataFrame({"N": [64, 64, 128, 128], "index": "ST", "input": ["a", "b"] * 2,
                          "value": [0.30, 0.50, 0.40, 0.45], "conf": [0.1, 0.2, 0.05, 0.04]})
    check = report.convergence_check(study, 64)
    assert check == {"largest_change": pytest.approx(0.1), "largest_conf": 0.2,
                     "N_max": 128, "same_order": True}
    with pytest.raises(ValueError, match="N = 32 is not among"):
        report.convergence_check(study, 32)


def test_p_values_in_tables_and_prose():
    assert report.p_text(0.0341) == "0.034" and report.p_text(2e-5) == "< 0.001"
    assert report.p_phrase(0.0341) == "p = 0.034" and report.p_phrase(0) == "p < 0.001"


def test_equivalence_table_rows_read_as_the_tests():
    from lib.diabetes import stats
    a = np.linspace(0.7, 0.8, 10)
    tests = {"accuracy": stats.equivalence_test(a, a - 0.01, 0.25, 0.05),
             "roc_auc": stats.equivalence_test(a, a - 0.2, 0.25, 0.05)}
    table = report.equivalence_table(tests)
    assert list(table.index) == ["accuracy", "ROC AUC"]
    assert list(table["verdict"]) == ["equivalent", "not shown to be equivalent"]
    assert table.loc["accuracy", "90 % CI"] == "[0.010, 0.010]"
    assert table.loc["accuracy", "p (TOST)"] == "< 0.001"


def test_shared_credit_names_the_partner_and_whether_they_trade_places():
    first = pd.Series([0.5, 0.3, 0.2], index=NAMES, name="ST")
    second = pd.Series([0.4, 0.2, 0.3], index=NAMES, name="Sh")
    corr = pd.DataFrame([[1, 0.2, 0.1], [0.2, 1, 0.6], [0.1, 0.6, 1]], index=NAMES,
                        columns=NAMES, dtype=float)
    credit = report.shared_credit(report.rank_changes(first, second), corr)
    assert list(credit.index) == ["c"]
    assert credit.loc["c"].tolist() == ["b", 0.6, -1]
