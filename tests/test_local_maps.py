"""Studies of finite-difference maps: the step sweep, patch sides, channels and signs."""
import pytest
import torch
from torch import nn

from lib.kernels import local
from lib.ultrasound import local_maps


def linear_net(channels=1, side=8, classes=3):
    """A linear classifier: every finite difference equals the gradient."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes)).double().eval()


def relu_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3)).double().eval()


IMAGE = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([2])


def test_both_signs_are_the_maps_for_plus_and_minus_the_step():
    model = relu_net()
    up, down = local_maps.both_signs(model, IMAGE, TARGET, 0.3, patch=2)
    assert torch.equal(up, local.fd_sensitivity(model, IMAGE, TARGET, 0.3, patch=2))
    assert torch.equal(down, local.fd_sensitivity(model, IMAGE, TARGET, -0.3, patch=2))


def test_sweep_of_a_linear_network_is_at_the_gradient_for_every_step_and_scheme():
    rows, maps = local_maps.step_sweep(linear_net(), IMAGE, TARGET, [0.01, 1.0], patch=4)
    assert [(row["delta"], row["scheme"]) for row in rows] == [
        (0.01, "forward"), (0.01, "central"), (1.0, "forward"), (1.0, "central")]
    assert list(maps) == [0.01, 1.0]
    assert all(row[local_maps.DISTANCE] < 1e-6 for row in rows)
    largest = rows[0][local_maps.LARGEST]
    assert all(row[local_maps.LARGEST] == pytest.approx(largest) for row in rows)


def test_sweep_rows_are_the_distances_and_peaks_of_its_maps():
    model = relu_net()
    rows, maps = local_maps.step_sweep(model, IMAGE, TARGET, [0.5], patch=2)
    reference = local.gradient(model, IMAGE, TARGET, patch=2)
    up, down = maps[0.5]
    central = (up + down) / 2
    assert rows[0][local_maps.DISTANCE] == local.relative_error(up, reference).item()
    assert rows[1][local_maps.DISTANCE] == local.relative_error(central, reference).item()
    assert rows[1][local_maps.LARGEST] == central.abs().max().item()


def test_patch_sweep_counts_forward_passes_and_correlates_with_both_gradients():
    model = linear_net()
    reference = local.gradient(model, IMAGE, TARGET)
    maps, rows = local_maps.patch_sweep(model, IMAGE, TARGET, 0.1, [4, 2, 1],
                                        reference=reference)
    assert list(maps) == [4, 2, 1] and [row["patch"] for row in rows] == [4, 2, 1]
    assert [row["forward passes"] for row in rows] == [4, 16, 64]
    for row in rows:  # a linear map is the gradient summed over the patch
        assert row["correlation with the gradient summed over patches"] == pytest.approx(1.0)
    assert rows[-1]["correlation with the per-pixel gradient"] == pytest.approx(1.0)
    assert rows[0]["correlation with the per-pixel gradient"] < 0.9


def test_identical_channels_agree_fully_and_add_up():
    per_channel = torch.rand(2, 1, 6, 6, dtype=torch.float64).repeat(1, 3, 1, 1)
    together = per_channel.sum(1, keepdim=True)
    agreement = local_maps.channel_agreement(per_channel, together, -together)
    assert agreement["correlation between channel maps"] == pytest.approx(1.0)
    assert agreement["together vs sum of channels"] == pytest.approx(1.0)
    assert agreement["together vs gradient"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        local_maps.channel_agreement(per_channel[:, :1], together, together)


def test_positive_share_is_the_positive_part_of_the_absolute_mass():
    maps = torch.tensor([[[[3.0, -1.0]]], [[[1.0, -1.0]]]])
    assert local_maps.positive_share(maps) == pytest.approx((0.75 + 0.5) / 2)
    assert local_maps.positive_share(maps.abs()) == 1.0


def test_per_pixel_maps_agree_with_brute_force_and_say_their_cost():
    import torch

    from lib.ultrasound import local_maps as maps_module

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3, padding=1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).double().eval()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    target = torch.tensor([1, 2])
    result = maps_module.pixel_maps(model, x, target, 0.1)
    assert result["maps"].shape == (2, 1, 12, 12) and result["perturbations"] == 288
    assert result["seconds"] > 0 and result["brute_force_seconds"] > 0
    error = maps_module.agreement_with_brute_force(model, x, target, 0.1, result["maps"],
                                                   count=20)
    assert error < 1e-10
    wrong = result["maps"].clone()
    wrong[0, 0] += 1.0
    assert maps_module.agreement_with_brute_force(model, x, target, 0.1, wrong, count=20) > 0.1


def test_speed_phrases():
    from lib.ultrasound import local_maps as maps_module

    assert maps_module.speed_phrase(3.24) == "3.2 times faster than"
    assert maps_module.speed_phrase(0.5) == "2.0 times slower than"
