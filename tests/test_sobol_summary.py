"""Summaries of Sobol maps of image regions, on indices whose answers are known."""
import pytest
import torch

from lib.kernels.sobol_images import SobolMaps
from lib.ultrasound import sobol_summary


def maps():
    S1 = torch.tensor([[[0.5, 0.3], [0.1, 0.0]],
                       [[0.2, 0.2], [0.2, 0.2]]], dtype=torch.float64)
    ST = S1 + torch.tensor([[[0.1, 0.0], [0.0, 0.0]],
                            [[0.0, 0.3], [0.0, 0.0]]], dtype=torch.float64)
    S1_conf = torch.full_like(S1, 0.02)
    ST_conf = torch.full_like(S1, 0.05)
    return SobolMaps(S1=S1, ST=ST, S1_conf=S1_conf, ST_conf=ST_conf,
                     target=torch.zeros(2, dtype=torch.long), grid=2, N=4, conf_level=0.95)


def test_certainty_of_known_indices():
    row = sobol_summary.certainty(maps())
    assert row["largest ST per image (mean)"] == pytest.approx((0.6 + 0.5) / 2)
    assert row["ST interval half-width (mean)"] == pytest.approx(0.05)
    assert row["S1 interval half-width (mean)"] == pytest.approx(0.02)
    assert row["regions with ST > 0 (share)"] == pytest.approx(7 / 8)  # all but ST = 0
    assert row["sum of S1 per image (mean)"] == pytest.approx((0.9 + 0.8) / 2)
    assert row["sum of ST per image (mean)"] == pytest.approx((1.0 + 1.1) / 2)


def test_interaction_of_known_indices():
    row = sobol_summary.interaction(maps())
    assert row["sum of S1 (mean over images)"] == pytest.approx(0.85)
    assert row["sum of S1 (lowest image)"] == pytest.approx(0.8)
    assert row["sum of S1 (highest image)"] == pytest.approx(0.9)
    # gaps of 0.1 and 0.3 exceed 0.07, the others are 0
    assert row["regions with ST − S1 beyond both intervals (share)"] == pytest.approx(2 / 8)


def test_additivity_reports_the_surrogate_r2_beside_the_first_order_sum():
    fit = {"r2": torch.tensor([0.5, 0.9], dtype=torch.float64)}
    row = sobol_summary.additivity(fit, maps())
    assert row["R² on fresh samples (mean)"] == pytest.approx(0.7)
    assert row["R² (lowest image)"] == pytest.approx(0.5)
    assert row["R² (highest image)"] == pytest.approx(0.9)
    assert row["sum of S1 (mean)"] == pytest.approx(0.85)


class TwoClassLinear(torch.nn.Module):
    """Logits (s, -s) with s the mean of the image: the probability is a sigmoid of 2 s."""

    def forward(self, x):
        s = x.flatten(1).mean(1)
        return torch.stack([s, -s], 1)


def test_scores_for_both_outputs_adds_the_probability_curves_to_the_analysed_ones():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 8, 8, generator=generator) + 1
    maps = torch.rand(3, 8, 8, generator=generator)
    masks = torch.zeros(3, 1, 8, 8)
    masks[..., :4, :4] = 1
    target = torch.zeros(3, dtype=torch.long)
    scores = sobol_summary.scores_for_both_outputs(
        TwoClassLinear().eval(), images, maps, masks, target, steps=4, blur_sigma=2.0, seed=0)
    for key in ("deletion_auc", "insertion_auc", "deletion_auc_probability",
                "insertion_auc_probability", "top_k_iou"):
        assert scores[key].shape == (3,)
    # the probability is a strictly increasing function of the logit, and squeezes it
    assert not torch.allclose(scores["deletion_auc"], scores["deletion_auc_probability"])
    assert (scores["deletion_auc_probability"] <= 1).all()
    only_probability = sobol_summary.scores_for_both_outputs(
        TwoClassLinear().eval(), images, maps, masks, target, steps=4, blur_sigma=2.0, seed=0,
        analysed="probability")
    assert "deletion_auc_probability" not in only_probability
    assert torch.allclose(only_probability["deletion_auc"],
                          scores["deletion_auc_probability"])


def test_paired_against_finds_a_clear_gain_and_a_tie_with_bonferroni():
    generator = torch.Generator().manual_seed(1)
    base = torch.rand(40, generator=generator)
    noise = 0.01 * torch.randn(40, generator=generator)
    scores = {("a", "first"): {"iou": base + 0.3, "auc": base + noise},
              ("a", "second"): {"iou": base, "auc": base}}
    table = sobol_summary.paired_against(scores, "first", "second",
                                         [("iou", "IoU"), ("auc", "AUC")], archs=["a"],
                                         n_boot=2000, seed=0)
    assert list(table.index) == [("a", "IoU"), ("a", "AUC")]
    assert table.loc[("a", "IoU"), "difference"] == pytest.approx(0.3)
    assert table.loc[("a", "IoU"), "CI low"] > 0.29
    low, high = table.loc[("a", "AUC"), ["CI low", "CI high"]]
    assert low < 0 < high
    assert table.loc[("a", "IoU"), "verdict"] != table.loc[("a", "AUC"), "verdict"]


def test_the_additivity_sentence_follows_the_share_of_additive_images():
    high, low = torch.tensor([0.9, 0.95, 0.7]), torch.tensor([0.2, 0.5, 0.85])
    both = sobol_summary.additivity_sentence({"A": high, "B": high}, "logit", 4)
    assert "close to additive on most images (" in both and "A on 67% of the images" in both
    one = sobol_summary.additivity_sentence({"A": high, "B": low}, "logit", 4)
    assert "for one network only" in one
    none = sobol_summary.additivity_sentence({"A": low, "B": low}, "logit", 4)
    assert "not close to additive" in none


def test_the_precision_sentence_follows_the_half_widths():
    assert "more precisely than first-order ones at the same cost, for every" in \
        sobol_summary.precision_sentence({"A": 0.01, "B": 0.02}, {"A": 0.05, "B": 0.06})
    assert "for B only" in sobol_summary.precision_sentence({"A": 0.1, "B": 0.02},
                                                            {"A": 0.05, "B": 0.06})
    assert "at least as precisely" in sobol_summary.precision_sentence({"A": 0.1}, {"A": 0.05})


def test_localisation_is_split_by_outcome_and_faithfulness_kept_on_every_image():
    scores = {("vgg16", "Sobol ST"): {"top_k_iou": torch.tensor([0.1, 0.2, 0.3]),
                                      "deletion_auc": torch.tensor([1.0, 2.0, 3.0])}}
    correct = {"vgg16": torch.tensor([True, False, True])}
    primary, misclassified = sobol_summary.split_localisation(scores, correct)
    iou = primary["vgg16", "Sobol ST"]["top_k_iou"]
    assert torch.isnan(iou[1]) and iou[[0, 2]].tolist() == pytest.approx([0.1, 0.3])
    assert primary["vgg16", "Sobol ST"]["deletion_auc"].tolist() == [1.0, 2.0, 3.0]
    wrong = misclassified["vgg16", "Sobol ST"]
    assert list(wrong) == ["top_k_iou"]
    assert torch.isnan(wrong["top_k_iou"][[0, 2]]).all()
    assert wrong["top_k_iou"][1].item() == pytest.approx(0.2)
