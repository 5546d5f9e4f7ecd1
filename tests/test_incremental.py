"""Incremental inference: equal to brute force for every network, layer and map setting."""
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import DenseNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from lib.ultrasound import models
from lib.kernels.incremental import IncrementalEngine
from lib.kernels.local import fd_sensitivity

NUM_CLASSES = 3
# float64: both sides compute the same numbers in a different order; only rounding differs.
EXACT = {"rtol": 1e-10, "atol": 1e-12}


def randomized(net, seed=0):
    """``net`` in float64 eval mode with random batch-norm statistics (not the identity)."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return net.double().eval()


def images(batch, channels, height, width, seed=1):
    return torch.rand(batch, channels, height, width, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed))


def vgg_like(channels=3):
    torch.manual_seed(0)
    return randomized(nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(8, NUM_CLASSES)))


class SmallResNet(nn.Module):
    """torchvision's residual blocks at a few channels: stem, BasicBlocks, a Bottleneck."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 12, stride=2, downsample=nn.Sequential(
            nn.Conv2d(8, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12)))
        self.layer3 = Bottleneck(12, 4, stride=2, downsample=nn.Sequential(
            nn.Conv2d(12, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)))
        self.layer4 = Bottleneck(16, 4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x))))))


class OddLayers(nn.Module):
    """Dilation, groups, odd, wide and asymmetric padding, even kernels, strides, average
    pooling, ceil-mode pooling, a functional convolution after constant padding, element-wise
    arithmetic with buffers and between branches whose regions differ."""

    def __init__(self, channels=3):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(channels, 6, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(6, 6, 3, padding=1, groups=3, stride=2)
        self.c = nn.Conv2d(6, 6, 2, stride=1, padding=0)          # even kernel, no padding
        self.d = nn.Conv2d(6, 6, 4, padding="same")               # asymmetric padding
        self.e = nn.Conv2d(6, 6, 1, padding=1)                    # padding wider than reach
        self.side = nn.Conv2d(6, 6, 5, padding=4, stride=2, groups=6, bias=False)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.avg_with_pad = nn.AvgPool2d(2, stride=1, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.weight = nn.Parameter(torch.randn(6, 6, 3, 3) * 0.3)
        self.register_buffer("shift", torch.randn(1, 6, 1, 1))
        self.head = nn.Linear(6, NUM_CLASSES)

    def forward(self, x):
        x = torch.tanh(self.a(x)) * 1.5 - self.shift
        y = torch.nn.functional.leaky_relu(self.b(x), 0.1)
        y = self.e(self.d(self.c(y).sigmoid()))
        y = self.avg_with_pad(torch.relu(y))
        z = self.side(x)
        y = self.avg(y) + self.avg(z)
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (1, 0, 2, 1)), self.weight,
                                       padding=0, stride=1)
        y = self.pool(torch.maximum(y, y * 0.5))
        return self.head(y.mean((2, 3)))


def tiny_ultrasound(arch):
    """The book's wrapper (gray input, ImageNet normalisation) around a small network."""
    torch.manual_seed(0)
    net = vgg_like(channels=3) if arch == "vgg16" else SmallResNet()
    return randomized(models.UltrasoundCNN(arch, net))


def both(model, x, target, delta, **settings):
    """The incremental map and the brute-force map."""
    ours = fd_sensitivity(model, x, target, delta, engine="incremental", show_progress=False,
                          **settings)
    brute = fd_sensitivity(model, x, target, delta, engine="full", show_progress=False,
                           **settings)
    return ours, brute


def uses_regions(model, x):
    """Whether the engine computes some layer of ``model`` on regions for ``x``."""
    with torch.inference_mode():
        return IncrementalEngine(model, x).set_images(x).incremental


@pytest.mark.parametrize("scheme, patch, channels, output, chunk_size, delta", [
    ("forward", 1, "each", "logit", None, 0.1),
    ("central", 1, "all", "probability", 7, 0.3),
    ("forward", 2, "all", "logit", 5, -0.2),      # a negative step: the backward difference
    ("central", 4, "each", "probability", 1, 0.05),
    ("forward", 3, "each", "probability", 16, 1.0),
])
def test_vgg_like_every_setting(scheme, patch, channels, output, chunk_size, delta):
    model, x = vgg_like(), images(2, 3, 12, 12)
    assert uses_regions(model, x)
    ours, brute = both(model, x, [0, 2], delta, scheme=scheme, patch=patch, channels=channels,
                       output=output, chunk_size=chunk_size)
    assert ours.shape == brute.shape == (2, 3 if channels == "each" else 1, 12, 12)
    torch.testing.assert_close(ours, brute, **EXACT)


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 13, 17)])
def test_resnet_blocks(shape):
    model, x = randomized(SmallResNet()), images(*shape)
    assert uses_regions(model, x)
    ours, brute = both(model, x, [1] * shape[0], 0.1, channels="each")
    torch.testing.assert_close(ours, brute, **EXACT)
    ours, brute = both(model, x, 2, 0.1, scheme="central", channels="all", output="probability")
    torch.testing.assert_close(ours, brute, **EXACT)


def test_torchvision_resnet18():
    model = randomized(torchvision.models.resnet18(num_classes=NUM_CLASSES))
    x = images(1, 3, 32, 32)
    assert uses_regions(model, x)
    ours, brute = both(model, x, 1, 0.1, patch=8, channels="each", chunk_size=24)
    torch.testing.assert_close(ours, brute, **EXACT)


def test_concatenating_network():
    """torchvision's DenseNet: every layer concatenates all earlier maps of its block."""
    model = randomized(DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8,
                                bn_size=2, num_classes=NUM_CLASSES))
    x = images(1, 3, 16, 16)
    assert uses_regions(model, x)
    ours, brute = both(model, x, 1, 0.1, channels="all")
    torch.testing.assert_close(ours, brute, **EXACT)


@pytest.mark.parametrize("shape, patch", [((1, 2, 13, 17), 1), ((2, 2, 12, 18), 3),
                                          ((1, 1, 9, 9), 1)])
def test_odd_layers_and_sizes(shape, patch):
    model, x = randomized(OddLayers(shape[1])), images(*shape)
    assert uses_regions(model, x)
    ours, brute = both(model, x, [0] * shape[0], 0.2, patch=patch, channels="each")
    torch.testing.assert_close(ours, brute, **EXACT)
    ours, brute = both(model, x, 1, 0.2, scheme="central", patch=patch, channels="all")
    torch.testing.assert_close(ours, brute, **EXACT)


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_book_wrapper_on_gray_images(arch):
    model, x = tiny_ultrasound(arch), images(2, 1, 16, 16)
    assert uses_regions(model, x)
    ours, brute = both(model, x, [0, 1], 0.05, channels="each")
    torch.testing.assert_close(ours, brute, **EXACT)
    ours, brute = both(model, x, 2, 0.05, scheme="central", patch=2, output="probability")
    torch.testing.assert_close(ours, brute, **EXACT)


def test_auto_engine_is_the_incremental_map():
    model, x = vgg_like(), images(1, 3, 12, 12)
    auto = fd_sensitivity(model, x, 1, 0.1, show_progress=False)
    ours = fd_sensitivity(model, x, 1, 0.1, engine="incremental", show_progress=False)
    assert torch.equal(auto, ours)


def test_float32_within_rounding_of_brute_force():
    """In float32 both sides carry rounding errors; ours stay within a few times brute
    force's own error against the float64 map, and within 1e-3 of the map's largest value."""
    model, x = vgg_like(), images(2, 3, 16, 16)
    truth = fd_sensitivity(model, x, [0, 1], 0.05, engine="full", show_progress=False)
    model, x = model.float(), x.float()
    ours, brute = both(model, x, [0, 1], 0.05)
    assert ours.dtype == torch.float32
    scale = truth.abs().max()
    ours_error = (ours.double() - truth).abs().max() / scale
    brute_error = (brute.double() - truth).abs().max() / scale
    assert ours_error < 1e-3
    assert ours_error < 5 * brute_error + 1e-6


class Rolled(nn.Module):
    """Layers the engine computes whole (reflection padding, a roll, a maximum over the
    image) between layers it computes on regions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.third = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, x):
        x = self.second(torch.relu(self.first(x))) + 1.0
        x = self.third(torch.roll(x, shifts=(1, 2), dims=(2, 3)))
        return self.head(x.amax((2, 3)))


class DataDependent(nn.Module):
    """Control flow on values: does not trace."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:
            x = x.relu()
        return self.head(x.mean((2, 3)))


class VisibleMutation(nn.Module):
    """An in-place change seen through a view taken before it: cannot run out of place."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(6, NUM_CLASSES)

    def forward(self, x):
        x = self.conv(x)
        before = x[:, :2]  # a view: the in-place ReLU changes it too
        x.relu_()
        return self.head(torch.cat([before, x], 1).mean((2, 3)))


class BatchInShape(nn.Module):
    """Moves the batch out of the first dimension and reads its size: shapes baked into the
    graph would depend on the batch size, so the engine must not trust the trace."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, x):
        x = self.conv(x).transpose(0, 1)
        x = x.reshape(x.shape[0], x.shape[1], -1).mean(2)
        return self.head(x.transpose(0, 1))


class UnknownFirst(nn.Module):
    """Traces, but its first operation is unknown: nothing can be computed on regions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.conv(torch.flip(x, (3,))).mean((2, 3)))


@pytest.mark.parametrize("model_class, traces", [(Rolled, True), (UnknownFirst, True),
                                                 (DataDependent, False),
                                                 (VisibleMutation, False),
                                                 (BatchInShape, False)])
def test_fallbacks_give_the_brute_force_map(model_class, traces):
    model, x = model_class().double().eval(), images(2, 3, 8, 10)
    engine = IncrementalEngine(model, x).set_images(x)
    assert engine.traced == traces
    assert engine.incremental == (model_class is Rolled)
    for engine_name in ("incremental", "auto"):
        ours = fd_sensitivity(model, x, [0, 2], 0.1, channels="each", engine=engine_name,
                              show_progress=False)
        brute = fd_sensitivity(model, x, [0, 2], 0.1, channels="each", engine="full",
                               show_progress=False)
        torch.testing.assert_close(ours, brute, **EXACT)


def test_engine_outputs_equal_forwards_of_perturbed_images():
    """Rectangles of any size and place, several images in one batch."""
    model, x = randomized(SmallResNet()), images(3, 3, 13, 17)
    generator = torch.Generator().manual_seed(5)
    count, rows, cols = 9, 3, 5
    image = torch.randint(0, 3, (count,), generator=generator)
    top = torch.randint(0, 13 - rows + 1, (count,), generator=generator)
    left = torch.randint(0, 17 - cols + 1, (count,), generator=generator)
    values = torch.rand(count, 3, rows, cols, dtype=torch.float64, generator=generator)
    perturbed = x[image].clone()
    for k in range(count):
        perturbed[k, :, top[k]:top[k] + rows, left[k]:left[k] + cols] = values[k]
    with torch.inference_mode():
        engine = IncrementalEngine(model, x).set_images(x)
        torch.testing.assert_close(engine.reference, model(x), rtol=0, atol=0)
        torch.testing.assert_close(engine.outputs(image, top, left, values), model(perturbed),
                                   **EXACT)


def test_every_sliding_window_layer_runs_on_regions():
    """At 29 x 37 no layer of OddLayers needs whole maps for a pixel, wherever it is; the
    outputs equal forwards of the perturbed images."""
    model, x = randomized(OddLayers(1)), images(1, 1, 29, 37)
    windowed = {"a", "b", "c", "d", "e", "side", "avg_with_pad", "avg", "avg_1", "conv2d",
                "pool"}
    rows, cols = torch.tensor([0, 14, 28, 0, 28]), torch.tensor([0, 18, 36, 36, 0])
    values = x[0, :, rows, cols].T[:, :, None, None] + 0.5
    perturbed = x.repeat(5, 1, 1, 1)
    perturbed[torch.arange(5), :, rows, cols] += 0.5
    with torch.inference_mode():
        engine = IncrementalEngine(model, x).set_images(x)
        ours = engine.outputs(torch.zeros(5, dtype=torch.long), rows, cols, values)
        assert set(engine.last_regions) == windowed
        torch.testing.assert_close(ours, model(perturbed), **EXACT)


def test_stored_maps_and_work_saved():
    """The engine keeps exactly the maps its layers read, and a pixel costs less than a
    whole forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3),
                          nn.Flatten(), nn.Linear(5 * 14 * 14, NUM_CLASSES)).double().eval()
    x = images(2, 3, 16, 16)
    with torch.inference_mode():
        engine = IncrementalEngine(model, x).set_images(x)
        # Read around regions: the input and the ReLU's output; whole: the last conv's output.
        # Each also has one row of zeros for positions outside the map.
        expected = 8 * ((2 * 16 * 16 + 1) * 3 + (2 * 16 * 16 + 1) * 4 + (2 * 14 * 14 + 1) * 5)
        assert engine.stored_bytes == expected
        full = 16 * 16 * 3 * 4 * 9 + 14 * 14 * 4 * 5 * 9 + 5 * 14 * 14 * NUM_CLASSES
        assert engine.full_macs_per_image == full
        pixel = x[:1, :, 5:6, 7:8] + 1
        engine.outputs(torch.tensor([0]), torch.tensor([5]), torch.tensor([7]), pixel)
        # The pixel's 3 x 3 projective field, then 5 x 5 outputs, then the whole head.
        assert engine.macs == 9 * 3 * 4 * 9 + 25 * 4 * 5 * 9 + 5 * 14 * 14 * NUM_CLASSES


def test_field_cap_approximates_only_when_below_one():
    from lib.kernels.incremental import incremental_fd_sensitivity

    model, x = vgg_like(), images(1, 3, 16, 16)
    exact = fd_sensitivity(model, x, 1, 0.1, channels="all", show_progress=False)
    uncapped = incremental_fd_sensitivity(model, x, 1, 0.1, channels="all", field_cap=1.0,
                                          show_progress=False)
    capped = incremental_fd_sensitivity(model, x, 1, 0.1, channels="all", field_cap=0.2,
                                        show_progress=False)
    assert torch.equal(uncapped, exact)
    assert not torch.allclose(capped, exact, rtol=1e-3, atol=0)
    pixel = (torch.tensor([0]), torch.tensor([8]), torch.tensor([8]), x[:, :, 8:9, 8:9] + 0.1)
    work = {}
    for cap in (None, 0.2):
        engine = IncrementalEngine(model, x, field_cap=cap).set_images(x)
        engine.outputs(*pixel)
        work[cap] = engine.macs
    assert work[0.2] < work[None]
    with pytest.raises(ValueError, match="field_cap"):
        IncrementalEngine(model, x, field_cap=1.5)


def test_bad_engine_is_refused():
    model, x = vgg_like(), images(1, 3, 8, 8)
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'incremental', 'full'"):
        fd_sensitivity(model, x, 0, 0.1, engine="fast")
