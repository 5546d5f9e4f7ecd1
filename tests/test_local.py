"""Finite-difference pixel sensitivity: exactness, the gradient limit, occlusion, bad input."""
import math

import pytest
import torch

from lib.kernels.local import correlation, fd_sensitivity, gradient, relative_error

NUM_CLASSES = 5


def small_cnn(activation, dtype=torch.float64, seed=0):
    """A 3-channel 8 x 8 classifier: two convolutions (one strided) and a linear head."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), activation(),
        torch.nn.Conv2d(4, 4, 3, padding=1, stride=2), activation(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, NUM_CLASSES))
    return net.to(dtype).eval()


@pytest.fixture(scope="module")
def smooth_net():
    return small_cnn(torch.nn.Tanh)


@pytest.fixture(scope="module")
def relu_net():
    return small_cnn(torch.nn.ReLU)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


TARGETS = [1, 3]


def naive_map(model, x, targets, delta, scheme="forward", patch=1, channels="each",
              output="logit"):
    """One forward per perturbation and image, written independently of lib.kernels.local."""
    def score(image, target):
        logits = model(image.unsqueeze(0))[0]
        return (logits.softmax(0) if output == "probability" else logits)[target]

    num_images, num_channels, height, width = x.shape
    everything = [list(range(num_channels))]
    groups = [[c] for c in range(num_channels)] if channels == "each" else everything
    result = torch.zeros(num_images, len(groups), height, width, dtype=x.dtype)
    with torch.no_grad():
        for b in range(num_images):
            for g, group in enumerate(groups):
                for i in range(0, height, patch):
                    for j in range(0, width, patch):
                        up, down = x[b].clone(), x[b].clone()
                        up[group, i:i + patch, j:j + patch] += delta
                        down[group, i:i + patch, j:j + patch] -= delta
                        if scheme == "forward":
                            value = (score(up, targets[b]) - score(x[b], targets[b])) / delta
                        else:
                            value = (score(up, targets[b]) - score(down, targets[b])) / (2 * delta)
                        result[b, g, i:i + patch, j:j + patch] = value
    return result


@pytest.mark.parametrize("scheme, patch, channels, output, chunk_size", [
    ("forward", 1, "each", "logit", 7),        # 7 does not divide the 192 perturbations
    ("central", 1, "all", "probability", 5),
    ("forward", 2, "all", "probability", None),
    ("central", 4, "each", "logit", 1),
])
def test_equals_naive_per_pixel_loop(relu_net, images, scheme, patch, channels, output,
                                     chunk_size):
    ours = fd_sensitivity(relu_net, images, TARGETS, 0.3, scheme=scheme, patch=patch,
                          channels=channels, output=output, chunk_size=chunk_size)
    naive = naive_map(relu_net, images, TARGETS, 0.3, scheme, patch, channels, output)
    # float64: only the last bits of batched versus single-image arithmetic may differ.
    torch.testing.assert_close(ours, naive, rtol=0, atol=1e-12)


def test_result_shape_dtype_device(relu_net, images):
    each = fd_sensitivity(relu_net, images, 0, 0.1)
    every = fd_sensitivity(relu_net, images, 0, 0.1, channels="all", patch=2)
    assert each.shape == (2, 3, 8, 8) and every.shape == (2, 1, 8, 8)
    assert each.dtype == every.dtype == torch.float64
    assert each.device == images.device


def test_chunk_size_does_not_change_the_map(smooth_net, images):
    one = fd_sensitivity(smooth_net, images, TARGETS, 1e-3, chunk_size=1)
    many = fd_sensitivity(smooth_net, images, TARGETS, 1e-3, chunk_size=1000)
    torch.testing.assert_close(one, many, rtol=0, atol=1e-9)


@pytest.mark.parametrize("patch, channels", [(1, "each"), (2, "all")])
def test_converges_to_autograd_gradient(smooth_net, images, patch, channels):
    grad = gradient(smooth_net, images, TARGETS, patch=patch, channels=channels)

    def error(delta, scheme):
        fd = fd_sensitivity(smooth_net, images, TARGETS, delta, scheme=scheme, patch=patch,
                            channels=channels)
        return ((fd - grad).norm() / grad.norm()).item()

    forward = [error(d, "forward") for d in (1e-1, 1e-2, 1e-3)]
    central = [error(d, "central") for d in (1e-1, 1e-2, 1e-3)]
    # First order: 10x smaller delta, about 10x smaller error; second order: about 100x.
    assert all(5 < a / b < 20 for a, b in zip(forward, forward[1:]))
    assert all(50 < a / b < 200 for a, b in zip(central, central[1:]))
    assert forward[-1] < 1e-3 and central[-1] < 1e-6


def test_probability_target_converges_to_its_gradient(smooth_net, images):
    fd = fd_sensitivity(smooth_net, images, TARGETS, 1e-4, scheme="central",
                        output="probability")
    grad = gradient(smooth_net, images, TARGETS, output="probability")
    torch.testing.assert_close(fd, grad, rtol=0, atol=1e-8 * grad.abs().max().item())


def test_gradient_layouts_agree(smooth_net, images):
    each = gradient(smooth_net, images, TARGETS)
    every = gradient(smooth_net, images, TARGETS, channels="all")
    patched = gradient(smooth_net, images, TARGETS, channels="all", patch=4)
    torch.testing.assert_close(every, each.sum(1, keepdim=True))
    torch.testing.assert_close(patched[..., 0, 0], every[..., :4, :4].sum((-2, -1)))
    assert (patched[..., :4, :4] == patched[..., :1, :1]).all()


def test_negative_delta_is_the_backward_difference(relu_net, images):
    backward = fd_sensitivity(relu_net, images, TARGETS, -0.2)
    naive = naive_map(relu_net, images, TARGETS, -0.2)
    torch.testing.assert_close(backward, naive, rtol=0, atol=1e-12)


def test_patch_is_occlusion_with_baseline_x_plus_delta(relu_net, images):
    captum = pytest.importorskip("captum.attr")
    delta, patch = 0.5, 2
    targets = torch.tensor(TARGETS)
    ours = fd_sensitivity(relu_net, images, targets, delta, patch=patch, channels="all")
    mask = torch.arange(16).view(4, 4).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    ablation = captum.FeatureAblation(relu_net).attribute(
        images, baselines=images + delta, target=targets, feature_mask=mask.view(1, 1, 8, 8),
        perturbations_per_eval=4)
    occlusion = captum.Occlusion(relu_net).attribute(
        images, sliding_window_shapes=(1, patch, patch), strides=(1, patch, patch),
        baselines=images + delta, target=targets, perturbations_per_eval=4)
    per_channel = fd_sensitivity(relu_net, images, targets, delta, patch=patch)
    # Captum's attribution is f(x) - f(x with the patch replaced by the baseline).
    torch.testing.assert_close(ours.expand_as(ablation), -ablation / delta, rtol=0, atol=1e-12)
    # Occlusion returns float32 whatever the input.
    torch.testing.assert_close(per_channel, -occlusion.double() / delta, rtol=1e-5, atol=1e-6)


def test_respects_the_sign_of_the_response():
    # Score = sum of channel 0 minus sum of channel 1: +1 and -1 everywhere, exactly.
    class Linear(torch.nn.Module):
        def forward(self, x):
            score = x[:, 0].sum((-2, -1)) - x[:, 1].sum((-2, -1))
            return torch.stack([score, -score], dim=1)

    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    s = fd_sensitivity(Linear().eval(), x, 0, 0.25)
    torch.testing.assert_close(s[0, 0], torch.ones(4, 4, dtype=torch.float64))
    torch.testing.assert_close(s[0, 1], -torch.ones(4, 4, dtype=torch.float64))
    torch.testing.assert_close(s[0, 2], torch.zeros(4, 4, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"delta": 0.0}, ValueError, "non-zero"),
    ({"delta": math.nan}, ValueError, "finite"),
    ({"delta": math.inf}, ValueError, "finite"),
    ({"delta": "0.1"}, TypeError, "real number"),
    ({"delta": True}, TypeError, "real number"),
    ({"patch": 3}, ValueError, "must divide"),
    ({"patch": 16}, ValueError, "larger than"),
    ({"patch": 0}, ValueError, "positive integer"),
    ({"patch": 2.0}, ValueError, "positive integer"),
    ({"target": 5}, ValueError, r"0\.\.4"),
    ({"target": -1}, ValueError, "non-negative"),
    ({"target": [0, 1, 2]}, ValueError, "one class per image"),
    ({"target": torch.tensor([0.0, 1.0])}, TypeError, "integer"),
    ({"target": "cat"}, TypeError, "target"),
    ({"scheme": "backward"}, ValueError, "'forward', 'central'"),
    ({"channels": "red"}, ValueError, "'each', 'all'"),
    ({"output": "softmax"}, ValueError, "'logit', 'probability'"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
])
def test_bad_arguments_are_rejected(relu_net, images, kwargs, error, message):
    arguments = {"target": TARGETS, "delta": 0.1, **kwargs}
    with pytest.raises(error, match=message):
        fd_sensitivity(relu_net, images, **arguments)


@pytest.mark.parametrize("x, error, message", [
    (torch.rand(3, 8, 8, dtype=torch.float64), ValueError, "N x C x H x W"),
    (torch.zeros(0, 3, 8, 8, dtype=torch.float64), ValueError, "non-empty"),
    (torch.ones(2, 3, 8, 8, dtype=torch.long), TypeError, "floating-point"),
    (torch.full((2, 3, 8, 8), math.nan, dtype=torch.float64), ValueError, "NaN"),
    ([[0.0]], TypeError, "floating-point"),
])
def test_bad_images_are_rejected(relu_net, x, error, message):
    with pytest.raises(error, match=message):
        fd_sensitivity(relu_net, x, 0, 0.1)


def test_bad_models_are_rejected(images):
    training = small_cnn(torch.nn.ReLU).train()
    with pytest.raises(ValueError, match="eval"):
        fd_sensitivity(training, images, 0, 0.1)
    with pytest.raises(ValueError, match="batch, classes"):
        fd_sensitivity(lambda x: x.sum(), images, 0, 0.1)
    with pytest.raises(TypeError, match="callable"):
        fd_sensitivity("vgg16", images, 0, 0.1)
    with pytest.raises(ValueError, match="must divide"):
        gradient(small_cnn(torch.nn.ReLU), images, 0, patch=3)


def test_map_comparisons():
    reference = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 0.0, 0.0]])
    maps = torch.stack([2 * reference[0] + 1, -reference[1]])
    torch.testing.assert_close(correlation(maps, reference), torch.tensor([1.0, -1.0]))
    expected = torch.tensor([(reference[0] + 1).norm() / reference[0].norm(), 2.0])
    torch.testing.assert_close(relative_error(maps, reference), expected)
    with pytest.raises(ValueError, match="same shape"):
        correlation(maps, reference[:1])


class _SmallMemory(torch.nn.Module):
    """Wraps a model and runs out of memory on forwards of more than ``limit`` images."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"{x.shape[0]} images do not fit")
        return self.model(x)


def test_automatic_chunks_shrink_when_memory_runs_out(relu_net, images):
    small = _SmallMemory(relu_net, limit=10).eval()
    shrunk = fd_sensitivity(small, images, TARGETS, 0.3)  # the CPU default asks for 66 images
    naive = naive_map(relu_net, images, TARGETS, 0.3)
    torch.testing.assert_close(shrunk, naive, rtol=0, atol=1e-12)
    with pytest.raises(torch.OutOfMemoryError):
        fd_sensitivity(small, images, TARGETS, 0.3, chunk_size=32)


def test_automatic_chunk_fills_the_cpu_batch(relu_net, images):
    from lib.kernels.local import CPU_IMAGES_PER_FORWARD, auto_chunk_size

    forward = auto_chunk_size(relu_net, images, "forward")
    central = auto_chunk_size(relu_net, images, "central")
    assert images.shape[0] * (forward + 1) == CPU_IMAGES_PER_FORWARD  # with the reference
    assert 2 * images.shape[0] * central == CPU_IMAGES_PER_FORWARD
    assert auto_chunk_size(relu_net, images.repeat(50, 1, 1, 1)) == 1
