"""lib.kernels.sobol_diagnostics: maps of smaller N from one design, and the additive fit."""
import pytest
import torch

from lib.kernels import sobol_diagnostics, sobol_images


class RegionModel(torch.nn.Module):
    """Scores from the mean of each quarter of an 8 x 8 image: class 0 is ``f`` of them."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        quarters = torch.nn.functional.avg_pool2d(x[:, :1], 4).flatten(1)  # (n, 4)
        score = self.f(quarters)
        return torch.stack([score, -score], dim=1)


ONES = torch.ones(2, 1, 8, 8)


def test_smaller_designs_are_prefixes_of_the_largest():
    model = RegionModel(lambda q: q[:, 0] + 2 * q[:, 1] * q[:, 2]).eval()
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs, _ = sobol_images.design_outputs(model, images, 0, grid=2, N=32, baseline=0.0,
                                             seed=3, show_progress=False)
    by_n = sobol_diagnostics.maps_by_base_samples(outputs, 2, [8, 32], num_resamples=20,
                                                  seed=3)
    direct = sobol_images.sobol_maps(model, images, 0, grid=2, N=8, baseline=0.0,
                                     num_resamples=20, seed=3, show_progress=False)
    torch.testing.assert_close(by_n[8]["ST"], direct.ST, rtol=0, atol=0)
    table = sobol_diagnostics.convergence_table(by_n)
    assert table.loc[32, "mean |difference| from the largest N"] == 0
    with pytest.raises(ValueError, match="hold 32 base samples"):
        sobol_diagnostics.maps_by_base_samples(outputs, 2, [64])


def test_an_additive_score_is_fitted_exactly_and_a_product_is_not():
    additive = RegionModel(lambda q: q[:, 0] + 3 * q[:, 1] ** 2 - q[:, 3]).eval()
    fit = sobol_diagnostics.additive_fit(additive, ONES, 0, grid=2, n_fit=64, n_test=64,
                                         baseline=0.0, show_progress=False)
    assert torch.allclose(fit["r2"], torch.ones(2, dtype=torch.float64), atol=1e-6)
    # f = u1 u2 with independent uniform u: the first-order indices sum to 6/7.
    product = RegionModel(lambda q: q[:, 0] * q[:, 1]).eval()
    fit = sobol_diagnostics.additive_fit(product, ONES, 0, grid=2, n_fit=2048,
                                         n_test=2048, baseline=0.0, show_progress=False)
    assert fit["r2"].sub(6 / 7).abs().max() < 0.03


def test_the_additive_fit_needs_more_samples_than_features():
    model = RegionModel(lambda q: q[:, 0]).eval()
    with pytest.raises(ValueError, match="n_fit must be an integer >= 14"):
        sobol_diagnostics.additive_fit(model, ONES, 0, grid=2, n_fit=10, show_progress=False)
