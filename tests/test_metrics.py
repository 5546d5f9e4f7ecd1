"""Explanation metrics on constructed maps, masks and models with known answers."""
import math

import pytest
import torch
from torch import nn

from lib.kernels import blur, metrics

NAN = float("nan")


def square_mask(size=8, top=2, left=2, side=4):
    mask = torch.zeros(1, size, size)
    mask[:, top:top + side, left:left + side] = 1
    return mask


def batch(*masks):
    return torch.stack(masks)  # N x 1 x H x W


# --- localisation -------------------------------------------------------------------------

def test_a_map_equal_to_the_mask_scores_perfectly():
    masks = batch(square_mask(), square_mask(top=0, left=4, side=3))
    maps = masks.clone()
    assert metrics.pointing_game(maps, masks).tolist() == [1.0, 1.0]
    assert metrics.top_k_iou(maps, masks).tolist() == [1.0, 1.0]
    assert metrics.top_k_iou(maps[:1], masks[:1], k=100 * 16 / 64).tolist() == [1.0]
    assert metrics.energy_in_mask(maps, masks).tolist() == [1.0, 1.0]


def test_a_map_on_the_complement_scores_zero():
    masks = batch(square_mask())
    maps = 1 - masks
    assert metrics.pointing_game(maps, masks).tolist() == [0.0]
    assert metrics.top_k_iou(maps, masks).tolist() == [0.0]
    assert metrics.energy_in_mask(maps, masks).tolist() == [0.0]


def test_partial_overlaps_have_known_values():
    masks = batch(square_mask(side=4))  # rows and columns 2..5: 16 pixels
    maps = torch.zeros(1, 1, 8, 8)
    maps[..., 2:4, :] = 1  # rows 2 and 3: 16 pixels, 8 of them in the mask
    # top 16 pixels = rows 2-3; intersection 8, union 16 + 16 - 8 = 24.
    assert metrics.top_k_iou(maps, masks).item() == pytest.approx(1 / 3)
    assert metrics.energy_in_mask(maps, masks).item() == pytest.approx(0.5)
    uniform = torch.ones(1, 1, 8, 8)
    assert metrics.energy_in_mask(uniform, masks).item() == pytest.approx(16 / 64)


def test_top_k_percent_takes_that_many_pixels():
    masks = batch(square_mask(side=4))
    maps = torch.arange(64.0).flip(0).view(1, 1, 8, 8)  # row-major ranking, pixel 0 first
    # the top 25 % are rows 0-1 (16 pixels), none in the mask.
    assert metrics.top_k_iou(maps, masks, k=25).item() == 0.0
    # the top 50 % are rows 0-3: 8 mask pixels; union 32 + 16 - 8 = 40.
    assert metrics.top_k_iou(maps, masks, k=50).item() == pytest.approx(8 / 40)


def test_ties_in_row_major_order():
    masks = batch(square_mask(side=4))
    maps = torch.ones(1, 1, 8, 8)  # every pixel tied: the first 16 in row-major order win
    assert metrics.top_k_iou(maps, masks, ties="row-major").item() == 0.0


def test_random_ties_reorder_only_equal_values():
    maps = torch.tensor([[0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0]]).repeat(500, 1)
    ranks = metrics.pixel_ranks(maps, seed=3)
    assert torch.equal(ranks, metrics.pixel_ranks(maps, seed=3))  # seeded
    assert set(ranks[:, [1, 6]].flatten().tolist()) == {0, 1}  # the two 2s come first
    assert torch.all(ranks[:, 3] == 2)  # then the 1
    zeros = ranks[:, [0, 2, 4, 5, 7]]
    assert set(zeros.flatten().tolist()) == {3, 4, 5, 6, 7}
    # Each zero is equally likely to go first among the zeros.
    first = (zeros == 3).float().mean(dim=0)
    torch.testing.assert_close(first, torch.full((5,), 0.2), atol=0.07, rtol=0)
    row_major = metrics.pixel_ranks(maps[:1], ties="row-major")
    assert row_major.tolist() == [[3, 0, 4, 2, 5, 6, 1, 7]]
    with pytest.raises(ValueError, match="ties"):
        metrics.pixel_ranks(maps, ties="first")


def test_pointing_game_tolerance_in_pixels():
    masks = batch(square_mask(size=12, top=4, left=4, side=3))  # rows/cols 4..6
    maps = torch.zeros(1, 1, 12, 12)
    maps[0, 0, 5, 9] = 1  # three columns right of the mask's edge (column 6)
    assert metrics.pointing_game(maps, masks).item() == 0.0
    assert metrics.pointing_game(maps, masks, tolerance=2).item() == 0.0
    assert metrics.pointing_game(maps, masks, tolerance=3).item() == 1.0
    maps = torch.zeros(1, 1, 12, 12)
    maps[0, 0, 9, 9] = 1  # diagonal: distance sqrt(3^2 + 3^2) = 4.24 from the corner (6, 6)
    assert metrics.pointing_game(maps, masks, tolerance=4).item() == 0.0
    assert metrics.pointing_game(maps, masks, tolerance=5).item() == 1.0


def test_a_constant_map_is_a_miss():
    masks = batch(square_mask())
    assert metrics.pointing_game(torch.zeros(1, 1, 8, 8), masks).item() == 0.0


def test_empty_masks_give_nan_and_the_others_are_unaffected():
    masks = batch(square_mask(), torch.zeros(1, 8, 8))
    maps = batch(square_mask(), square_mask())
    for metric in (metrics.pointing_game, metrics.top_k_iou, metrics.energy_in_mask):
        values = metric(maps, masks)
        assert values[0].item() == 1.0 and math.isnan(values[1].item())


def test_energy_of_an_all_zero_map_is_nan():
    assert math.isnan(metrics.energy_in_mask(torch.zeros(1, 1, 8, 8), batch(square_mask())).item())


def test_maps_and_masks_may_drop_the_channel_axis():
    masks, maps = batch(square_mask()), batch(square_mask())
    assert metrics.top_k_iou(maps[:, 0], masks).item() == 1.0
    assert metrics.top_k_iou(maps, masks[:, 0].bool()).item() == 1.0


@pytest.mark.parametrize("maps, masks, error, match", [
    (torch.ones(1, 1, 8, 8), torch.ones(1, 1, 6, 6), ValueError, "do not match"),
    (torch.ones(2, 1, 8, 8), torch.ones(1, 1, 8, 8), ValueError, "do not match"),
    (torch.ones(1, 3, 8, 8), torch.ones(1, 1, 8, 8), ValueError, "one map per image"),
    (torch.ones(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5), ValueError, "binary"),
    (torch.full((1, 1, 8, 8), NAN), torch.ones(1, 1, 8, 8), ValueError, "NaN"),
    (torch.ones(1, 1, 8, 8, dtype=torch.long), torch.ones(1, 1, 8, 8), TypeError, "floating"),
])
def test_bad_maps_and_masks_are_refused(maps, masks, error, match):
    for metric in (metrics.pointing_game, metrics.top_k_iou, metrics.energy_in_mask):
        with pytest.raises(error, match=match):
            metric(maps, masks)


def test_bad_options_are_refused():
    maps, masks = batch(square_mask()), batch(square_mask())
    with pytest.raises(ValueError, match="non-negative"):
        metrics.energy_in_mask(maps - 0.5, masks)
    with pytest.raises(ValueError, match="percentage"):
        metrics.top_k_iou(maps, masks, k=0)
    with pytest.raises(ValueError, match="percentage"):
        metrics.top_k_iou(maps, masks, k="all")
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(maps, masks, tolerance=-1)


# --- deletion and insertion ---------------------------------------------------------------

class RegionMean(nn.Module):
    """Two logits: 0, and ``gain`` times the mean of channel 0 over a region."""

    def __init__(self, region, gain=4.0):
        super().__init__()
        self.register_buffer("region", region.float())
        self.gain = gain

    def forward(self, x):
        inside = (x[:, 0] * self.region).sum(dim=(1, 2)) / self.region.sum()
        return torch.stack([torch.zeros_like(inside), self.gain * inside], dim=1)


def region_case():
    region = square_mask(side=4)[0]  # 16 of 64 pixels
    images = torch.ones(2, 3, 8, 8)
    first = region + 0.001 * torch.rand(8, 8)  # region first, in a scrambled order
    last = (1 - region) + 0.001 * torch.rand(8, 8)  # region last
    return RegionMean(region).eval(), images, torch.stack([first, last])[:, None]


def test_deletion_curve_of_a_region_mean_model_in_closed_form():
    model, images, maps = region_case()
    curves = metrics.perturbation_curves(model, images, maps, mode="deletion", target=1,
                                         steps=8, output="logit", baseline="black")
    torch.testing.assert_close(curves.fractions, torch.arange(9) / 8)
    # Region first: 8 of its 16 pixels go per step, the score halves then reaches zero.
    expected_first = torch.tensor([4, 2, 0, 0, 0, 0, 0, 0, 0.0])
    # Region last: the score stays until 48 pixels are gone, then falls in two steps.
    expected_last = torch.tensor([4, 4, 4, 4, 4, 4, 4, 2, 0.0])
    torch.testing.assert_close(curves.scores, torch.stack([expected_first, expected_last]))
    # Areas: 4 * 16 / (2 * 64) = 0.5 and 4 * (48 / 64 + 16 / 128) = 3.5.
    torch.testing.assert_close(curves.auc, torch.tensor([0.5, 3.5]))
    assert curves.mode == "deletion" and curves.baseline == "black"


def test_insertion_curve_of_a_region_mean_model_in_closed_form():
    model, images, maps = region_case()
    auc = metrics.insertion_auc(model, images, maps, target=1, steps=8, output="logit")
    torch.testing.assert_close(auc, torch.tensor([4 - 0.5, 4 - 3.5]))


def test_probability_output_is_the_softmax_of_the_logit_curve():
    model, images, maps = region_case()
    logit = metrics.perturbation_curves(model, images, maps, mode="deletion", target=1,
                                        steps=8, output="logit")
    probability = metrics.perturbation_curves(model, images, maps, mode="deletion", target=1,
                                              steps=8)
    torch.testing.assert_close(probability.scores, torch.sigmoid(logit.scores))


def test_constant_and_tensor_baselines():
    model, images, maps = region_case()
    options = dict(mode="deletion", target=1, steps=8, output="logit")
    grey = metrics.perturbation_curves(model, images, maps, baseline=0.25, **options)
    assert grey.scores[0, -1].item() == pytest.approx(1.0)  # 4 * 0.25
    assert grey.baseline == "constant 0.25"
    same = metrics.perturbation_curves(model, images, maps,
                                       baseline=torch.full_like(images, 0.25), **options)
    torch.testing.assert_close(same.scores, grey.scores)


def test_blur_baseline_keeps_a_constant_image_and_its_score():
    model, images, maps = region_case()
    curves = metrics.perturbation_curves(model, images * 0.6, maps, mode="deletion", target=1,
                                         steps=4, output="logit", baseline="blur")
    torch.testing.assert_close(curves.scores, torch.full((2, 5), 4 * 0.6))
    assert curves.baseline.startswith("blur")


def test_chunk_size_does_not_change_the_curves():
    model, images, maps = region_case()
    options = dict(mode="insertion", target=1, steps=8, baseline="blur", blur_sigma=1.0)
    one = metrics.perturbation_curves(model, images, maps, chunk_size=1, **options)
    many = metrics.perturbation_curves(model, images, maps, chunk_size=1000, **options)
    torch.testing.assert_close(one.scores, many.scores)


class Counting(nn.Module):
    """Wraps a model and counts the images it is shown."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, 0

    def forward(self, x):
        self.seen += len(x)
        return self.model(x)


def test_curves_of_maps_match_the_curves_one_by_one_and_score_the_ends_once():
    model, images, maps = region_case()
    named = {"first": maps, "flipped": maps.flip(-1), "random": torch.rand_like(maps)}
    options = dict(target=1, steps=8, baseline="blur", blur_sigma=1.0, seed=3)
    counting = Counting(model).eval()
    together = metrics.curves_of_maps(counting, images, named, **options)
    # 2 ends per image, then 7 inner steps per image, map and mode.
    assert counting.seen == 2 * 2 + 2 * 7 * len(named) * len(metrics.MODES)
    for name, values in named.items():
        for mode in metrics.MODES:
            alone = metrics.perturbation_curves(model, images, values, mode=mode, **options)
            torch.testing.assert_close(together[name][mode].scores, alone.scores)
            torch.testing.assert_close(together[name][mode].auc, alone.auc)
    deletion = together["first"]["deletion"].scores
    insertion = together["first"]["insertion"].scores
    torch.testing.assert_close(deletion[:, 0], insertion[:, -1])  # both: the intact image
    torch.testing.assert_close(deletion[:, -1], insertion[:, 0])  # both: the baseline


def test_curves_of_maps_with_one_step_scores_only_the_ends():
    model, images, maps = region_case()
    curves = metrics.curves_of_maps(model, images, {"m": maps}, modes=("deletion",),
                                    target=1, steps=1, output="logit", baseline="black")
    torch.testing.assert_close(curves["m"]["deletion"].scores,
                               torch.tensor([[4.0, 0.0], [4.0, 0.0]]))
    with pytest.raises(ValueError, match="non-empty dict"):
        metrics.curves_of_maps(model, images, {})
    with pytest.raises(ValueError, match="mode"):
        metrics.curves_of_maps(model, images, {"m": maps}, modes=("removal",))


def test_default_target_is_the_prediction_on_the_intact_image():
    model, images, maps = region_case()  # logit 1 = 4 > 0: class 1 is predicted
    torch.testing.assert_close(metrics.deletion_auc(model, images, maps, steps=8),
                               metrics.deletion_auc(model, images, maps, target=[1, 1], steps=8))


def test_uneven_step_counts_use_the_actual_fractions():
    model, images, maps = region_case()
    curves = metrics.perturbation_curves(model, images, maps, mode="deletion", target=1,
                                         steps=3, output="logit")
    torch.testing.assert_close(curves.fractions, torch.tensor([0, 21, 43, 64]) / 64)


def test_perturbation_curves_bad_input():
    model, images, maps = region_case()
    with pytest.raises(ValueError, match="mode"):
        metrics.perturbation_curves(model, images, maps, mode="removal")
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion_auc(model, images, maps, baseline="white")
    with pytest.raises(ValueError, match="images' shape"):
        metrics.deletion_auc(model, images, maps, baseline=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="upsample"):
        metrics.deletion_auc(model, images, maps[..., :4, :4])
    with pytest.raises(ValueError, match="2 images"):
        metrics.deletion_auc(model, images, maps[:1])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        metrics.deletion_auc(model, images, maps, target=2)
    with pytest.raises(ValueError, match="output"):
        metrics.deletion_auc(model, images, maps, output="softmax")
    with pytest.raises(ValueError, match="training mode"):
        metrics.deletion_auc(model.train(), images, maps)


def test_gaussian_blur_preserves_constants_and_sums():
    constant = torch.full((2, 3, 9, 9), 0.7)
    torch.testing.assert_close(blur.gaussian_blur(constant, 2.0), constant)
    spike = torch.zeros(1, 1, 21, 21)
    spike[..., 10, 10] = 1
    blurred = blur.gaussian_blur(spike, 1.5)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 10, 10] == blurred.max()
    torch.testing.assert_close(blurred, blurred.transpose(-1, -2))
    with pytest.raises(ValueError, match="sigma"):
        blur.gaussian_blur(spike, 0)


# --- all metrics and the summary table ----------------------------------------------------

def test_explanation_scores_returns_every_metric_per_image():
    model, images, maps = region_case()
    masks = batch(square_mask(), torch.zeros(1, 8, 8))
    scores = metrics.explanation_scores(model, images, maps, masks, steps=4)
    assert list(scores) == list(metrics.METRICS)
    assert all(v.shape == (2,) for v in scores.values())
    assert math.isnan(scores["top_k_iou"][1].item()) and scores["top_k_iou"][0].item() > 0.9
    assert not torch.isnan(scores["deletion_auc"]).any()


def test_summarise_excludes_nans_and_reports_them():
    scores = {("resnet18", "grad-cam"): {"pointing_game": torch.tensor([1.0, 0.0, NAN, 1.0])},
              ("vgg16", "grad-cam"): {"pointing_game": torch.full((5,), 0.25)}}
    table = metrics.summarise(scores, names=("network", "method"), n_boot=200)
    assert list(table.columns) == ["network", "method", "metric", "mean", "ci_low", "ci_high",
                                   "n", "n_excluded"]
    first, second = table.iloc[0], table.iloc[1]
    assert first["mean"] == pytest.approx(2 / 3) and (first["n"], first["n_excluded"]) == (3, 1)
    assert 0 <= first["ci_low"] <= first["mean"] <= first["ci_high"] <= 1
    # Every resample of a constant is that constant.
    assert second["ci_low"] == second["ci_high"] == second["mean"] == 0.25


def test_bootstrap_interval_matches_the_normal_approximation():
    values = torch.rand(400, generator=torch.Generator().manual_seed(0))
    stats = metrics.bootstrap_mean(values, n_boot=4000, level=0.9)
    half_width = 1.645 * values.double().std().item() / 20
    assert stats["ci_high"] - stats["ci_low"] == pytest.approx(2 * half_width, rel=0.1)
    assert stats == metrics.bootstrap_mean(values, n_boot=4000, level=0.9)  # seeded


def test_summarise_of_no_defined_values_and_bad_keys():
    stats = metrics.bootstrap_mean(torch.full((3,), NAN))
    assert stats["n"] == 0 and stats["n_excluded"] == 3 and math.isnan(stats["mean"])
    with pytest.raises(ValueError, match="names"):
        metrics.summarise({("a", "b"): {"m": torch.ones(2)}}, names=("network",))
    with pytest.raises(ValueError, match="level"):
        metrics.bootstrap_mean(torch.ones(2), level=95)
