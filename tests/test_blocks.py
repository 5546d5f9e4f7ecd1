"""The default forward block of the perturbation kernels: small on a CPU, and never a change
in the numbers."""
import pytest
import torch
from torch import nn

from lib.kernels import blocks, metrics, sobol_images


class LargestBatch(nn.Module):
    """A fixed random linear classifier of 1 x 8 x 8 images that records its largest batch."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(64, 2)
        self.largest = 0

    def forward(self, x):
        self.largest = max(self.largest, x.shape[0])
        return self.linear(x.flatten(1))


def network():
    torch.manual_seed(0)
    return LargestBatch().eval()


def test_none_means_the_cpu_block_on_a_cpu_and_the_kernel_default_elsewhere():
    assert blocks.forward_block(None, "cpu", 128) == blocks.CPU_BLOCK
    assert blocks.forward_block(None, torch.device("cuda", 0), 128) == 128
    assert blocks.forward_block(7, "cpu", 128) == 7
    with pytest.raises(ValueError, match="chunk_size"):
        blocks.forward_block(0, "cpu", 128)


def test_curves_run_in_cpu_blocks_by_default_with_the_same_scores():
    images = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    options = dict(mode="deletion", target=1, steps=4, baseline="black", output="logit")
    model = network()
    default = metrics.perturbation_curves(model, images, maps, **options)
    assert model.largest == blocks.CPU_BLOCK  # 12 images x 3 inner steps, in blocks
    whole = metrics.perturbation_curves(model, images, maps, chunk_size=1000, **options)
    assert model.largest == 36
    torch.testing.assert_close(default.scores, whole.scores)


def test_sobol_outputs_run_in_cpu_blocks_by_default_with_the_same_scores():
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    options = dict(target=0, grid=2, N=8, baseline=0.0, seed=0, show_progress=False)
    model = network()
    default, _ = sobol_images.design_outputs(model, images, **options)
    assert model.largest <= blocks.CPU_BLOCK
    whole, _ = sobol_images.design_outputs(model, images, chunk_size=4096, **options)
    assert model.largest == whole.numel()
    torch.testing.assert_close(default, whole)
