"""Nested feature reduction, fold input models and the fixed-sequence non-inferiority
procedure: known answers on data whose signal sits in known inputs."""
import numpy as np
import pandas as pd
import pytest
import torch

from lib.diabetes import cv, ensemble, folds, reduction, table

FAST = ensemble.MLPConfig(hidden=(8,), lr=0.05, max_epochs=60, patience=15)
FEATURES = list(table.FEATURES)
SIGNAL = ["Glucose", "BMI"]


def two_signal_frame(n=600, seed=0):
    """A Pima-shaped table whose label is a sharp function of Glucose + BMI; the other six
    inputs are noise, some with missing values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES)))
    logit = 4 * (values[:, FEATURES.index("Glucose")] + values[:, FEATURES.index("BMI")])
    frame = pd.DataFrame(values * 10 + 50, columns=FEATURES)
    frame[table.TARGET] = (logit + rng.logistic(size=n) > 0).astype(int)
    for column in ("SkinThickness", "Insulin"):
        frame.loc[rng.random(n) < 0.2, column] = np.nan
    return frame


@pytest.fixture(scope="module")
def study():
    X, y = table.table_tensors(two_signal_frame(), device="cpu")
    splits = cv.cv_splits(y, n_repeats=1, n_folds=5, seed=0)
    trained = cv.cross_validate(X, y, splits, FAST, seed=0, show_progress=False)
    problems = folds.fold_problems(trained.model, X, splits.train)
    result = folds.fold_indices(trained.model, problems, 256, calc_second_order=False,
                                num_resamples=10)
    rankings = folds.rankings(result)
    nested = reduction.nested_reduction(X, y, splits, rankings, FAST, seed=0, cached=False)
    return X, y, splits, trained, rankings, nested


def test_each_fold_ranks_the_signal_inputs_first(study):
    *_, rankings, _ = study
    assert len(rankings) == 5
    assert all(set(order[:2]) == set(SIGNAL) for order in rankings)


def test_two_signal_inputs_reduce_to_two(study):
    *_, nested = study
    sequence = reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.08})
    assert list(sequence.table.index) == [7, 6, 5, 4, 3, 2, 1]
    assert sequence.smallest_k == 2 and sequence.stopped_at == 1
    assert list(sequence.table.loc[7:2, "decision"]) == ["non-inferior"] * 6
    assert sequence.table.loc[1, "loss (accuracy)"] > 0.08  # one signal input is not enough
    assert sequence.table.loc[2, "folds with it"] == 5
    assert set(sequence.table.loc[2, "features"].split(", ")) == set(SIGNAL)
    assert "k = 2 or more inputs are non-inferior" in sequence.conclusion()


def test_a_margin_the_data_violate_stops_the_sequence_at_once(study):
    *_, nested = study
    sequence = reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.001,
                                                                   "roc_auc": 0.001})
    assert sequence.stopped_at == 7 and sequence.smallest_k == 8
    assert list(sequence.table.loc[6:, "decision"]) == ["not tested"] * 6
    assert "do not show that any input can be dropped" in sequence.conclusion()


def test_nested_networks_are_those_of_their_folds(study):
    X, y, splits, trained, rankings, nested = study
    fold_scores = nested.folds
    full = fold_scores[fold_scores["k"] == 8].set_index("fold")["roc_auc"]
    # all inputs, same fold, same initial weights: the networks of the cross-validation
    np.testing.assert_allclose(full.to_numpy(), trained.metrics["roc_auc"].to_numpy())
    kept = fold_scores[(fold_scores["k"] == 3) & (fold_scores["fold"] == 2)]["features"]
    assert set(kept.item().split(", ")) == set(rankings[2][:3])
    assert nested.num_networks == len(fold_scores)  # 5 folds x 8 distinct sets


def test_the_sequence_stops_at_the_first_failure_even_if_later_k_pass():
    """k = 5 loses 20 points; k = 4 loses nothing, yet it is not tested."""
    rng = np.random.default_rng(0)
    base = 0.8 + 0.02 * rng.standard_normal(10)
    rows = [{"ordering": "o", "k": k, "fold": f, "features": str(k),
             "accuracy": base[f] - (0.2 if k == 5 else 0.001 * rng.random()),
             "balanced_accuracy": 0.7, "roc_auc": 0.9}
            for k in (8, 7, 6, 5, 4) for f in range(10)]
    study = reduction.Reduction(pd.DataFrame(rows), {"o": []}, 0.25, 8, 50)
    sequence = reduction.fixed_sequence(study, "o", {"accuracy": 0.05})
    assert list(sequence.table["decision"]) == ["non-inferior", "non-inferior",
                                                "not shown to be non-inferior", "not tested"]
    assert sequence.smallest_k == 6 and sequence.stopped_at == 5
    every = reduction.fixed_sequence(study, "o", {"accuracy": 0.05}, ks=[7, 6])
    assert every.stopped_at is None and "at every k" in every.conclusion()


def test_fixed_sequence_refuses_bad_margins_and_levels(study):
    *_, nested = study
    for margins in ({"accuracy": 0}, {"accuracy": 1.0}, {"roc_auc": -0.1}):
        with pytest.raises(ValueError, match=r"margin of .* must be a number in \(0, 1\)"):
            reduction.fixed_sequence(nested, reduction.NESTED, margins)
    with pytest.raises(ValueError, match="metric must be one of"):
        reduction.fixed_sequence(nested, reduction.NESTED, {"precision": 0.05})
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.05}, alpha=1.0)
    with pytest.raises(ValueError, match="unknown ordering"):
        reduction.fixed_sequence(nested, "Sobol ST", {"accuracy": 0.05})
    with pytest.raises(ValueError, match="at least one margin"):
        reduction.fixed_sequence(nested, reduction.NESTED, {})


def test_nested_reduction_needs_one_full_ranking_per_fold(study):
    X, y, splits, *_ = study
    with pytest.raises(ValueError, match="one ranking per fold"):
        reduction.nested_reduction(X, y, splits, [FEATURES] * 4, FAST, cached=False)
    with pytest.raises(ValueError, match="every feature exactly once"):
        reduction.nested_reduction(X, y, splits, [FEATURES[:7]] * 5, FAST, cached=False)


def test_fold_problems_are_fitted_on_the_imputed_training_rows(study):
    X, y, splits, trained, *_ = study
    problems = folds.fold_problems(trained.model, X, splits.train)
    insulin = FEATURES.index("Insulin")
    rows = splits.train[1]
    values = problems[1]["bounds"][insulin]
    assert values.size == int(rows.sum())  # every training row, the imputed ones included
    median = float(trained.model.median[1, 0, insulin])
    assert (values == np.float32(median)).sum() >= int(torch.isnan(X[rows, insulin]).sum())
    observed = folds.fold_problems(trained.model, X, splits.train, impute=False)
    assert observed[1]["bounds"][insulin].size == int((~torch.isnan(X[rows, insulin])).sum())
    uniform = folds.fold_problems(trained.model, X, splits.train, "uniform")
    assert uniform[1]["bounds"][insulin] == [values.min(), values.max()]


def test_input_models_need_more_rows_than_inputs(study):
    X, y, splits, trained, *_ = study
    few = torch.zeros_like(splits.train)
    few[:, :7] = True
    with pytest.raises(ValueError, match="7 training rows, fewer than its 8 inputs"):
        folds.fold_problems(trained.model, X, few)
    with pytest.raises(ValueError, match="kind must be one of"):
        folds.fold_problems(trained.model, X, splits.train, "normal")
    with pytest.raises(ValueError, match="train must be"):
        folds.fold_problems(trained.model, X, splits.train[:2])


def test_each_network_is_evaluated_on_its_own_design(study):
    X, y, splits, trained, *_ = study
    problems = folds.fold_problems(trained.model, X, splits.train)
    U = np.random.default_rng(0).random((64, 8))
    Y = folds.evaluate_designs(trained.model, U, problems)
    from lib.kernels import saltelli
    for m in (0, 3):
        alone = trained.model.select([m])(torch.as_tensor(
            saltelli.scale_to_inputs(U, problems[m]), dtype=torch.float32))
        torch.testing.assert_close(Y[:, m], alone[:, 0])


def test_sequence_verdicts_and_tables_follow_the_decisions(study):
    from lib.diabetes import report
    *_, nested = study
    sequence = reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.08,
                                                                   "roc_auc": 0.08})
    assert sequence.verdict == f"non-inferior down to k = {sequence.smallest_k}"
    shown = report.sequence_table(sequence)
    assert list(shown[("", "decision")]) == list(sequence.table["decision"])
    assert ("ROC AUC", "bound") in shown.columns
    se = sequence.table["se (accuracy)"]
    assert (sequence.table["detectable (accuracy)"] > se).all()
    assert (sequence.table["floor (accuracy)"] < sequence.table["detectable (accuracy)"]).all()
    both = report.sequence_comparison({"a": sequence, "b": sequence})
    assert (both[("loss of accuracy", "a")] == both[("loss of accuracy", "b")]).all()
    refused = reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.001})
    assert refused.verdict == "no k shown non-inferior"


def test_shapley_effects_of_the_fold_networks_sit_on_the_signal(study):
    X, y, splits, trained, *_ = study
    train = splits.train & (torch.arange(len(y)) < 250)  # fewer rows: a faster test
    result = folds.fold_shapley(trained.model, X, train, networks=[0, 3],
                                num_resamples=50, seed=0)
    assert result.effects.shape == (8, 2) and list(result.rows) == \
        [int(train[0].sum()), int(train[3].sum())]
    np.testing.assert_allclose(result.effects.sum(0), 1.0, atol=1e-9)
    signal = [FEATURES.index(name) for name in SIGNAL]
    assert (result.effects[signal].sum(0) > 0.8).all()  # the noise inputs share little
    summary = folds.effects_over_models(result)
    assert summary.loc["Glucose", ("Sh", "mean")] == pytest.approx(
        result.effects[FEATURES.index("Glucose")].mean())


def test_index_convergence_has_every_size_and_input(study):
    X, y, splits, trained, *_ = study
    problems = folds.fold_problems(trained.model, X, splits.train)
    table_ = folds.index_convergence(trained.model.select([0]), problems[0], [5, 6],
                                     num_resamples=10)
    assert sorted(set(table_["N"])) == [32, 64] and len(table_) == 2 * 2 * 8
    top = table_[(table_["N"] == 64) & (table_["index"] == "ST")]
    assert set(top.nlargest(2, "value")["input"]) == set(SIGNAL)


def test_step_words_read_one_row_of_the_sequence(study):
    from lib.diabetes import report
    *_, nested = study
    sequence = reduction.fixed_sequence(nested, reduction.NESTED, {"accuracy": 0.08})
    words = report.step_words(sequence, 2)
    row = sequence.table.loc[2]
    assert words.startswith(f"k = 2 ({row['features']}; accuracy: loss ")
    assert f"upper bound {row['bound (accuracy)']:.3f}" in words
