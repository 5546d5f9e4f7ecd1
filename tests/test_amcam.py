"""lib.ultrasound.amcam: scores of the AM/Grad-CAM chapter."""
import pandas as pd
import pytest
import torch

from lib.ultrasound import amcam


def test_reference_maps_have_the_resolution_of_their_method():
    images = torch.rand(2, 1, 12, 12)
    maps = amcam.reference_maps(images, {"Grad-CAM": 3, "gradient": None})
    assert set(maps) == {"random (Grad-CAM)", "random (gradient)", "random (smooth)"}
    assert all(m.shape == (2, 1, 12, 12) for m in maps.values())
    assert maps["random (gradient)"].flatten(1).unique(dim=1).shape[1] > 100


def test_localisation_is_scored_inside_each_group_only():
    masks = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    masks[:, 0, :2, :2] = True
    maps = {"m": masks.float()}
    groups = {"correct": torch.tensor([True, False, True]),
              "misclassified": torch.tensor([False, True, False])}
    scores = amcam.localisation(maps, masks, groups)
    assert scores["correct"]["m"]["pointing_game"].tolist()[0] == 1.0
    assert torch.isnan(scores["correct"]["m"]["pointing_game"][1])
    assert torch.isnan(scores["misclassified"]["m"]["top_k_iou"][0])


def test_seed_means_average_the_seeds_on_the_same_resamples():
    nan = float("nan")
    first = {"m": {"score": torch.tensor([1.0, 1.0, nan, 1.0])}}
    second = {"m": {"score": torch.tensor([0.0, 0.0, 0.0, nan])}}
    summary = amcam.seed_means([first, second], n_boot=200)
    row = summary.iloc[0]
    assert row["mean"] == 0.5 and row["seed min"] == 0.0 and row["seed max"] == 1.0
    assert row["ci_low"] == pytest.approx(0.5) and row["ci_high"] == pytest.approx(0.5)
    assert row["n"] == 3
    assert amcam.seed_table(summary).loc["m", "score"] == "0.50 [0.50, 0.50]"
    assert amcam.seed_table(summary, part="range").loc["m", "score"] == "0.00–1.00"
    empty = amcam.seed_means([{"m": {"score": torch.full((3,), nan)}}], n_boot=20)
    assert amcam.seed_table(empty).loc["m", "score"] == "n/a"
    partial = amcam.seed_means([{"m": {"score": torch.ones(3)},
                                 "r": {"other": torch.zeros(3)}}], n_boot=20)
    table = amcam.seed_table(partial)
    assert table.loc["r", "score"] == "n/a" and table.loc["m", "other"] == "n/a"
    assert table.loc["m", "score"] == "1.00 [1.00, 1.00]"


def test_verdicts_over_seeds_count_the_agreeing_seeds():
    base = torch.linspace(0, 1, 40)
    seeds = [{"a": {"s": base + 0.5}, "b": {"s": base}},
             {"a": {"s": base + 0.5}, "b": {"s": base}},
             {"a": {"s": base}, "b": {"s": base}}]
    table = amcam.verdicts_over_seeds(seeds, [("a", "b")], "s", n_boot=100)
    row = table.iloc[0]
    assert row["verdict"] == "higher" and row["seeds agreeing"] == 2
    assert row["verdicts"] == "higher, higher, indistinguishable"
    # every image differs by the same amount per seed: the interval is that one mean
    assert row["CI low"] == pytest.approx(1 / 3) and row["CI high"] == pytest.approx(1 / 3)
    assert row["mean difference"] == pytest.approx(1 / 3)
    assert amcam.verdict_text(row, 3) == "higher than (2 of 3 seeds)"
    split = amcam.verdicts_over_seeds(seeds[1:], [("a", "b")], "s", n_boot=100).iloc[0]
    assert split["verdict"] == amcam.MIXED and split["seeds agreeing"] == 0
    assert amcam.verdict_text(split, 2) == ("seed by seed higher than / not distinguishable "
                                            "from")


def test_am_change_factors_tell_the_gradient_from_the_sigmoid_slope():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 10, 10, generator=generator)
    gradient = torch.randn(3, 1, 10, 10, generator=generator)
    table = amcam.am_change_factors({"follows the gradient": gradient.abs(),
                                     "follows the slope": images * (1 - images)},
                                    gradient, images)
    assert table.loc["follows the gradient", "with |gradient|"] == pytest.approx(1.0)
    assert table.loc["follows the slope", "with x (1 − x)"] == pytest.approx(1.0)
    assert abs(table.loc["follows the slope", "with |gradient|"]) < 0.5


def test_pooled_curves_score_every_method():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    images = torch.rand(2, 1, 12, 12)
    maps = {"a": torch.rand(2, 1, 12, 12), "b": torch.rand(2, 1, 12, 12)}
    curves = amcam.pooled_curves(model, images, maps, torch.tensor([0, 1]), grid=3, steps=3)
    scores = amcam.curve_aucs(curves)
    assert set(scores) == {"a", "b"}
    for method in scores:
        assert set(scores[method]) == {"deletion_auc", "insertion_auc"}
        assert scores[method]["deletion_auc"].shape == (2,)
        assert torch.equal(scores[method]["deletion_auc"], curves[method]["deletion"].auc)


def factors_table(adam_grad, adam_slope, projected_grad, adam_dark, projected_dark):
    rows = {}
    for net in ("VGG-16", "ResNet-18"):
        rows[net, amcam.ADAM] = {"with |gradient|": adam_grad, "with x (1 − x)": adam_slope,
                                 "near-black level": adam_dark}
        rows[net, amcam.PROJECTED] = {"with |gradient|": projected_grad,
                                      "with x (1 − x)": 0.1,
                                      "near-black level": projected_dark}
    return pd.DataFrame(rows).T


def test_the_am_story_follows_the_numbers():
    expected = amcam.am_variant_story(factors_table(0.3, 0.8, 0.9, 0.2, 0.9))
    assert "slope more than the gradient for both networks" in expected["follows"]
    assert "more closely than the Adam variant for both networks" in expected["follows"]
    assert "goes with the optimiser and the parameterisation" in expected["dark"]
    reversed_ = amcam.am_variant_story(factors_table(0.7, 0.4, 0.2, 0.5, 0.3))
    assert "for neither network; projected" in reversed_["follows"]
    assert "Adam variant for neither network" in reversed_["follows"]
    assert "does not tie the low level" in reversed_["dark"]
    mixed = factors_table(0.3, 0.8, 0.9, 0.2, 0.9)
    mixed.loc[("ResNet-18", amcam.PROJECTED), "near-black level"] = 0.1
    assert "for VGG-16 only" in amcam.am_variant_story(mixed)["dark"]
