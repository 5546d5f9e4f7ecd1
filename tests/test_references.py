"""Reference maps at a given resolution and pooling to a common grid: exact properties."""
import pytest
import torch
import torch.nn.functional as F

from lib.kernels import references


def cells(maps, rows, columns):
    """``N x rows x columns x (cell pixels)`` view of ``N x 1 x H x W`` maps."""
    n, _, height, width = maps.shape
    blocks = maps.view(n, rows, height // rows, columns, width // columns)
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, rows, columns, -1)


def test_noise_is_constant_on_each_cell_and_differs_between_cells():
    maps = references.random_maps((4, 3, 24, 24), resolution=3, seed=0)
    assert maps.shape == (4, 1, 24, 24) and maps.dtype == torch.float32
    blocks = cells(maps, 3, 3)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))
    per_cell = blocks[..., 0].flatten(1)
    assert all(len(set(row.tolist())) == 9 for row in per_cell)
    assert maps.min() >= 0 and maps.max() < 1


def test_rectangular_grids_and_pixel_noise():
    maps = references.random_maps((2, 12, 24), resolution=(2, 3), seed=1)
    blocks = cells(maps, 2, 3)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))
    pixels = references.random_maps((2, 12, 24), resolution=None, seed=1)
    assert (pixels[..., 1:] != pixels[..., :-1]).all()  # no two neighbours share a cell
    full = references.random_maps((2, 12, 24), resolution=(12, 24), seed=1)
    assert torch.equal(pixels, full)


def test_seeds_reproduce_and_differ():
    first = references.random_maps((3, 16, 16), resolution=4, seed=5)
    assert torch.equal(first, references.random_maps((3, 16, 16), resolution=4, seed=5))
    assert not torch.equal(first, references.random_maps((3, 16, 16), resolution=4, seed=6))
    doubled = references.random_maps((3, 16, 16), resolution=4, seed=5, dtype=torch.float64)
    assert torch.equal(doubled.float(), first)


def test_bilinear_noise_interpolates_the_same_cells():
    nearest = references.random_maps((2, 24, 24), resolution=3, seed=2, dtype=torch.float64)
    bilinear = references.random_maps((2, 24, 24), resolution=3, seed=2, upsample="bilinear",
                                      dtype=torch.float64)
    grid = nearest[..., ::8, ::8]
    expected = F.interpolate(grid, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.equal(bilinear, expected)
    assert bilinear.min() >= grid.min() and bilinear.max() <= grid.max()


def test_smoothed_noise_spans_the_unit_range_and_is_smoother():
    rough = references.random_maps((3, 32, 32), resolution=None, seed=3)
    smooth = references.random_maps((3, 32, 32), resolution=None, seed=3, smooth_sigma=2.0)
    assert smooth.flatten(1).amin(dim=1).tolist() == [0.0] * 3
    assert smooth.flatten(1).amax(dim=1).tolist() == [1.0] * 3

    def roughness(maps):
        return (maps[..., 1:] - maps[..., :-1]).abs().mean() / maps.std()
    assert roughness(smooth) < 0.5 * roughness(rough)
    assert torch.equal(smooth, references.random_maps((3, 32, 32), resolution=None, seed=3,
                                                      smooth_sigma=2.0))


def test_pooling_a_map_constant_on_the_cells_returns_it():
    # Dyadic values, so the cell means are exact.
    grid = torch.randint(0, 16, (3, 1, 4, 4), generator=torch.Generator().manual_seed(4)) / 16
    maps = grid.repeat_interleave(6, dim=-2).repeat_interleave(6, dim=-1)
    assert torch.equal(references.pool_to_grid(maps, 4), maps)
    noise = references.random_maps((3, 24, 24), resolution=4, seed=4)
    assert torch.allclose(references.pool_to_grid(noise, 4), noise, rtol=0, atol=1e-6)


def test_pooling_averages_each_cell():
    maps = torch.arange(16.0).view(1, 4, 4)  # N x H x W stays N x H x W
    pooled = references.pool_to_grid(maps, 2)
    assert pooled.shape == (1, 4, 4)
    assert pooled[0].tolist() == [[2.5, 2.5, 4.5, 4.5], [2.5, 2.5, 4.5, 4.5],
                                  [10.5, 10.5, 12.5, 12.5], [10.5, 10.5, 12.5, 12.5]]
    assert torch.equal(references.pool_to_grid(maps, 1), torch.full((1, 4, 4), 7.5))
    assert torch.equal(references.pool_to_grid(maps, 4), maps)


def test_pooling_keeps_each_maps_total_and_a_coarser_grid_undoes_a_finer_one():
    maps = references.random_maps((2, 24, 24), resolution=None, seed=7, dtype=torch.float64)
    fine = references.pool_to_grid(maps, 6)
    assert fine.sum(dim=(1, 2, 3)).tolist() == pytest.approx(maps.sum(dim=(1, 2, 3)).tolist(),
                                                             rel=1e-12)
    coarse = references.pool_to_grid(maps, 3)
    assert torch.allclose(references.pool_to_grid(fine, 3), coarse, rtol=0, atol=1e-12)


def test_grids_must_divide_the_image():
    with pytest.raises(ValueError, match=r"does not divide the 24 x 24 .* \[1, 2, 3, 4, 6, 8"):
        references.random_maps((1, 24, 24), resolution=5, seed=0)
    with pytest.raises(ValueError, match="grid 7 does not divide"):
        references.pool_to_grid(torch.zeros(1, 1, 24, 24), 7)
    assert references.divisors(12) == [1, 2, 3, 4, 6, 12]


@pytest.mark.parametrize("options, message", [
    ({"resolution": 0, "seed": 0}, "resolution must be None, a positive int"),
    ({"resolution": (2, 2, 2), "seed": 0}, "resolution must be None"),
    ({"resolution": 2, "seed": -1}, "seed must be a non-negative integer"),
    ({"resolution": 2, "seed": 0, "upsample": "bicubic"}, "upsample must be one of"),
    ({"resolution": 2, "seed": 0, "smooth_sigma": 0}, "smooth_sigma must be a positive"),
])
def test_bad_noise_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        references.random_maps((1, 8, 8), **options)


def test_bad_shapes_and_maps_are_refused():
    with pytest.raises(ValueError, match="shape must be"):
        references.random_maps((8, 8), resolution=2, seed=0)
    with pytest.raises(ValueError, match="shape must be"):
        references.random_maps((1, 0, 8), resolution=2, seed=0)
    with pytest.raises(TypeError, match="floating-point"):
        references.pool_to_grid(torch.zeros(1, 1, 8, 8, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        references.pool_to_grid(torch.zeros(1, 3, 8, 8), 2)
    with pytest.raises(ValueError, match="grid must be a positive int"):
        references.pool_to_grid(torch.zeros(1, 8, 8), None)
