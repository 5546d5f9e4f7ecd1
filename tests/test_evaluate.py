"""Classification metrics and their bootstrap: equal to scikit-learn, replicate by replicate."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lib.kernels import bootstrap
from lib.ultrasound import evaluate


def random_case(n=120, k=3, seed=0, ties=False):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(k, (n,), generator=generator)
    logits = torch.randn(n, k, generator=generator) + 1.5 * torch.nn.functional.one_hot(labels, k)
    scores = logits.softmax(dim=1)
    if ties:  # few distinct values, so many tied scores
        scores = (scores * 4).round() / 4
    return labels, scores


def sklearn_metrics(labels, scores):
    y, p = labels.numpy(), scores.numpy()
    pred = p.argmax(axis=1)
    k = p.shape[1]
    return {"accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, average="macro", labels=list(range(k)),
                                     zero_division=0),
            # one-vs-rest macro AUC, spelled out so it also takes tied, unnormalised scores
            "auc_ovr": np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(k)])}


def test_spelled_out_auc_is_sklearns_multiclass_ovr():
    labels, scores = random_case(k=4, seed=5)
    assert sklearn_metrics(labels, scores)["auc_ovr"] == pytest.approx(
        skm.roc_auc_score(labels.numpy(), scores.numpy(), multi_class="ovr", average="macro"),
        abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_point_metrics_equal_sklearn(k, ties):
    labels, scores = random_case(k=k, seed=k, ties=ties)
    expected = sklearn_metrics(labels, scores)
    ours = evaluate.metrics(labels, scores)
    for name in evaluate.METRICS:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name


def test_confusion_matrix_equals_sklearn():
    labels, scores = random_case(k=4, seed=3)
    preds = scores.argmax(dim=1)
    ours = evaluate.confusion_matrix(labels, preds, 4).numpy()
    assert np.array_equal(ours, skm.confusion_matrix(labels.numpy(), preds.numpy(),
                                                     labels=[0, 1, 2, 3]))


def test_each_bootstrap_replicate_equals_sklearn_on_that_resample():
    labels, scores = random_case(n=60, seed=1, ties=True)
    counts = bootstrap.bootstrap_counts(60, n_boot=5, seed=7)
    replicates = evaluate.replicate_metrics(labels, scores, counts)
    for row in range(5):
        index = torch.repeat_interleave(torch.arange(60), counts[row].long())
        expected = sklearn_metrics(labels[index], scores[index])
        for name in evaluate.METRICS:
            assert replicates[name][row].item() == pytest.approx(expected[name], abs=1e-12)


def test_bootstrap_counts_are_resamples_of_the_right_size():
    counts = bootstrap.bootstrap_counts(50, n_boot=200, seed=0)
    assert counts.shape == (200, 50)
    assert torch.all(counts.sum(dim=1) == 50)
    assert torch.equal(counts, bootstrap.bootstrap_counts(50, n_boot=200, seed=0))
    assert not torch.equal(counts, bootstrap.bootstrap_counts(50, n_boot=200, seed=1))
    # each case is drawn once per resample on average
    assert counts.mean().item() == pytest.approx(1.0)


def test_bootstrap_table_is_reproducible_and_brackets_the_estimate():
    labels, scores = random_case(n=200, seed=2)
    table = evaluate.bootstrap_metrics(labels, scores, n_boot=400, seed=0, chunk_size=64)
    again = evaluate.bootstrap_metrics(labels, scores, n_boot=400, seed=0, chunk_size=400)
    assert list(table.index) == list(evaluate.METRICS)
    assert np.allclose(table.values, again.values, rtol=0, atol=1e-12)  # chunking is invisible
    assert (table["ci_low"] <= table["estimate"]).all()
    assert (table["estimate"] <= table["ci_high"]).all()
    assert (table["ci_high"] - table["ci_low"] > 0).all()


def test_interval_shrinks_with_more_cases():
    small = evaluate.bootstrap_metrics(*random_case(n=50, seed=4), n_boot=500)
    large = evaluate.bootstrap_metrics(*random_case(n=800, seed=4), n_boot=500)
    width = lambda table: table["ci_high"] - table["ci_low"]  # noqa: E731
    assert (width(large) < width(small)).all()


def test_auc_is_nan_when_a_class_is_missing_from_a_replicate():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.eye(3)[labels].double()
    counts = torch.tensor([[1.0, 1, 1, 1, 1, 1], [2.0, 2, 1, 1, 0, 0]])
    result = evaluate.replicate_metrics(labels, scores, counts)
    assert result["auc_ovr"][0].item() == 1.0
    assert torch.isnan(result["auc_ovr"][1])
    # balanced accuracy averages over the classes present, as scikit-learn does
    assert result["balanced_accuracy"][1].item() == 1.0


@pytest.mark.parametrize("labels, scores, message", [
    (torch.tensor([0, 1]), torch.rand(3, 3), "one label per row"),
    (torch.tensor([0, 3]), torch.rand(2, 3), r"integers in \[0, 2\]"),
    (torch.tensor([0.0, 1.0]), torch.rand(2, 3), "integers"),
    (torch.tensor([0, 1]), torch.rand(2), "N x K"),
    (torch.tensor([0, 1]), torch.tensor([[0.5, float("nan")], [0.5, 0.5]]), "NaN"),
])
def test_bad_input_is_rejected(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        evaluate.metrics(labels, scores)


def test_bad_bootstrap_settings_are_rejected():
    labels, scores = random_case(n=20)
    with pytest.raises(ValueError, match="n_boot"):
        evaluate.bootstrap_metrics(labels, scores, n_boot=1)
    with pytest.raises(ValueError, match="level"):
        evaluate.bootstrap_metrics(labels, scores, level=95)


# --- per-class recall, the majority baseline, summaries over seeds ------------------------

def test_class_recall_has_known_values_and_brackets_them():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2] * 6)
    preds = torch.tensor([0, 1, 1, 1, 0, 2, 2, 2, 2, 0] * 6)
    scores = torch.nn.functional.one_hot(preds, 3).double()
    table = evaluate.class_recall(labels, scores, classes=["a", "b", "c"], n_boot=300)
    assert list(table.index) == ["a", "b", "c"]
    assert table["support"].tolist() == [12, 18, 30]
    assert np.allclose(table["estimate"], [1 / 2, 2 / 3, 4 / 5], rtol=0, atol=1e-12)
    assert np.allclose(table["estimate"], skm.recall_score(labels, preds, average=None))
    assert (table["ci_low"] <= table["estimate"]).all()
    assert (table["estimate"] <= table["ci_high"]).all()
    assert (table["ci_high"] > table["ci_low"]).all()


def test_replicate_recall_equals_sklearn_on_each_resample():
    labels, scores = random_case(n=60, seed=3)
    counts = bootstrap.bootstrap_counts(60, n_boot=4, seed=2)
    recall = evaluate.replicate_recall(labels, scores, counts)
    for row in range(4):
        index = torch.repeat_interleave(torch.arange(60), counts[row].long())
        expected = skm.recall_score(labels[index], scores[index].argmax(dim=1), average=None,
                                    labels=[0, 1, 2], zero_division=0)
        assert np.allclose(recall[row].numpy(), expected, rtol=0, atol=1e-12)


def test_majority_class_breaks_ties_towards_the_smallest_index():
    assert evaluate.majority_class(torch.tensor([2, 2, 1, 1, 0]), 3) == 1
    assert evaluate.majority_class(torch.tensor([2, 2, 2, 0]), 4) == 2
    with pytest.raises(ValueError, match="num_classes"):
        evaluate.majority_class(torch.tensor([0, 1]), 1)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\]"):
        evaluate.majority_class(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="non-empty vector"):
        evaluate.majority_class(torch.tensor([0.0, 1.0]), 3)


def test_majority_baseline_of_the_busi_test_split_proportions():
    """Always 'benign' (the training majority) on 20 normal, 64 benign, 31 malignant images."""
    train_labels = torch.tensor([0] * 91 + [1] * 300 + [2] * 143)
    labels = torch.tensor([0] * 20 + [1] * 64 + [2] * 31)
    baseline = evaluate.majority_baseline(train_labels, labels, 3)
    assert baseline["class"] == 1
    assert baseline["accuracy"] == pytest.approx(64 / 115, abs=1e-12)
    assert baseline["balanced_accuracy"] == pytest.approx(1 / 3, abs=1e-12)
    assert baseline["auc_ovr"] == pytest.approx(0.5, abs=1e-12)  # every case tied
    # macro-F1: only the predicted class has a non-zero F1, 2 * precision * 1 / (precision + 1)
    precision = 64 / 115
    assert baseline["macro_f1"] == pytest.approx(2 * precision / (precision + 1) / 3, abs=1e-12)
    scores = evaluate.majority_scores(train_labels, 5, 3)
    assert torch.equal(scores, torch.tensor([[0.0, 1.0, 0.0]] * 5, dtype=torch.float64))


def test_a_summary_of_identical_seeds_is_the_bootstrap_of_one_seed():
    labels, scores = random_case(n=90, seed=6)
    summary = evaluate.seed_summary(labels, [scores, scores.clone()], classes=["n", "b", "m"],
                                    n_boot=200, seed=3, chunk_size=70)
    single = evaluate.bootstrap_metrics(labels, scores, n_boot=200, seed=3)
    assert list(summary.index) == list(evaluate.METRICS) + ["recall n", "recall b", "recall m"]
    for name in evaluate.METRICS:
        assert summary.loc[name, "mean"] == pytest.approx(single.loc[name, "estimate"], abs=1e-12)
        assert summary.loc[name, "min"] == summary.loc[name, "max"]
        assert summary.loc[name, "ci_low"] == pytest.approx(single.loc[name, "ci_low"], abs=1e-12)
        assert summary.loc[name, "ci_high"] == pytest.approx(single.loc[name, "ci_high"],
                                                             abs=1e-12)
    recall = evaluate.class_recall(labels, scores, n_boot=200, seed=3)
    assert np.allclose(summary.loc[["recall n", "recall b", "recall m"], "ci_low"],
                       recall["ci_low"], rtol=0, atol=1e-12)
    assert (summary["seeds"] == 2).all()


def test_a_summary_over_seeds_takes_mean_range_and_the_interval_of_the_seed_mean():
    labels, first = random_case(n=80, seed=7)
    _, second = random_case(n=80, seed=8)
    summary = evaluate.seed_summary(labels, [first, second], n_boot=100, seed=1)
    points = [evaluate.metrics(labels, s) for s in (first, second)]
    counts = bootstrap.bootstrap_counts(80, n_boot=100, seed=1)
    for name in evaluate.METRICS:
        values = [p[name] for p in points]
        assert summary.loc[name, "mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert summary.loc[name, "min"] == pytest.approx(min(values), abs=1e-12)
        assert summary.loc[name, "max"] == pytest.approx(max(values), abs=1e-12)
        seed_mean = (evaluate.replicate_metrics(labels, first, counts)[name]
                     + evaluate.replicate_metrics(labels, second, counts)[name]) / 2
        low, high = torch.nanquantile(seed_mean, torch.tensor([0.025, 0.975],
                                                              dtype=torch.float64)).tolist()
        assert summary.loc[name, "ci_low"] == pytest.approx(low, abs=1e-12)
        assert summary.loc[name, "ci_high"] == pytest.approx(high, abs=1e-12)
    recall = [skm.recall_score(labels, s.argmax(dim=1), average=None) for s in (first, second)]
    assert np.allclose(summary.loc[["recall 0", "recall 1", "recall 2"], "mean"],
                       np.mean(recall, axis=0), rtol=0, atol=1e-12)


def test_bad_seed_summaries_are_rejected():
    labels, scores = random_case(n=20)
    with pytest.raises(ValueError, match="at least one seed"):
        evaluate.seed_summary(labels, [], n_boot=10)
    with pytest.raises(ValueError, match="one label per row"):
        evaluate.seed_summary(labels, [scores, scores[:10]], n_boot=10)
    wider = torch.cat([scores, torch.zeros(20, 1)], dim=1)
    with pytest.raises(ValueError, match="same shape"):
        evaluate.seed_summary(labels, [scores, wider], n_boot=10)
    with pytest.raises(ValueError, match="classes must name all 3 classes"):
        evaluate.seed_summary(labels, [scores], classes=["a", "b"], n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        evaluate.class_recall(labels, scores, n_boot=5)
