"""Model-parameter randomisation on a toy CNN: a weight-dependent map changes, an edge detector
does not; the cascade's order, copies, seeds and similarity measures."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from lib.kernels import sanity, similarity

EXECUTION_ORDER = ["conv1", "norm", "conv2", "head"]


class ToyCNN(nn.Module):
    """Layers defined in another order than they run: the head first, then the convolutions."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.norm(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def toy_model():
    torch.manual_seed(123)
    model = ToyCNN()
    with torch.no_grad():  # batch norm with statistics of its own, as after training
        model.norm.running_mean.uniform_(-0.1, 0.1)
        model.norm.running_var.uniform_(0.5, 2.0)
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.1, 0.1)
    return model.eval()


def toy_images(count=6, size=24):
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(0))


def gradient(model, images):
    inputs = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(inputs)[:, 0].sum(), inputs)
    return grad


SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edges(model, images):
    """Sobel gradient magnitude of the input; ignores the model."""
    across = F.conv2d(images, SOBEL.view(1, 1, 3, 3), padding=1)
    down = F.conv2d(images, SOBEL.T.reshape(1, 1, 3, 3), padding=1)
    return (across ** 2 + down ** 2).sqrt()


def states(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def changed_layers(model, reference):
    """The execution-order layers whose weights or statistics differ from ``reference``'s."""
    now = model.state_dict()
    return [name for name in EXECUTION_ORDER
            if any(not torch.equal(now[key], value) for key, value in reference.items()
                   if key.startswith(name + "."))]


# --- the two kinds of map ----------------------------------------------------------------

def test_a_gradient_map_changes_when_the_weights_are_randomised():
    result = sanity.cascading_randomization(toy_model(), gradient, toy_images(),
                                            show_progress=False)
    means = result.table.groupby("step")[["spearman", "ssim"]].mean()
    assert means.loc[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert means.loc[4, "spearman"] < 0.5 and means.loc[4, "ssim"] < 0.5
    assert len(result.table) == 5 * 6


def test_an_edge_detector_does_not_change_and_is_flagged():
    model, images = toy_model(), toy_images()
    insensitive = sanity.cascading_randomization(model, edges, images, show_progress=False)
    assert insensitive.table["spearman"].tolist() == pytest.approx([1.0] * 30, abs=1e-12)
    assert insensitive.table["ssim"].tolist() == pytest.approx([1.0] * 30, abs=1e-12)
    sensitive = sanity.cascading_randomization(model, gradient, images, show_progress=False)
    flags = sanity.flag_insensitive({"edges": insensitive, "gradient": sensitive})
    assert flags["method"].tolist() == ["edges", "gradient"]
    assert flags["insensitive"].tolist() == [True, False]
    assert flags["threshold"].tolist() == [0.5, 0.5]
    # The gradient's lowest step is one with layers randomised, never the intact model.
    assert flags["depth"].iloc[1] >= 1


def test_the_cascade_visits_layers_top_down_in_execution_order():
    model, images = toy_model(), toy_images()
    assert [name for name, _ in model.named_children()][0] == "head"  # defined first
    assert sanity.parameterised_layers(model, images) == EXECUTION_ORDER
    original = states(model)
    seen = []

    def recording(working, batch):
        seen.append(changed_layers(working, original))
        return gradient(working, batch)
    result = sanity.cascading_randomization(model, recording, images, show_progress=False)
    steps = result.table.drop_duplicates("step")
    assert steps["layer"].tolist() == ["(none)", "head", "conv2", "norm", "conv1"]
    assert steps["depth"].tolist() == [0, 1, 2, 3, 4]
    assert result.layers == EXECUTION_ORDER
    # Call 0: the intact model; 1: again intact (step 0); then one more layer each step.
    assert seen == [[], [], ["head"], ["conv2", "head"], ["norm", "conv2", "head"],
                    ["conv1", "norm", "conv2", "head"]]


def test_independent_mode_randomises_one_layer_at_a_time():
    model, images = toy_model(), toy_images()
    original = states(model)
    seen = []

    def recording(working, batch):
        seen.append(changed_layers(working, original))
        return gradient(working, batch)
    independent = sanity.cascading_randomization(model, recording, images, mode="independent",
                                                 show_progress=False)
    assert seen == [[], [], ["head"], ["conv2"], ["norm"], ["conv1"]]
    # The top layer gets the same random weights in both modes.
    cascade = sanity.cascading_randomization(model, gradient, images, show_progress=False)
    assert torch.equal(independent.maps[1], cascade.maps[1])
    assert not torch.equal(independent.maps[4], cascade.maps[4])


def test_batch_norm_is_reset_to_its_initial_state():
    model, images = toy_model(), toy_images()
    captured = {}

    def capture(working, batch):
        captured[len(captured)] = {k: v.clone() for k, v in working.norm.state_dict().items()}
        return gradient(working, batch)
    sanity.cascading_randomization(model, capture, images, layers=["norm"], show_progress=False)
    after = captured[2]  # calls: intact, step 0, step 1 (norm randomised)
    assert torch.equal(after["running_mean"], torch.zeros(4))
    assert torch.equal(after["running_var"], torch.ones(4))
    assert torch.equal(after["weight"], torch.ones(4))
    assert torch.equal(after["bias"], torch.zeros(4))


def test_the_model_and_the_callers_random_state_are_untouched():
    model, images = toy_model(), toy_images()
    before = states(model)
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    for mode in sanity.MODES:
        sanity.cascading_randomization(model, edges, images, mode=mode, show_progress=False)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert not model.training


def test_seeds_reproduce_and_differ():
    model, images = toy_model(), toy_images()
    first = sanity.cascading_randomization(model, gradient, images, seed=3, show_progress=False)
    again = sanity.cascading_randomization(model, gradient, images, seed=3, show_progress=False)
    other = sanity.cascading_randomization(model, gradient, images, seed=4, show_progress=False)
    assert first.table.equals(again.table)
    later = first.table["step"] > 0
    assert not np.allclose(first.table.loc[later, "spearman"], other.table.loc[later, "spearman"])


def test_chosen_layers_run_in_execution_order_whatever_order_they_are_given_in():
    result = sanity.cascading_randomization(toy_model(), gradient, toy_images(),
                                            layers=["conv1", "head"], show_progress=False)
    assert result.table.drop_duplicates("step")["layer"].tolist() == ["(none)", "head", "conv1"]
    assert result.table.drop_duplicates("step")["depth"].tolist() == [0, 1, 2]


def test_a_block_is_randomised_in_one_step():
    torch.manual_seed(5)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
    model = nn.Sequential(OrderedDict(body=body, pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten(), head=nn.Linear(8, 2))).eval()
    with torch.no_grad():
        body[1].running_var.fill_(2.0)
    images = toy_images()
    original = states(model)
    seen = []

    def recording(working, batch):
        now = working.state_dict()
        seen.append(sorted({key.rsplit(".", 1)[0] for key, value in original.items()
                            if not torch.equal(now[key], value)}))
        return gradient(working, batch)
    result = sanity.cascading_randomization(model, recording, images, layers=["body", "head"],
                                            show_progress=False)
    assert result.steps == {"body": ["body.0", "body.1", "body.3"], "head": ["head"]}
    assert result.table.drop_duplicates("step")["layer"].tolist() == ["(none)", "head", "body"]
    assert seen[-1] == ["body.0", "body.1", "body.3", "head"]
    # A block gets the weights its layers get one by one.
    layerwise = sanity.cascading_randomization(model, gradient, images, show_progress=False)
    assert torch.equal(result.maps[2], layerwise.maps[4])
    with pytest.raises(ValueError, match="layers 'body' and 'body.0' overlap"):
        sanity.cascading_randomization(model, gradient, images, layers=["body", "body.0"])
    # The same step made of modules with no common parent, named by a dict.
    grouped = sanity.cascading_randomization(
        model, gradient, images, layers={"head": ["head"], "convs": ["body.0", "body.1",
                                                                    "body.3"]},
        show_progress=False)
    assert grouped.steps == {"convs": ["body.0", "body.1", "body.3"], "head": ["head"]}
    assert torch.equal(grouped.maps[2], result.maps[2])
    with pytest.raises(TypeError, match="dict of step names"):
        sanity.cascading_randomization(model, gradient, images, layers={"head": "head"})


def test_buffer_only_modules_are_not_layers_but_batch_norm_without_affine_is():
    class Normalise(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(0.5))

        def forward(self, x):
            return x - self.mean
    model = nn.Sequential(Normalise(), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False),
                          nn.Flatten(), nn.LazyLinear(2))
    model(toy_images(1))
    assert sanity.parameterised_layers(model.eval(), toy_images(1)) == ["1", "2", "4"]


def test_kept_maps_are_the_maps_the_table_compares():
    model, images = toy_model(), toy_images()
    result = sanity.cascading_randomization(model, gradient, images, show_progress=False)
    assert sorted(result.maps) == [0, 1, 2, 3, 4]
    assert torch.equal(result.original, gradient(model, images))
    step = result.table[result.table["step"] == 2]
    direct = similarity.compare_maps(result.original, result.maps[2])
    assert step["spearman"].tolist() == direct["spearman"].tolist()
    assert step["ssim"].tolist() == direct["ssim"].tolist()
    lean = sanity.cascading_randomization(model, gradient, images, keep_maps=False,
                                          similarity="spearman", show_progress=False)
    assert lean.maps == {} and "ssim" not in lean.table.columns


# --- similarity measures -----------------------------------------------------------------

def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (4, 1, 12, 12), generator=generator).double()
    b = (a + torch.randint(0, 4, (4, 1, 12, 12), generator=generator)).double()
    expected = [spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(4)]
    assert similarity.rank_correlation(a, b).tolist() == pytest.approx(expected, abs=1e-12)
    assert similarity.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]])).tolist() == [
        [2.5, 0.0, 2.5, 1.0]]


def test_ssim_matches_skimage():
    generator = torch.Generator().manual_seed(2)
    a = torch.rand(3, 1, 32, 40, generator=generator, dtype=torch.float64)
    b = (0.6 * a + 0.4 * torch.rand(3, 1, 32, 40, generator=generator, dtype=torch.float64))
    options = dict(data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    expected = [structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), **options)
                for i in range(3)]
    assert similarity.ssim(a, b).tolist() == pytest.approx(expected, abs=1e-10)
    colour_a = torch.rand(2, 3, 16, 16, generator=generator, dtype=torch.float64)
    colour_b = (colour_a + torch.rand(2, 3, 16, 16, generator=generator,
                                      dtype=torch.float64)) / 2
    expected = [structural_similarity(colour_a[i].numpy(), colour_b[i].numpy(), channel_axis=0,
                                      **options) for i in range(2)]
    assert similarity.ssim(colour_a, colour_b).tolist() == pytest.approx(expected, abs=1e-10)
    assert similarity.ssim(a, a).tolist() == [1.0, 1.0, 1.0]


def test_compare_maps_uses_absolute_values_unless_told_not_to():
    maps = gradient(toy_model(), toy_images(3))
    flipped = similarity.compare_maps(maps, -maps)
    assert flipped["spearman"].tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    assert flipped["ssim"].tolist() == pytest.approx([1.0] * 3, abs=1e-12)
    signed = similarity.compare_maps(maps, -maps, absolute=False)
    assert signed["spearman"].tolist() == pytest.approx([-1.0] * 3, abs=1e-12)
    # SSIM rescales each map to [0, 1]: a scaled and shifted map is the same map.
    rescaled = similarity.compare_maps(maps.abs(), 3 * maps.abs() + 1, similarity=["ssim"])
    assert list(rescaled) == ["ssim"]
    assert rescaled["ssim"].tolist() == pytest.approx([1.0] * 3, abs=1e-6)  # float32 input


def test_a_constant_map_has_no_rank_correlation_and_is_left_out_of_the_summary():
    def partly_constant(model, images):
        maps = gradient(model, images)
        if not torch.equal(model.head.weight, toy_model().head.weight):
            maps[0] = 1.0  # image 0's map goes flat once the head is randomised
        return maps
    result = sanity.cascading_randomization(toy_model(), partly_constant, toy_images(),
                                            show_progress=False)
    assert math.isnan(result.table.query("step == 1 and image == 0")["spearman"].item())
    table = sanity.summary(result)
    spearman = table[table["similarity"] == "spearman"].set_index("step")
    assert spearman.loc[0, "n"] == 6 and spearman.loc[1, "n"] == 5
    expected = result.table.query("step == 1 and image > 0")["spearman"].mean()
    assert spearman.loc[1, "mean"] == pytest.approx(expected, abs=1e-12)


def test_summary_gives_a_mean_and_interval_per_step_and_measure():
    result = sanity.cascading_randomization(toy_model(), gradient, toy_images(),
                                            show_progress=False)
    table = sanity.summary(result, n_boot=500, seed=1)
    assert list(table.columns) == ["step", "layer", "depth", "similarity", "mean", "ci_low",
                                   "ci_high", "n"]
    assert len(table) == 5 * 2
    means = result.table.groupby("step")["ssim"].mean()
    ssim = table[table["similarity"] == "ssim"].set_index("step")
    assert ssim["mean"].tolist() == pytest.approx(means.tolist(), abs=1e-12)
    assert (ssim["ci_low"] <= ssim["mean"]).all() and (ssim["mean"] <= ssim["ci_high"]).all()
    assert table.equals(sanity.summary(result, n_boot=500, seed=1))


def test_flagging_can_look_at_the_top_layers_only():
    result = sanity.cascading_randomization(toy_model(), edges, toy_images(),
                                            show_progress=False)
    flags = sanity.flag_insensitive(result, depth=1, measure="ssim")
    assert flags[["method", "measure", "depth", "layer"]].values.tolist() == [
        ["map", "ssim", 1, "head"]]
    assert bool(flags["insensitive"].item())
    with pytest.raises(ValueError, match="measure 'ssim' was not computed"):
        sanity.flag_insensitive(
            sanity.cascading_randomization(toy_model(), edges, toy_images(),
                                           similarity="spearman", show_progress=False),
            measure="ssim")
    with pytest.raises(ValueError, match="threshold must be a number in \\[-1, 1\\]"):
        sanity.flag_insensitive(result, threshold=2)


def test_shuffled_labels_permute_the_labels():
    labels = torch.arange(50) % 3
    shuffled = sanity.shuffled_labels(labels, seed=0)
    assert torch.equal(shuffled.sort().values, labels.sort().values)
    assert not torch.equal(shuffled, labels)
    assert torch.equal(shuffled, sanity.shuffled_labels(labels, seed=0))
    assert not torch.equal(shuffled, sanity.shuffled_labels(labels, seed=1))
    with pytest.raises(ValueError, match="labels must be a vector"):
        sanity.shuffled_labels(torch.zeros(2, 2), seed=0)


# --- bad inputs --------------------------------------------------------------------------

def test_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="training mode"):
        sanity.cascading_randomization(toy_model().train(), gradient, toy_images())


def test_maps_of_the_wrong_shape_are_refused():
    def small(model, images):
        return gradient(model, images)[..., ::2, ::2]
    with pytest.raises(ValueError, match=r"H x W = 24 x 24 .* returned shape \(6, 1, 12, 12\)"):
        sanity.cascading_randomization(toy_model(), small, toy_images(), show_progress=False)

    def per_batch(model, images):
        return gradient(model, images)[0]
    with pytest.raises(ValueError, match="N x K x H x W"):
        sanity.cascading_randomization(toy_model(), per_batch, toy_images(),
                                       show_progress=False)


def test_nan_maps_are_refused_with_the_step_named():
    def breaks_at_the_head(model, images):
        maps = gradient(model, images)
        if not torch.equal(model.head.weight, toy_model().head.weight):
            maps[0, 0, 0, 0] = math.nan
        return maps
    with pytest.raises(ValueError, match="NaN or infinite values at step 1 \\(layer 'head'\\)"):
        sanity.cascading_randomization(toy_model(), breaks_at_the_head, toy_images(),
                                       show_progress=False)


def test_unknown_names_are_refused():
    model, images = toy_model(), toy_images()
    with pytest.raises(ValueError, match="similarity must name one or more of 'spearman', "
                                         "'ssim'; got 'pearson'"):
        sanity.cascading_randomization(model, gradient, images, similarity="pearson")
    with pytest.raises(ValueError, match="mode must be one of"):
        sanity.cascading_randomization(model, gradient, images, mode="all")
    with pytest.raises(ValueError, match="no such module; parameterised layers in execution "
                                         "order: conv1, norm, conv2, head"):
        sanity.cascading_randomization(model, gradient, images, layers=["fc"])
    with pytest.raises(ValueError, match="no parameterised layer inside it runs"):
        sanity.cascading_randomization(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()).eval(),
                                       edges, images, layers=["1"])
    with pytest.raises(TypeError, match="explain must be a callable"):
        sanity.cascading_randomization(model, "gradient", images)


def test_a_layer_without_reset_parameters_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.factor = nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x * self.factor
    model = nn.Sequential(nn.Conv2d(1, 1, 3), Scale()).eval()
    with pytest.raises(ValueError, match="layer '1' \\(Scale\\) has no reset_parameters"):
        sanity.cascading_randomization(model, edges, toy_images(), show_progress=False)


def test_ssim_needs_maps_as_large_as_its_window():
    with pytest.raises(ValueError, match="SSIM needs maps of at least 11 x 11"):
        similarity.compare_maps(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
    small = similarity.compare_maps(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8),
                                similarity="spearman")
    assert small["spearman"].shape == (2,)
