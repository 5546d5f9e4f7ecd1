"""lib.ultrasound.cnn_report: the CNN chapter's tables."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from lib.ultrasound import cnn_report, evaluate


def test_selection_table_averages_seeds_and_ranks_by_validation(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({"candidate": ["a", "a", "b"], "arch": ["resnet18"] * 3, "seed": [0, 1, 0],
                  "val_balanced_accuracy": [0.6, 0.7, 0.8], "val_loss": [1.0, 0.8, 0.5],
                  "val_auc": [0.7, 0.8, 0.9], "best_epoch": [10, 20, 30],
                  "seconds": [60, 120, 60]}).to_csv(log, index=False)
    table = cnn_report.selection_table(log)
    assert list(table.index) == [("resnet18", "b"), ("resnet18", "a")]
    assert table.loc[("resnet18", "a"), "seeds"] == 2
    assert table.loc[("resnet18", "a"), "validation balanced accuracy"] == 0.65
    assert table.loc[("resnet18", "a"), "training minutes"] == 1.5
    assert "precision" not in table


def test_selection_table_gives_the_precision_each_candidate_trained_in(tmp_path):
    log = tmp_path / "log.csv"
    pd.DataFrame({"candidate": ["a", "b"], "arch": ["vgg16"] * 2, "seed": [0, 0],
                  "val_balanced_accuracy": [0.6, 0.7], "val_loss": [1.0, 0.8],
                  "val_auc": [0.7, 0.8], "best_epoch": [10, 20], "seconds": [60, 120],
                  "settings": ['{"precision": "bfloat16"}', '{"epochs": 5}']}
                 ).to_csv(log, index=False)
    table = cnn_report.selection_table(log)
    assert table.loc[("vgg16", "a"), "precision"] == "bfloat16"
    assert table.loc[("vgg16", "b"), "precision"] == "float32"  # the default


def _candidates(rows):
    index = pd.MultiIndex.from_tuples([row[:2] for row in rows], names=["arch", "candidate"])
    columns = ["validation balanced accuracy", "validation loss", "budget minutes"]
    return pd.DataFrame([row[2:] for row in rows], index=index, columns=columns)


def test_without_budget_minutes_each_network_takes_its_best_by_accuracy_then_loss():
    table = _candidates([("vgg16", "a", 0.80, 0.9, None), ("vgg16", "b", 0.795, 0.5, None),
                         ("vgg16", "c", 0.70, 0.1, None), ("resnet18", "d", 0.6, 0.1, None),
                         ("resnet18", "e", 0.7, 0.9, None)]).drop(columns="budget minutes")
    winners = cnn_report.selection_winners(table)
    assert winners["vgg16"]["winner"] == "b"  # within 0.01 of a: the lower loss decides
    assert winners["vgg16"]["tied"] == ["a"]
    assert winners["resnet18"]["winner"] == "e"
    assert cnn_report.selection_winners(table, tie=0.0)["vgg16"]["winner"] == "a"


def test_the_winning_pair_is_the_best_one_that_fits_the_budget():
    # Three VGG-16 seeds and four ResNet-18s, two at a time: (3 v + 4 r) / 2 minutes.
    table = _candidates([("vgg16", "big", 0.85, 0.5, 60.0), ("vgg16", "small", 0.80, 0.6, 10.0),
                         ("vgg16", "odd", 0.90, 0.4, float("nan")),
                         ("resnet18", "long", 0.78, 0.7, 20.0),
                         ("resnet18", "short", 0.74, 0.7, 10.0)])
    winners = cnn_report.selection_winners(table, budget=50)
    # (3*10 + 4*20)/2 = 55 misses; (3*10 + 4*10)/2 = 35 fits; "odd" is never counted.
    assert {arch: w["winner"] for arch, w in winners.items()} == {"vgg16": "small",
                                                                  "resnet18": "short"}
    assert winners["vgg16"]["minutes"] == 35
    assert winners["vgg16"]["best"] == "odd"
    assert winners["vgg16"]["gap"] == pytest.approx(0.10)
    assert winners["vgg16"]["exceeds_margin"] and winners["resnet18"]["exceeds_margin"]
    roomy = cnn_report.selection_winners(table, budget=55)
    assert roomy["resnet18"]["winner"] == "long" and not roomy["resnet18"]["exceeds_margin"]


def test_budget_minutes_come_from_the_measured_shapes_only():
    quarter = cnn_report.budget_minutes("vgg16", {"width": 0.25, "image_size": 96,
                                                  "epochs": 80})
    assert quarter == pytest.approx(15.1)
    half = cnn_report.budget_minutes("vgg16", {"width": 0.5, "image_size": 96, "epochs": 40})
    assert half == pytest.approx(64.4 / 2)
    assert math.isnan(cnn_report.budget_minutes("resnet18", {"image_size": 128,
                                                             "epochs": 30}))


def test_the_book_trains_the_recipes_the_selection_rule_picks():
    from dataclasses import asdict

    from lib.book import profiles
    from lib.ultrasound import checkpoints

    winners = cnn_report.selection_winners(cnn_report.selection_table())
    auto = profiles.CNN_TRAINING["book"].get("precision") == checkpoints.AUTO_PRECISION
    for arch, picked in winners.items():
        assert picked["minutes"] <= cnn_report.BUDGET_MINUTES
        logged = cnn_report.winner_settings(arch, picked["winner"])
        trained = asdict(checkpoints.config_for(arch, "book"))
        if auto:  # the hardware decides; the recipe allows either
            assert logged.pop("precision") in ("bfloat16", "float32")
            trained.pop("precision")
        logged.setdefault("width", 1.0)  # rows logged before widths existed
        assert {k: trained[k] for k in logged} == logged, arch
    with pytest.raises(ValueError, match="no candidate"):
        cnn_report.winner_settings("vgg16", "nothing")


def one_hot(predictions, classes=3):
    return torch.nn.functional.one_hot(torch.tensor(predictions), classes).double()


def test_a_perfect_network_is_higher_than_one_that_is_always_wrong():
    labels = torch.tensor([0, 1, 2] * 10)
    right = one_hot(labels.tolist())
    wrong = one_hot(((labels + 1) % 3).tolist())
    result = cnn_report.paired_difference(labels, [right, right], [wrong], n_boot=200)
    assert result["difference"] == 1.0 and result["ci_low"] == 1.0
    assert result["verdict"] == "higher"
    same = cnn_report.paired_difference(labels, [right], [right], n_boot=200)
    assert same["difference"] == 0 and same["verdict"] == "indistinguishable"


def test_over_seeds_and_the_model_card_read_the_seed_summaries():
    labels = torch.tensor([0, 1, 2, 1] * 8)
    scores = [one_hot(labels.tolist()), one_hot([1] * len(labels))]
    summary = evaluate.seed_summary(labels, scores, classes=("n", "b", "m"), n_boot=50)
    table = cnn_report.over_seeds({"test": summary})
    assert table.loc["balanced accuracy", "test: seed range"] == "0.333–1.000"
    recall = evaluate.class_recall(labels, scores[0], classes=("n", "b", "m"), n_boot=50)
    recall.loc["m", "estimate"] = 0.4
    config = SimpleNamespace(image_size=96, epochs=50, lr=2e-3, weight_decay=5e-4,
                             batch_size=32, width=0.5)
    runs = [SimpleNamespace(seconds=120, seed=0), SimpleNamespace(seconds=60, seed=1)]
    card = cnn_report.model_card("ResNet-18", config, runs,
                                 split_sizes={"train": 10, "val": 2, "test": 3},
                                 validation=summary, test=summary, recall=recall,
                                 baseline={"accuracy": 0.5}, recall_seed=1)
    assert card["split (train / val / test)"] == "10 / 2 / 3"
    assert card["minutes per training"] == "1.5"
    assert card["recipe"].endswith("batch 32, 0.5 x channel width")
    assert card["weakest class (test recall, seed 1)"] == "m (0.40)"
    assert card.name == "ResNet-18"
    with pytest.raises(KeyError):
        card["nonexistent"]
