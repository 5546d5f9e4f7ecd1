"""Activation maximisation: targets rise well beyond random images, seeds, shapes, bad input."""
from collections import OrderedDict

import pytest
import torch
from torch import nn

from lib.kernels import am
from lib.kernels.blur import gaussian_blur

SIZE = 16


def tiny_cnn(in_channels=3, num_classes=3):
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 8, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(8, 8, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8, num_classes)),
    ])).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_cnn()


TARGETS = [am.class_logit(0), am.class_logit(2), am.channel("relu2", 3),
           am.unit("conv2", 5), am.unit("conv2", 1, position=(2, 3))]


def best_of_random_images(model, targets, count=512):
    """Each target's largest value over ``count`` uniform random images."""
    noise = torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    values = [am.target_values(model, noise, [t] * count) for t in targets]
    return torch.stack([v.max() for v in values])


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_every_target_ends_above_the_best_random_image(model, param):
    result = am.maximize(model, TARGETS, size=SIZE, param=param, transforms=None, steps=40,
                         lr=0.1, show_progress=False)
    best_random = best_of_random_images(model, TARGETS)
    assert torch.all(result.final_values > best_random), (result.final_values, best_random)
    # The values reported are those of the returned images.
    torch.testing.assert_close(result.final_values, am.target_values(model, result.images, TARGETS))


def test_the_ascent_rises_under_random_transformations(model):
    result = am.maximize(model, TARGETS[:3], size=SIZE, steps=30, lr=0.1,
                         transforms=am.Transforms(jitter=2, scale=(0.9, 1.1), rotate=10),
                         show_progress=False)
    assert torch.all(result.final_values > result.start_values)
    assert torch.all(result.history[-5:].mean(dim=0) > result.history[:5].mean(dim=0))


def test_shapes_range_and_history(model):
    result = am.maximize(model, [0, am.channel("conv1", 2)], size=(SIZE, SIZE + 4), steps=3,
                         show_progress=False)
    assert result.images.shape == (2, 3, SIZE, SIZE + 4)
    assert result.history.shape == (3, 2)
    assert result.start_values.shape == result.final_values.shape == (2,)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert [str(t) for t in result.targets] == ["class 0", "conv1:2"]


def test_equal_seeds_give_equal_images_and_other_seeds_do_not(model):
    def run(seed):
        return am.maximize(model, TARGETS[:2], size=SIZE, steps=5, seed=seed,
                           show_progress=False).images
    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_grayscale_and_rgb_inputs():
    gray_model = tiny_cnn(in_channels=1)
    gray = am.maximize(gray_model, [1], size=SIZE, channels=1, steps=3, show_progress=False)
    assert gray.images.shape == (1, 1, SIZE, SIZE)
    # A grayscale image fed to an RGB network through a preprocessing step that replicates it.
    rgb_model = tiny_cnn(in_channels=3)
    replicated = am.maximize(rgb_model, [1], size=SIZE, channels=1, steps=20, lr=0.1,
                             preprocess=lambda x: x.expand(-1, 3, -1, -1), show_progress=False)
    assert replicated.images.shape == (1, 1, SIZE, SIZE)
    assert replicated.final_values > replicated.start_values
    rgb = am.maximize(rgb_model, [1], size=SIZE, channels=3, steps=3, show_progress=False)
    assert rgb.images.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(RuntimeError):
        am.maximize(rgb_model, [1], size=SIZE, channels=1, steps=1, show_progress=False)


@pytest.mark.parametrize("penalty, measure", [
    ("l2", lambda x: (x - 0.5).pow(2).mean(dim=(1, 2, 3))),
    ("tv", am.total_variation),
    ("blur", lambda x: (x - gaussian_blur(x, 1.0)).pow(2).mean(dim=(1, 2, 3))),
])
def test_each_penalty_reduces_what_it_penalises(model, penalty, measure):
    options = dict(size=SIZE, param="pixel", transforms=None, steps=25, lr=0.1,
                   show_progress=False)
    free = am.maximize(model, TARGETS[:3], **options)
    held = am.maximize(model, TARGETS[:3], **options, **{penalty: 50.0})
    assert torch.all(measure(held.images) < 0.7 * measure(free.images))


def test_total_variation_of_known_images():
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1  # columns alternate 1, 0: every horizontal neighbour differs by 1
    assert am.total_variation(stripes).item() == pytest.approx(1.0)
    assert am.total_variation(torch.full((2, 3, 5, 5), 0.3)).tolist() == [0.0, 0.0]


def test_identity_transforms_leave_images_unchanged():
    images = torch.rand(3, 2, 12, 12)
    same = am.Transforms(jitter=0, scale=(1, 1), rotate=0)(images, torch.Generator())
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)


def test_jitter_shifts_by_whole_pixels():
    images = torch.rand(4, 1, 12, 12)
    jitter = am.Transforms(jitter=2, scale=(1, 1), rotate=0)
    moved = jitter(images, torch.Generator().manual_seed(0))
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    found = []
    for image, shifted in zip(images, moved):
        # Away from the reflected border, the result is the image rolled by a whole shift.
        errors = [(torch.roll(image, shift, dims=(1, 2)) - shifted)[:, 2:-2, 2:-2].abs().max()
                  for shift in shifts]
        assert min(errors) < 1e-5
        found.append(shifts[min(range(len(shifts)), key=errors.__getitem__)])
    assert any(shift != (0, 0) for shift in found)


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_image_specific_start_is_the_image(model, param):
    images = torch.rand(2, 3, SIZE, SIZE)
    result = am.maximize_from(model, images, [0, 2], param=param, steps=1, lr=1e-9,
                              show_progress=False)
    torch.testing.assert_close(result.start, images.clamp(am.EDGE, 1 - am.EDGE),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(result.images, result.start, atol=1e-5, rtol=0)


def test_image_specific_ascent_raises_the_target_and_stays_close(model):
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    loose = am.maximize_from(model, images, am.class_logit(1), l2=0.0, steps=20, lr=0.1,
                             show_progress=False)
    tight = am.maximize_from(model, images, am.class_logit(1), l2=50.0, steps=20, lr=0.1,
                             show_progress=False)
    assert torch.all(loose.final_values > loose.start_values + 0.02)
    assert torch.all(tight.final_values > tight.start_values)
    tight_size, loose_size = (r.change.abs().mean(dim=(1, 2, 3)) for r in (tight, loose))
    assert torch.all(tight_size < loose_size)
    change_map = loose.change_map()
    assert change_map.shape == (2, 1, SIZE, SIZE) and change_map.min() >= 0
    torch.testing.assert_close(loose.change, loose.images - loose.start)


def test_leaves_the_model_untouched(model):
    am.maximize(model, [0, am.channel("relu1", 0)], size=SIZE, steps=2, show_progress=False)
    am.maximize_from(model, torch.rand(1, 3, SIZE, SIZE), 1, steps=2, show_progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert not model.training


def test_works_when_autograd_is_off(model):
    expected = am.maximize(model, [1], size=SIZE, steps=3, show_progress=False).images
    with torch.inference_mode():
        images = am.maximize(model, [1], size=SIZE, steps=3, show_progress=False).images
    torch.testing.assert_close(images, expected)


@pytest.mark.parametrize("targets, match", [
    ([am.class_logit(3)], r"index out of range.*0\.\.2"),
    ([am.channel("relu2", 8)], r"index out of range.*0\.\.7"),
    ([am.unit("conv2", 0, position=(SIZE, 0))], "position out of range"),
    ([am.unit("fc", 0, position=(1, 1))], "position out of range"),
    ([am.channel("conv9", 0)], "no layer 'conv9'.*conv1"),
])
def test_bad_targets_are_refused(model, targets, match):
    with pytest.raises(ValueError, match=match):
        am.maximize(model, targets, size=SIZE, steps=1, show_progress=False)
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("options, error, match", [
    (dict(param="wavelet"), ValueError, "param must be one of"),
    (dict(decay=-1.0), ValueError, "decay"),
    (dict(l2=-1.0), ValueError, "l2 must be non-negative"),
    (dict(tv=float("nan")), ValueError, "tv must be a finite number"),
    (dict(lr=0.0), ValueError, "lr must be positive"),
    (dict(steps=0), ValueError, "steps"),
    (dict(size=1), ValueError, "size"),
    (dict(channels=0), ValueError, "channels"),
    (dict(transforms="jitter"), TypeError, "Transforms"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_bad_options_are_refused(model, options, error, match):
    with pytest.raises(error, match=match):
        am.maximize(model, [0], **{"size": SIZE, "steps": 1, "show_progress": False, **options})


def test_bad_target_specifications_are_refused(model):
    with pytest.raises(ValueError, match="non-negative int"):
        am.class_logit(-1)
    with pytest.raises(ValueError, match="position"):
        am.unit("conv2", 0, position=(1,))
    with pytest.raises(TypeError, match="targets"):
        am.maximize(model, [], size=SIZE, steps=1)
    with pytest.raises(TypeError, match="lib.kernels.am.Target"):
        am.maximize(model, ["class 0"], size=SIZE, steps=1)
    with pytest.raises(ValueError, match="training mode"):
        am.maximize(tiny_cnn().train(), [0], size=SIZE, steps=1)


def test_bad_transforms_are_refused():
    with pytest.raises(ValueError, match="jitter"):
        am.Transforms(jitter=-1)
    with pytest.raises(ValueError, match="scale"):
        am.Transforms(scale=(1.2, 1.0))
    with pytest.raises(ValueError, match="rotate"):
        am.Transforms(rotate=200)


def test_image_specific_bad_input(model):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        am.maximize_from(model, torch.full((1, 3, SIZE, SIZE), 2.0), 0, steps=1)
    with pytest.raises(ValueError, match="one target per image"):
        am.maximize_from(model, torch.rand(3, 3, SIZE, SIZE), [0, 1], steps=1)
    with pytest.raises(ValueError, match="N x C x H x W"):
        am.maximize_from(model, torch.rand(3, SIZE, SIZE), 0, steps=1)


def test_in_place_operations_after_the_layer_do_not_change_its_value():
    class AddsInPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            out = self.conv(x)
            out += 10.0  # like a residual block's "out += identity"
            return out.relu_().mean(dim=(2, 3))

    model = AddsInPlace().eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    values = am.target_values(model, images, [am.channel("conv", 1), am.unit("conv", 2)])
    with torch.no_grad():
        conv = model.conv(images)
    expected = torch.stack([conv[0, 1].mean(), conv[1, 2, SIZE // 2, SIZE // 2]])
    torch.testing.assert_close(values, expected)


def test_targets_describe_themselves_and_check_their_kind():
    assert str(am.unit("layer4", 3, position=(1, 2))) == "layer4:3 at (1, 2)"
    assert str(am.unit("layer4", 3)) == "layer4:3 at centre"
    with pytest.raises(ValueError, match="kind"):
        am.Target("neuron", 0, "layer4")
    with pytest.raises(ValueError, match="needs one|no layer"):
        am.Target("channel", 0)


def test_a_right_angle_turns_a_non_square_image_without_distortion():
    picture = torch.rand(1, 1, 6, 6)
    framed = torch.zeros(1, 1, 6, 10)
    framed[..., 2:8] = picture  # a square picture in a wide frame
    turned = am.similarity_warp(framed, [90.0], [1.0], [[0, 0]])
    errors = [(turned[..., 2:8] - torch.rot90(picture, k, dims=(2, 3))).abs().max()
              for k in (1, 3)]
    assert min(errors) < 1e-5


def test_zoom_and_shift_of_the_warp():
    images = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(am.similarity_warp(images, [0.0, 0.0], [1.0, 1.0],
                                                  [[0, 0], [0, 0]]), images)
    shifted = am.similarity_warp(images[:1], [0.0], [1.0], [[1, 2]])[0, 0]
    torch.testing.assert_close(shifted[:-2, :-1], images[0, 0, 2:, 1:])
    zoomed = am.similarity_warp(images[:1], [0.0], [2.0], [[0, 0]])[0, 0]
    # Zooming in by 2 about the centre (3.5): output pixel 2 samples input 3.5 - 1.5 / 2 = 2.75.
    weights = torch.tensor([0.25, 0.75])
    expected = weights @ images[0, 0, 2:4, 2:4] @ weights
    torch.testing.assert_close(zoomed[2, 2], expected)


class Linear(torch.nn.Module):
    """logit_0 = sum(w * x): its gradient is w everywhere, whatever x."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.Parameter(weights, requires_grad=False)

    def forward(self, x):
        score = (x * self.weights).flatten(1).sum(1)
        return torch.stack([score, -score], dim=1)


def rank_correlation(a, b):
    from lib.kernels.similarity import rank_correlation as spearman

    return spearman(a[None].double(), b[None].double()).item()


def test_under_adam_and_the_sigmoid_the_change_follows_x_times_one_minus_x():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(1, 1, 16, 16, generator=generator) * 10
    image = torch.rand(1, 1, 16, 16, generator=generator) * 0.98 + 0.01
    model = Linear(weights).eval()
    adam = am.maximize_from(model, image, 0, l2=0.0, steps=1, lr=0.01, show_progress=False)
    change = (adam.images - image).abs()
    assert rank_correlation(change, image * (1 - image)) > 0.95
    assert rank_correlation(change, weights.abs()) < 0.3
    plain = am.maximize_from(model, image, 0, param="clamped", optimizer="gradient",
                             l2=0.0, steps=1, lr=1e-4, show_progress=False)
    change = (plain.images - image).abs()
    assert rank_correlation(change, weights.abs()) > 0.99
    assert rank_correlation(change, image * (1 - image)) < 0.3


def test_clamped_pixels_stay_in_the_unit_interval_and_bad_optimisers_are_refused():
    model = Linear(torch.full((1, 1, 8, 8), 100.0)).eval()
    result = am.maximize(model, [0], size=8, channels=1, param="clamped", steps=3, lr=1.0,
                         optimizer="gradient", transforms=None, show_progress=False)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert torch.equal(result.images, torch.ones_like(result.images))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        am.maximize(model, [0], size=8, channels=1, steps=1, optimizer="sgd",
                    show_progress=False)
