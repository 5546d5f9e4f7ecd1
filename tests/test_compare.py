"""The comparison's map set: each map is its kernel's, chunking changes nothing, rank
correlation equals SciPy's, example picking and the metric table have known answers."""
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn

from lib.kernels import am, cam, local, metrics, similarity
from lib.ultrasound import compare

SIZE = 16


def tiny_gray_cnn(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(6, 8, 3, padding=1, stride=2)), ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8, 3)),
    ])).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_gray_cnn()


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


SETTINGS = compare.MapSettings(am_steps=5, am_lr=0.1, am_l2=2.0, am_tv=0.5, fd_delta=0.1,
                               fd_patch=4, batch_size=2)


@pytest.fixture(scope="module")
def map_set(model, images):
    return compare.explanation_maps(model, images, layer="relu2", methods=compare.METHODS,
                                    settings=SETTINGS, show_progress=False)


def test_every_map_is_a_non_negative_image_sized_map(map_set, images):
    assert set(map_set.maps) == set(compare.METHODS)
    for method, values in map_set.maps.items():
        assert values.shape == (5, 1, SIZE, SIZE), method
        assert torch.isfinite(values).all() and (values >= 0).all(), method
    assert set(map_set.seconds) == set(compare.METHODS)
    assert map_set.am_logit_gain.shape == (5,)


def test_the_default_target_is_the_predicted_class(model, images, map_set):
    with torch.no_grad():
        assert torch.equal(map_set.target, model(images).argmax(dim=1))


def test_each_map_is_its_kernel_for_the_same_class(model, images):
    target = [0, 1, 2, 1, 0]
    maps = compare.explanation_maps(model, images, target, layer="relu2",
                                    methods=("grad_cam", "am_change", "gradient"),
                                    settings=SETTINGS, show_progress=False).maps
    classes = torch.tensor(target)
    torch.testing.assert_close(maps["grad_cam"],
                               cam.grad_cam(model, images, classes, layer="relu2"))
    torch.testing.assert_close(maps["gradient"], local.gradient(model, images, classes).abs())
    ascent = am.maximize_from(model, images, [am.class_logit(c) for c in target], l2=2.0,
                              tv=0.5, steps=5, lr=0.1, show_progress=False)
    torch.testing.assert_close(maps["am_change"], ascent.change_map())
    torch.testing.assert_close(map_set_gain(model, images, target),
                               ascent.final_values - ascent.start_values)


def map_set_gain(model, images, target):
    return compare.explanation_maps(model, images, target, layer="relu2", methods=["am_change"],
                                    settings=SETTINGS, show_progress=False).am_logit_gain


def test_local_sensitivity_is_the_patch_map_upsampled_bilinearly(model, images):
    maps = compare.explanation_maps(model, images, 1, layer="relu2",
                                    methods="local_sensitivity", settings=SETTINGS,
                                    show_progress=False).maps["local_sensitivity"]
    patches = local.fd_sensitivity(model, images, 1, 0.1, patch=4, show_progress=False)
    coarse = patches[..., ::4, ::4].abs()
    torch.testing.assert_close(maps, F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear"))
    # Pooling the upsampled map back to patches keeps the order of the patches' values.
    assert torch.equal(F.avg_pool2d(maps, 4).flatten(1).argmax(1), coarse.flatten(1).argmax(1))


def test_one_pixel_patches_are_the_finite_difference_map_itself(model, images):
    settings = compare.MapSettings(fd_patch=1, fd_delta=0.1)
    maps = compare.explanation_maps(model, images[:2], 2, layer="relu2",
                                    methods=["local_sensitivity"], settings=settings,
                                    show_progress=False).maps["local_sensitivity"]
    expected = local.fd_sensitivity(model, images[:2], 2, 0.1, show_progress=False).abs()
    torch.testing.assert_close(maps, expected)


def test_batch_and_chunk_sizes_do_not_change_the_maps(model, images, map_set):
    other = compare.explanation_maps(
        model, images, layer="relu2", methods=compare.METHODS,
        settings=compare.MapSettings(**{**SETTINGS.__dict__, "batch_size": 5,
                                        "fd_chunk_size": 3}),
        show_progress=False)
    for method in compare.METHODS:
        torch.testing.assert_close(other.maps[method], map_set.maps[method], atol=1e-5,
                                   rtol=1e-4, msg=method)


def test_the_random_map_depends_only_on_the_seed(model, images):
    def random_map(seed):
        return compare.explanation_maps(model, images, layer="relu2", methods=["random"],
                                        seed=seed, show_progress=False).maps["random"]
    assert torch.equal(random_map(3), random_map(3))
    assert not torch.equal(random_map(3), random_map(4))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": ["grad_cam", "saliency"]}, ValueError, "valid methods: grad_cam"),
    ({"methods": []}, ValueError, "valid methods"),
    ({"layer": "conv9"}, ValueError, "valid layers: conv1, relu1"),
    ({"target": 3}, ValueError, r"0\.\.2"),
    ({"target": [0, 1]}, ValueError, "one class per image"),
    ({"settings": {"am_steps": 3}}, TypeError, "MapSettings"),
])
def test_bad_input_is_refused(model, images, kwargs, error, match):
    options = {"layer": "relu2", "show_progress": False, **kwargs}
    with pytest.raises(error, match=match):
        compare.explanation_maps(model, images, **options)


def test_bad_images_are_refused(model, images):
    with pytest.raises(ValueError, match="non-empty batch"):
        compare.explanation_maps(model, images[:0], layer="relu2", show_progress=False)
    with pytest.raises(ValueError, match="N x C x H x W"):
        compare.explanation_maps(model, images[0], layer="relu2", show_progress=False)


@pytest.mark.parametrize("field, value", [("am_steps", 0), ("fd_patch", 2.0), ("am_lr", 0),
                                          ("am_l2", -1.0), ("fd_delta", float("nan")),
                                          ("batch_size", True), ("fd_chunk_size", 0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        compare.MapSettings(**{field: value})


def test_a_patch_that_does_not_divide_the_image_is_refused(model, images):
    with pytest.raises(ValueError, match="must divide"):
        compare.explanation_maps(model, images, layer="relu2", methods=["local_sensitivity"],
                                 settings=compare.MapSettings(fd_patch=5), show_progress=False)


def test_rank_correlation_equals_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 1, 6, 6), generator=generator).float()  # many ties
    b = a + torch.randint(0, 3, (4, 1, 6, 6), generator=generator).float()
    ours = similarity.rank_correlation(a, b)
    expected = [scipy.stats.spearmanr(x.flatten(), y.flatten()).statistic
                for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_rank_correlation_of_monotone_maps_and_of_a_constant_map():
    a = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(similarity.rank_correlation(a, a.exp() * 7),
                               torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(similarity.rank_correlation(a, -a),
                               -torch.ones(3, dtype=torch.float64))
    assert torch.isnan(similarity.rank_correlation(a, torch.zeros_like(a))).all()
    with pytest.raises(ValueError, match="same shape"):
        similarity.rank_correlation(a, a[:2])


def test_average_ranks_of_a_known_row():
    ranks = similarity.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0]]))
    assert ranks.tolist() == [[4.0, 0.5, 4.0, 2.0, 0.5, 4.0]]


def test_agreement_is_a_symmetric_table_with_ones_on_the_diagonal():
    a = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    table = compare.agreement({"grad_cam": a, "gradient": -a, "random": a ** 3})
    assert list(table.index) == ["Grad-CAM", "gradient", "random"]
    np.testing.assert_allclose(table.to_numpy(), [[1, -1, 1], [-1, 1, -1], [1, -1, 1]])


def test_pick_examples_takes_the_most_confident_lesion_images():
    labels = torch.tensor([0, 1, 2, 1, 2, 1, 0])
    predicted = torch.tensor([0, 1, 2, 2, 1, 1, 1])
    confidence = torch.tensor([0.99, 0.6, 0.9, 0.7, 0.8, 0.95, 0.5])
    picked = compare.pick_examples(labels, predicted, confidence, count=2)
    assert picked == {"correct": [5, 2], "wrong": [4, 3]}
    assert compare.pick_examples(labels, predicted, confidence, count=5,
                                 classes=(0,)) == {"correct": [0], "wrong": [6]}
    with pytest.raises(ValueError, match="count"):
        compare.pick_examples(labels, predicted, confidence, count=0)


def test_metric_table_formats_means_and_intervals_in_order():
    summary = pd.DataFrame([
        {"network": "b", "method": "x", "metric": "m2", "mean": 0.5, "ci_low": 0.25,
         "ci_high": 0.75},
        {"network": "b", "method": "x", "metric": "m1", "mean": float("nan"),
         "ci_low": float("nan"), "ci_high": float("nan")},
        {"network": "a", "method": "y", "metric": "m2", "mean": 0.123, "ci_low": 0.1,
         "ci_high": 0.2},
        {"network": "a", "method": "y", "metric": "m1", "mean": 1.0, "ci_low": 1.0,
         "ci_high": 1.0},
    ])
    table = compare.metric_table(summary)
    assert list(table.columns) == ["m2", "m1"]
    assert list(table.index) == [("b", "x"), ("a", "y")]
    assert table.loc[("b", "x"), "m2"] == "0.50 [0.25, 0.75]"
    assert table.loc[("b", "x"), "m1"] == "n/a"
    assert table.loc[("a", "y"), "m2"] == "0.12 [0.10, 0.20]"
    with pytest.raises(ValueError, match="lacks column"):
        compare.metric_table(summary.drop(columns="ci_low"))


def test_score_maps_gives_the_numbers_of_explanation_scores(model, images, map_set):
    masks = torch.zeros(5, 1, SIZE, SIZE)
    masks[:3, :, 4:10, 5:12] = 1  # two images without a lesion
    options = dict(baseline="blur", steps=4, blur_sigma=2.0, seed=1, show_progress=False)
    maps = {m: map_set.maps[m] for m in ("grad_cam", "random")}
    scores, curves = compare.score_maps(model, images, maps, masks, map_set.target, **options)
    for method, values in maps.items():
        expected = metrics.explanation_scores(model, images, values, masks, map_set.target,
                                              **options)
        assert list(scores[method]) == list(expected)
        for metric in expected:
            torch.testing.assert_close(scores[method][metric], expected[metric],
                                       equal_nan=True)
        assert torch.isnan(scores[method]["pointing_game"][3:]).all()
        assert curves[method]["deletion"].scores.shape == (5, 5)
        torch.testing.assert_close(curves[method]["insertion"].auc,
                                   scores[method]["insertion_auc"])


def test_region_ratio_of_known_maps():
    region = torch.zeros(4, 1, 4, 4, dtype=torch.bool)
    region[:3, :, :2, :] = True  # half of each image; the last image has no region
    uniform = torch.ones(4, 1, 4, 4)
    only_outside = (~region).float()
    only_inside = region.float()
    torch.testing.assert_close(compare.region_ratio(uniform, region)[:3],
                               torch.ones(3, dtype=torch.float64))
    assert compare.region_ratio(only_outside, region)[:3].tolist() == [0.0, 0.0, 0.0]
    assert compare.region_ratio(only_inside, region)[:3].tolist() == [2.0, 2.0, 2.0]
    assert torch.isnan(compare.region_ratio(uniform, region)[3])
    assert torch.isnan(compare.region_ratio(torch.zeros(4, 1, 4, 4), region)).all()
    with pytest.raises(ValueError, match="same shape"):
        compare.region_ratio(uniform, region[:, :, :2])


def test_glue_key_makes_valid_glue_names_from_table_labels():
    assert compare.glue_key("vgg16", "Grad-CAM", "top_k_iou") == "vgg16_Grad_CAM_top_k_iou"
    assert compare.glue_key("rho", "resnet18", "AM change", "local sensitivity") == \
        "rho_resnet18_AM_change_local_sensitivity"
    assert tuple(compare.METRIC_LABELS) == metrics.METRICS
