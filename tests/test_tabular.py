"""The tiny tabular network: splits, fold-wise preprocessing, batched training, metrics, tests."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import scipy.stats

from lib.diabetes import cv, ensemble, importance, reduction, stats, table

FAST = ensemble.MLPConfig(hidden=(8,), lr=0.05, max_epochs=40, patience=10)


def synthetic_frame(n=240, seed=0, missing=0.1):
    """A Pima-shaped table whose label depends on Glucose and BMI only."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(table.FEATURES))) * 10 + 50
    logit = (values[:, 1] - 50) / 4 + (values[:, 5] - 50) / 8
    frame = pd.DataFrame(values, columns=list(table.FEATURES))
    frame[table.TARGET] = (logit + rng.logistic(size=n) > 0).astype(int)
    holes = rng.random((n, 3)) < missing  # missing values in three columns, as in Pima
    for column, hole in zip(["SkinThickness", "Insulin", "BloodPressure"], holes.T):
        frame.loc[hole, column] = np.nan
    return frame


@pytest.fixture(scope="module")
def data():
    frame = synthetic_frame()
    X, y = table.table_tensors(frame, device="cpu")
    return frame, X, y


@pytest.fixture(scope="module")
def trained(data):
    _, X, y = data
    splits = cv.cv_splits(y, n_repeats=2, n_folds=3, seed=1)
    return splits, cv.cross_validate(X, y, splits, FAST, seed=3, show_progress=False)


# ------------------------------------------------------------------------------ the table

def test_table_tensors_keep_missing_values_as_nan(data):
    frame, X, y = data
    assert X.shape == (len(frame), 8) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isnan(X).sum() == frame[list(table.FEATURES)].isna().to_numpy().sum() > 0
    assert torch.equal(y, torch.tensor(frame[table.TARGET].to_numpy()))


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(Extra=1.0), r"unexpected: \['Extra'\]"),
    (lambda f: f.drop(columns="BMI"), r"missing: \['BMI'\]"),
    (lambda f: f.assign(Insulin=np.nan), r"\['Insulin'\] have no observed value"),
    (lambda f: f.assign(Outcome=f["Outcome"] * 2), "labels 0 and 1 only"),
    (lambda f: f.assign(Outcome=0), "one class only"),
    (lambda f: f.assign(Age=np.inf), "hold inf"),
])
def test_bad_tables_are_refused_with_the_reason(data, edit, message):
    with pytest.raises(ValueError, match=message):
        table.table_tensors(edit(data[0].copy()))


def test_non_numeric_or_non_frame_input_is_a_type_error(data):
    with pytest.raises(TypeError, match="not numeric"):
        table.table_tensors(data[0].assign(Age="old"))
    with pytest.raises(TypeError, match="DataFrame"):
        table.table_tensors(data[0].to_numpy())


# ------------------------------------------------------------------------------ the splits

def test_splits_partition_rows_and_keep_the_class_balance(data):
    _, _, y = data
    splits = cv.cv_splits(y, n_repeats=3, n_folds=4, val_fraction=0.25, seed=0)
    assert splits.num_splits == 12 and splits.fold_names()[5] == "r1f1"
    parts = torch.stack([splits.fit, splits.val, splits.test]).int()
    assert (parts.sum(0) == 1).all()  # every row in exactly one part of every fold
    per_repeat = splits.test.reshape(3, 4, -1).int().sum(1)
    assert (per_repeat == 1).all()  # each repeat's test sets cover every row once
    share = y.double().mean()
    for mask in (splits.test, splits.val):
        shares = (mask & (y == 1)).sum(1) / mask.sum(1)
        assert ((shares - share).abs() < 2 / mask.sum(1)).all()
    assert math.isclose(splits.test_train_ratio(), 1 / 3, rel_tol=0.02)


def test_splits_are_seeded(data):
    y = data[2]
    a, b, c = (cv.cv_splits(y, 2, 3, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.test, b.test) and torch.equal(a.val, b.val)
    assert not torch.equal(a.test, c.test)


def test_split_arguments_are_checked(data):
    y = data[2]
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        cv.cv_splits(y, n_folds=1)
    with pytest.raises(ValueError, match="val_fraction"):
        cv.cv_splits(y, val_fraction=1.0)
    with pytest.raises(ValueError, match="smallest class"):
        cv.cv_splits(torch.tensor([0] * 10 + [1] * 2), n_folds=3)


# ------------------------------------------------------------------------- preprocessing

def test_preprocessing_equals_scikit_learn_fitted_on_training_rows(data):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    _, X, y = data
    splits = cv.cv_splits(y, 1, 3, seed=0)
    prep = ensemble.fit_preprocessing(X.double(), splits.train)
    values = X.double().numpy()
    for f, rows in enumerate(splits.train.numpy()):
        imputer = SimpleImputer(strategy="median").fit(values[rows])
        scaler = StandardScaler().fit(imputer.transform(values[rows]))
        np.testing.assert_allclose(prep.median[f], imputer.statistics_, rtol=1e-12)
        np.testing.assert_allclose(prep.mean[f], scaler.mean_, rtol=1e-12)
        np.testing.assert_allclose(prep.scale[f], scaler.scale_, rtol=1e-12)


def test_preprocessing_never_sees_test_rows(data):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 3, seed=0)
    changed = X.clone()
    changed[splits.test[0]] = 1e6  # only fold 0's test rows
    a, b = ensemble.fit_preprocessing(X, splits.train), ensemble.fit_preprocessing(changed, splits.train)
    assert torch.equal(a.median[0], b.median[0]) and torch.equal(a.scale[0], b.scale[0])
    assert not torch.equal(a.mean[1], b.mean[1])  # other folds train on those rows


def test_feature_missing_in_a_folds_training_rows_is_refused(data):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 3, seed=0)
    holed = X.clone()
    holed[splits.train[0], 4] = math.nan
    with pytest.raises(ValueError, match="'Insulin' has no observed value in the training rows "
                                         "of fold 0"):
        ensemble.fit_preprocessing(holed, splits.train, table.FEATURES)


# ------------------------------------------------------------------------------ metrics

def test_metrics_equal_scikit_learn_with_ties_and_masks():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=(3, 60)) + y, 1)  # rounding makes ties
    mask = rng.random((3, 60)) < 0.7
    got = stats.binary_metrics(torch.tensor(scores), torch.tensor(y), torch.tensor(mask))
    for m in range(3):
        s, t = scores[m, mask[m]], y[mask[m]]
        assert got["accuracy"][m] == pytest.approx(accuracy_score(t, s > 0))
        assert got["balanced_accuracy"][m] == pytest.approx(balanced_accuracy_score(t, s > 0))
        assert got["roc_auc"][m] == pytest.approx(roc_auc_score(t, s))


def test_metrics_refuse_one_class_rows():
    with pytest.raises(ValueError, match="both classes"):
        stats.binary_metrics(torch.zeros(1, 4), torch.tensor([1, 1, 0, 0]),
                         torch.tensor([[True, True, False, False]]))


def test_corrected_ttest_follows_nadeau_bengio():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.02, 25), rng.normal(0.78, 0.02, 25)
    t, p = stats.corrected_ttest(a, b, ratio=0.25, alternative="greater")
    d = a - b
    expected = d.mean() / math.sqrt((1 / 25 + 0.25) * d.var(ddof=1))
    assert t == pytest.approx(expected) and p == pytest.approx(scipy.stats.t(24).sf(expected))
    naive = scipy.stats.ttest_rel(a, b, alternative="greater")
    assert p > naive.pvalue  # the correction is more cautious
    assert stats.corrected_ttest(a, a, 0.25) == (0.0, 1.0)
    _, two = stats.corrected_ttest(a, b, 0.25, "two-sided")
    assert two == pytest.approx(2 * min(p, 1 - p))
    with pytest.raises(ValueError, match="alternative"):
        stats.corrected_ttest(a, b, 0.25, "bigger")


def test_corrected_interval_is_wider_than_the_naive_one():
    values = np.array([0.7, 0.75, 0.8, 0.72, 0.78])
    mean, low, high = stats.corrected_interval(values, ratio=0.25)
    naive = scipy.stats.t.interval(0.95, 4, loc=values.mean(), scale=scipy.stats.sem(values))
    assert mean == pytest.approx(values.mean()) and low < naive[0] and high > naive[1]
    assert (high - mean) == pytest.approx((naive[1] - mean) * math.sqrt(1 + 5 * 0.25))


# ----------------------------------------------------------------------------- training

def test_network_learns_the_signal(data, trained):
    _, X, y = data
    splits, result = trained
    reference = cv.cross_validate_logistic(X, y, splits)  # near-optimal on this linear signal
    assert result.metrics["roc_auc"].mean() > max(0.8, reference["roc_auc"].mean() - 0.05)
    assert list(result.metrics["fold"]) == list(range(6))


def test_probabilities_are_rows_by_models(data, trained):
    _, X, _ = data
    model = trained[1].model
    p = model(X[:7])
    assert p.shape == (7, 6) and torch.allclose(p, torch.sigmoid(model.logits(X[:7])).T)


def test_a_model_trained_in_a_batch_equals_it_trained_alone(data, trained):
    _, X, y = data
    splits, _ = trained
    masks = torch.tensor([[True] * 8, [True, True] + [False] * 6])
    together = cv.cross_validate(X, y, splits, FAST, input_masks=masks, seed=3,
                                show_progress=False)
    alone = cv.cross_validate(X, y, splits, FAST, input_masks=masks[1:], seed=3,
                             show_progress=False, chunk_models=2)
    for a, b in zip(together.model.select(slice(6, 12)).parameters(),
                    alone.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(together.log.best_epoch[6:], alone.log.best_epoch)


def test_manual_adam_matches_torch_adam():
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, 2, generator=generator)
    grads = [torch.randn(3, 4, 2, generator=generator) for _ in range(20)]
    ours = ensemble._Adam([start.clone()], lr=0.01, weight_decay=1e-3)
    reference = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([reference], lr=0.01, weight_decay=1e-3)
    for step, grad in enumerate(grads):
        ours.step([grad])
        reference.grad = grad.clone()
        optimizer.step()
        if step == 9:  # dropping a model keeps the others' state intact
            ours.keep(torch.tensor([True, False, True]))
            reference = torch.nn.Parameter(reference.detach()[[0, 2]])
            state = optimizer.state[optimizer.param_groups[0]["params"][0]]
            optimizer = torch.optim.Adam([reference], lr=0.01, weight_decay=1e-3)
            optimizer.state[reference] = {"step": state["step"],
                                          "exp_avg": state["exp_avg"][[0, 2]],
                                          "exp_avg_sq": state["exp_avg_sq"][[0, 2]]}
            grads[10:] = [g[[0, 2]] for g in grads[10:]]
    torch.testing.assert_close(ours.params[0], reference.detach(), rtol=1e-6, atol=1e-7)


def test_early_stopping_keeps_the_best_epoch(data, trained):
    _, X, y = data
    splits, result = trained
    history = result.log.val_loss
    best = torch.nan_to_num(history, nan=math.inf).min(0)
    torch.testing.assert_close(result.log.best_val_loss, best.values)
    assert torch.equal(result.log.best_epoch, best.indices)
    # The kept weights are those of the best epoch: their validation loss is the best one.
    with torch.no_grad():
        logits = result.model.logits(X)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y.float().expand_as(logits), reduction="none")
    val = splits.val.float()
    torch.testing.assert_close((losses * val).sum(1) / val.sum(1), result.log.best_val_loss,
                               rtol=1e-4, atol=1e-6)
    # A model stops `patience` epochs after its best one (or at max_epochs).
    stopped = (~torch.isnan(history)).sum(0) - 1
    assert torch.equal(stopped, torch.clamp(result.log.best_epoch + FAST.patience,
                                            max=FAST.max_epochs - 1))


def test_masked_features_do_not_move_the_prediction(data):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 2, seed=0)
    masks = torch.tensor([[True] * 4 + [False] * 4])
    result = cv.cross_validate(X, y, splits, FAST, input_masks=masks, seed=0,
                              show_progress=False)
    moved = X.clone()
    moved[:, 4:] = torch.randn(X.shape[0], 4) * 100
    assert torch.equal(result.model(X), result.model(moved))


def test_train_refuses_bad_masks(data, trained):
    _, X, y = data
    splits, result = trained
    with pytest.raises(ValueError, match=r"fit and val must be \(1, 240\) masks"):
        ensemble.train(result.model.select([0]), X, y, splits.fit, splits.val, FAST)
    with pytest.raises(ValueError, match="must not overlap"):
        ensemble.train(result.model.select([0]), X, y, splits.fit[:1], splits.fit[:1], FAST)
    with pytest.raises(ValueError, match="keep at least one feature"):
        cv.cross_validate(X, y, splits, FAST, input_masks=torch.zeros(1, 8, dtype=torch.bool))


def test_config_is_checked():
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid: relu, tanh"):
        ensemble.MLPConfig(activation="gelu")
    with pytest.raises(ValueError, match="hidden"):
        ensemble.MLPConfig(hidden=(8, 0))


def test_logistic_reference_matches_its_own_pipeline(data, trained):
    _, X, y = data
    splits, _ = trained
    scores = cv.cross_validate_logistic(X, y, splits)
    assert len(scores) == 6 and scores["roc_auc"].between(0.8, 1).all()


def test_summary_reports_mean_and_corrected_interval(trained):
    splits, result = trained
    summary = stats.summarize(result.metrics, splits.test_train_ratio())
    mean, low, high = stats.corrected_interval(result.metrics["accuracy"], splits.test_train_ratio())
    assert summary[("accuracy", "mean")].iloc[0] == pytest.approx(mean)
    assert summary[("accuracy", "low")].iloc[0] == pytest.approx(low)
    cell = stats.interval_table(summary).iloc[0]["accuracy"]
    assert cell == f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def test_cached_cross_validation_reuses_and_rekeys(data, trained, tmp_path, monkeypatch):
    from lib.book import paths

    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    _, X, y = data
    splits, _ = trained
    first = cv.cached_cross_validate(X, y, splits, FAST, seed=3)
    again = cv.cached_cross_validate(X, y, splits, FAST, seed=3)
    pd.testing.assert_frame_equal(first.metrics, again.metrics)
    cv.cached_cross_validate(X, y, splits, FAST, seed=4)
    assert len(list((tmp_path / "tabular").glob("*.pt"))) == 2


# --------------------------------------------------------------------------- importance

def test_permutations_shuffle_only_the_masked_rows():
    rows = torch.tensor([[True, False, True, True, False, True],
                         [False, True, True, False, False, False]])
    perm = importance._permutations_within(rows, torch.Generator().manual_seed(0))
    for m in range(2):
        assert sorted(perm[m].tolist()) == list(range(6))
        assert rows[m, perm[m]].equal(rows[m])  # masked rows draw from masked rows
        fixed = ~rows[m]
        assert torch.equal(perm[m, fixed], torch.arange(6)[fixed])


def test_permutation_importance_finds_the_informative_features(data, trained):
    _, X, y = data
    splits, result = trained
    drop = importance.permutation_importance(result.model, X, y, splits.test, n_repeats=3, seed=0)
    assert drop.shape == (6, 8)
    mean = drop.mean(0)
    assert set(mean.argsort(descending=True)[:2].tolist()) == {1, 5}  # Glucose and BMI
    assert mean[1] > 0.1


def test_gradient_x_input_equals_finite_differences(data, trained):
    _, X, y = data
    splits, result = trained
    model = result.model.select([0]).double()
    rows = splits.test[:1]
    got = importance.gradient_x_input(model, X.double(), rows)
    Z = model.standardize(X.double())
    eps = 1e-6
    for j in (1, 5):
        step = torch.zeros_like(Z)
        step[..., j] = eps
        p = lambda z: torch.sigmoid(model.logits_from_inputs(z))  # noqa: E731
        grad = (p(Z + step) - p(Z - step)) / (2 * eps)
        expected = (grad * Z[..., j]).abs()[rows].mean()
        assert got[0, j].item() == pytest.approx(expected.item(), rel=1e-4)


# ------------------------------------------------------------------------- input models

def test_input_models_span_the_observed_values(data):
    from lib.kernels import sobol

    frame = data[0]
    problems = importance.input_models(frame)
    uniform, empirical = problems["uniform"], problems["empirical"]
    insulin = frame["Insulin"].dropna()
    assert uniform["bounds"][4] == [insulin.min(), insulin.max()]
    assert len(empirical["bounds"][4]) == len(insulin)
    X = sobol.sample(empirical, 8, seed=0)
    assert np.isin(X[:, 4], insulin.to_numpy()).all()
    with pytest.raises(ValueError, match="no observed value"):
        importance.input_models(frame.assign(BMI=np.nan))
    with pytest.raises(ValueError, match="needs at least as many rows; the table has 5"):
        importance.input_models(frame.head(5))


def test_indices_over_models_summarise_the_model_axis(data, trained):
    from lib.kernels import sobol

    frame, _, _ = data
    problem = importance.input_models(frame)["uniform"]
    X = sobol.sample(problem, 64, seed=0)
    model = trained[1].model
    result = sobol.analyze(problem, sobol.evaluate(model, X, device="cpu"), num_resamples=10,
                           seed=0)
    table = importance.indices_over_models(result)
    st = result["ST"].cpu().numpy()
    np.testing.assert_allclose(table[("ST", "mean")], st.mean(1))
    assert (table[("ST", "low")] <= table[("ST", "mean")]).all()
    assert table[("ST", "mean")].idxmax() == "Glucose"


# --------------------------------------------------------------------- feature reduction

def test_feature_reduction_scores_every_ordering_and_k(data):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 2, seed=0)
    ranking = ["Glucose", "BMI", "Age", "Pregnancies", "Insulin", "SkinThickness",
               "BloodPressure", "DiabetesPedigreeFunction"]
    study = reduction.feature_reduction(X, y, splits, ranking, FAST, ks=[8, 2, 1], n_random=2,
                                        seed=0, cached=False)
    folds = study.folds
    assert len(folds) == 4 * 3 * 2  # orderings x ks x folds
    assert set(folds["ordering"]) == {"Sobol ST", "reverse", "random 1", "random 2"}
    top2 = folds[(folds["ordering"] == "Sobol ST") & (folds["k"] == 2)]
    assert (top2["features"] == "Glucose, BMI").all()
    # Every ordering's k = 8 network is the same network (trained once).
    full = folds[folds["k"] == 8].groupby("fold")["roc_auc"].nunique()
    assert (full == 1).all()
    sequence = reduction.fixed_sequence(study, "Sobol ST", {"accuracy": 0.05},
                                        ks=[2, 1])
    assert list(sequence.table.index) == [2, 1]
    assert sequence.table.loc[2, "features"] == "Glucose, BMI"
    assert sequence.table.loc[2, "folds with it"] == 2
    summary = reduction.reduction_summary(study)
    assert set(summary.index.get_level_values("ordering")) == {"Sobol ST", "reverse",
                                                               "random (mean)"}
    assert 1 <= sequence.smallest_k <= 8


@pytest.mark.parametrize("ks, message", [([9], "from 1 to 8"), ([0], "from 1 to 8"),
                                          ([], "from 1 to 8"), ([2.5], "from 1 to 8")])
def test_k_out_of_range_is_refused(data, ks, message):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 2, seed=0)
    with pytest.raises(ValueError, match=message):
        reduction.feature_reduction(X, y, splits, list(table.FEATURES), FAST, ks=ks, cached=False)


def test_ranking_must_name_every_feature_once(data):
    _, X, y = data
    splits = cv.cv_splits(y, 1, 2, seed=0)
    with pytest.raises(ValueError, match="every feature exactly once"):
        reduction.feature_reduction(X, y, splits, list(table.FEATURES)[:7], FAST, cached=False)
