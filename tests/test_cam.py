"""Grad-CAM: equal to pytorch-grad-cam and Captum, known answers, hooks removed, bad input."""
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from lib.kernels import cam, hooks


def tiny_cnn(in_channels=3, num_classes=4):
    """conv-relu-conv-relu, global average pool, linear: small enough for exact checks."""
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(8, num_classes)),
    ])).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=5).eval()


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return torchvision.models.vgg16(num_classes=4).eval()


# (model fixture or factory, layer, input size): resnet18 layer4 is 3 x 3 at 96 px, vgg16's
# last conv + ReLU 4 x 4 at 64 px, the tiny CNN's last ReLU 20 x 20.
CASES = [("resnet", "layer4", 96), ("vgg", "features.29", 64), ("tiny", "features.3", 20)]


def build(request, name):
    return tiny_cnn() if name == "tiny" else request.getfixturevalue(name)


def images(size, batch=3, channels=3, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, layer, size", CASES)
def test_equals_pytorch_grad_cam_after_its_normalisation(request, name, layer, size):
    gradcam = pytest.importorskip("pytorch_grad_cam")
    targets_module = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, x = build(request, name), images(size)
    classes = [0, 2, 1]
    ours = cam.grad_cam(model, x, classes, layer=layer, normalize=True)
    with gradcam.GradCAM(model, [hooks.get_layer(model, layer)]) as reference:
        theirs = reference(x, [targets_module.ClassifierOutputTarget(c) for c in classes])
    assert ours.shape == (3, 1, size, size)
    assert ours.amax() > 0.99  # the maps are not all zero: the comparison means something
    torch.testing.assert_close(ours[:, 0], torch.from_numpy(theirs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, layer, size, relu", [*(case + (True,) for case in CASES),
                                                      ("tiny", "features.3", 20, False)])
def test_equals_captum_layer_grad_cam_at_layer_resolution(request, name, layer, size, relu):
    captum_attr = pytest.importorskip("captum.attr")
    model, x = build(request, name), images(size)
    classes = torch.tensor([3, 0, 1])
    ours = cam.grad_cam(model, x, classes, layer=layer, upsample=False, relu=relu)
    theirs = captum_attr.LayerGradCam(model, hooks.get_layer(model, layer)).attribute(
        x, target=classes, relu_attributions=relu)
    assert ours.shape == theirs.shape and ours.shape[-1] <= size
    assert ours.abs().amax() > 0
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-4)


def test_global_average_pool_network_gives_the_class_activation_map():
    # With A -> global mean -> linear, d y_c / d A_k = w_ck / (h w) at every position, so
    # Grad-CAM is ReLU(sum_k w_ck A_k) / (h w): the CAM of Zhou et al. up to its scale.
    model, x = tiny_cnn(), images(20)
    ours = cam.grad_cam(model, x, 2, layer="features.3", upsample=False)
    activation = model.features(x)
    expected = torch.einsum("k,bkij->bij", model.fc.weight[2], activation).relu() / 400
    torch.testing.assert_close(ours[:, 0], expected.detach(), atol=1e-6, rtol=1e-5)


def test_in_place_relu_after_the_layer_does_not_alter_the_activation():
    # features.2 is a conv followed by ReLU(inplace=True): the map must use the conv's output.
    model, x = tiny_cnn(), images(12)
    ours = cam.grad_cam(model, x, 1, layer="features.2", upsample=False, relu=False)
    conv_out = model.features[:3](x).detach().requires_grad_(True)
    score = model.fc(model.features[3](conv_out.clone()).mean(dim=(2, 3)))[:, 1].sum()
    (grads,) = torch.autograd.grad(score, conv_out)
    expected = (grads.mean(dim=(2, 3), keepdim=True) * conv_out).sum(dim=1, keepdim=True)
    torch.testing.assert_close(ours, expected.detach(), atol=1e-6, rtol=1e-5)


def test_default_target_is_the_predicted_class(resnet):
    x = images(64, batch=4)
    predicted = resnet(x).argmax(dim=1)
    torch.testing.assert_close(cam.grad_cam(resnet, x, layer="layer4"),
                               cam.grad_cam(resnet, x, predicted, layer="layer4"))


def test_batches_do_not_change_the_maps():
    model, x = tiny_cnn(), images(16, batch=5)
    whole = cam.grad_cam(model, x, [0, 1, 2, 3, 0], layer="features.3")
    in_pairs = cam.grad_cam(model, x, [0, 1, 2, 3, 0], layer="features.3", batch_size=2)
    torch.testing.assert_close(whole, in_pairs, atol=1e-6, rtol=1e-5)


def test_upsampled_raw_map_is_the_bilinear_resize_of_the_layer_map():
    model, x = tiny_cnn(), images(16)
    small = cam.grad_cam(model, x[:, :, ::2, ::2].contiguous(), 1, layer="features.3",
                         upsample=False)
    big = cam.grad_cam(model, x[:, :, ::2, ::2].contiguous(), 1, layer="features.3")
    assert small.shape == (3, 1, 8, 8) and big.shape == (3, 1, 8, 8)
    torch.testing.assert_close(small, big)  # same size: upsampling is the identity


def test_normalised_maps_span_zero_to_one_and_keep_the_order():
    model, x = tiny_cnn(), images(20)
    raw = cam.grad_cam(model, x, 0, layer="features.3")
    scaled = cam.grad_cam(model, x, 0, layer="features.3", normalize=True)
    assert torch.all(scaled.amin(dim=(1, 2, 3)) == 0)
    torch.testing.assert_close(scaled.amax(dim=(1, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    flat_raw, flat_scaled = raw.flatten(1), scaled.flatten(1)
    assert torch.equal(flat_raw.argmax(dim=1), flat_scaled.argmax(dim=1))


def test_normalize_maps_turns_a_constant_map_into_zeros():
    maps = torch.stack([torch.full((1, 4, 4), 3.0), torch.arange(16.0).view(1, 4, 4)])
    scaled = cam.normalize_maps(maps)
    assert torch.equal(scaled[0], torch.zeros(1, 4, 4))
    torch.testing.assert_close(scaled[1], torch.arange(16.0).view(1, 4, 4) / (15 + 1e-7))
    torch.testing.assert_close(cam.normalize_maps(maps[1:] * 1e-9, eps=0.0), scaled[1:])


def test_tiny_maps_still_equal_pytorch_grad_cam():
    # An untrained classifier with a near-zero last layer gives maps of ~1e-12, where the
    # 1e-7 guard of the normalisation dominates: both sides must apply it the same way.
    gradcam = pytest.importorskip("pytorch_grad_cam")
    targets_module = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = tiny_cnn()
    with torch.no_grad():
        model.fc.weight.mul_(1e-10)
    x = images(20)
    ours = cam.grad_cam(model, x, [0, 1, 2], layer="features.3", normalize=True)
    assert cam.grad_cam(model, x, [0, 1, 2], layer="features.3").amax() < 1e-8
    with gradcam.GradCAM(model, [hooks.get_layer(model, "features.3")]) as reference:
        theirs = reference(x, [targets_module.ClassifierOutputTarget(c) for c in [0, 1, 2]])
    torch.testing.assert_close(ours[:, 0], torch.from_numpy(theirs), atol=1e-4, rtol=0)


def test_leaves_no_hooks_no_parameter_gradients_and_autograd_on():
    model, x = tiny_cnn(), images(12)
    cam.grad_cam(model, x, 1, layer="features.3")
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled() and not model.training


def test_works_when_autograd_is_off():
    model, x = tiny_cnn(), images(12)
    expected = cam.grad_cam(model, x, 1, layer="features.3")
    with torch.no_grad():
        torch.testing.assert_close(cam.grad_cam(model, x, 1, layer="features.3"), expected)
    with torch.inference_mode():
        torch.testing.assert_close(cam.grad_cam(model, x.clone(), 1, layer="features.3"),
                                   expected)
        assert not torch.is_grad_enabled()


def test_hooks_are_removed_when_the_forward_pass_fails():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_cnn().features

        def forward(self, x):
            self.body(x)
            raise RuntimeError("boom")

    model = Failing().eval()
    with pytest.raises(RuntimeError, match="boom"):
        cam.grad_cam(model, images(8), 0, layer="body.3")
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.is_grad_enabled()


def test_hooks_are_removed_after_a_bad_target():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"0\.\.3"):
        cam.grad_cam(model, images(8), 7, layer="features.3")
    assert all(not m._forward_hooks for m in model.modules())


def test_unknown_layer_lists_the_valid_names(resnet):
    with pytest.raises(ValueError, match="no layer 'layer5'.*layer4.*fc"):
        cam.grad_cam(resnet, images(32), 0, layer="layer5")


@pytest.mark.parametrize("target, error, match", [
    (4, ValueError, r"0\.\.3"),
    (-1, ValueError, "non-negative"),
    ([0, 1], ValueError, "one class per image"),
    (torch.tensor([0.0, 1.0, 2.0]), TypeError, "integer"),
    ("cat", TypeError, "target"),
])
def test_bad_targets_are_refused(target, error, match):
    with pytest.raises(error, match=match):
        cam.grad_cam(tiny_cnn(), images(8), target, layer="features.3")


def test_bad_models_inputs_and_layers_are_refused():
    model, x = tiny_cnn(), images(8)
    with pytest.raises(ValueError, match="training mode"):
        cam.grad_cam(tiny_cnn().train(), x, 0, layer="features.3")
    with pytest.raises(ValueError, match="N x C x H x W"):
        cam.grad_cam(model, x[0], 0, layer="features.3")
    with pytest.raises(ValueError, match="NaN"):
        cam.grad_cam(model, x.clone().fill_(float("nan")), 0, layer="features.3")
    with pytest.raises(ValueError, match="B x C x h x w"):
        cam.grad_cam(model, x, 0, layer="fc")
    with pytest.raises(ValueError, match="batch_size"):
        cam.grad_cam(model, x, 0, layer="features.3", batch_size=0)
    with pytest.raises(TypeError, match="dotted module name"):
        cam.grad_cam(model, x, 0, layer=3)


def test_a_layer_that_does_not_run_is_reported():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.spare = tiny_cnn(), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.body(x)  # spare is registered but never called

    with pytest.raises(ValueError, match="did not run"):
        cam.grad_cam(WithSpare().eval(), images(8), 0, layer="spare")
