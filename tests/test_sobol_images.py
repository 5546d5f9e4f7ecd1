"""Tests of lib.sobol_images: Sobol' maps over a grid of image regions.

The synthetic "models" read the mean of each grid region of the perturbed image. With an image
of ones and a baseline of zeros, the perturbed image is the upsampled mask itself, so region
i's mean is the design value u_i and the exact Sobol' indices are known in closed form.
"""
import numpy as np
import pytest
import torch

from lib.kernels import sobol, sobol_images

GRID, PIXELS = 4, 2  # a 4 x 4 grid of 2 x 2 regions: 8 x 8 images
SIZE = GRID * PIXELS
ADDITIVE, PAIR = 1, (6, 11)  # the additive region and the two interacting ones


def region_means(x):
    """(n, g^2) mean of each region of the first channel, regions numbered row-major."""
    blocks = x[:, 0].reshape(x.shape[0], GRID, PIXELS, GRID, PIXELS)
    return blocks.mean(dim=(2, 4)).flatten(1)


def additive_and_interaction(x):
    """Class 0 scores u_1 + 2 u_6 u_11 (class 1 the opposite), for uniform u:

    Var = 1/12 + 4 (1/9 - 1/16) = 40/144; V_1 = 12/144, V_6 = V_11 = 4/48 = 12/144 and the
    interaction V_6,11 = 4/144, so S1 = 0.3 for all three, ST_1 = 0.3, ST_6 = ST_11 = 0.4.
    """
    u = region_means(x)
    score = u[:, ADDITIVE] + 2 * u[:, PAIR[0]] * u[:, PAIR[1]]
    return torch.stack([score, -score], dim=1)


def ones(batch=1):
    return torch.ones(batch, 1, SIZE, SIZE)


def analyse(model, images, **options):
    settings = dict(target=0, grid=GRID, N=1024, baseline=0.0, seed=0, chunk_size=4096,
                    show_progress=False)
    return sobol_images.sobol_maps(model, images, **{**settings, **options})


def test_maps_recover_the_known_regions_and_values():
    maps = analyse(additive_and_interaction, ones())
    S1, ST = maps.S1[0].flatten(), maps.ST[0].flatten()
    influential = [ADDITIVE, *PAIR]
    expected_S1 = torch.tensor([0.3, 0.3, 0.3], dtype=S1.dtype)
    expected_ST = torch.tensor([0.3, 0.4, 0.4], dtype=ST.dtype)
    torch.testing.assert_close(S1[influential], expected_S1, atol=0.03, rtol=0)
    torch.testing.assert_close(ST[influential], expected_ST, atol=0.03, rtol=0)
    others = torch.ones(GRID * GRID, dtype=torch.bool)
    others[influential] = False
    # a region the model ignores never changes the output: both indices are exactly zero
    assert (S1[others] == 0).all() and (ST[others] == 0).all()


def test_first_order_is_below_total_exactly_where_the_interaction_is():
    maps = analyse(additive_and_interaction, ones())
    gap = (maps.ST - maps.S1)[0].flatten()
    # the estimator's noise at N = 1024 is below 0.03 (across seeds), the interaction 0.1
    assert set(torch.nonzero(gap > 0.06).flatten().tolist()) == set(PAIR)
    assert gap.abs()[[i for i in range(GRID * GRID) if i not in PAIR]].max() < 0.04
    # the gap at the pair is the interaction's share, 4/40, within the bootstrap interval
    torch.testing.assert_close(gap[list(PAIR)], torch.full((2,), 0.1, dtype=gap.dtype),
                               atol=0.02, rtol=0)


def test_confidence_intervals_cover_the_exact_indices_and_shrink_with_N():
    small = analyse(additive_and_interaction, ones(), N=256)
    large = analyse(additive_and_interaction, ones(), N=4096)
    exact_ST = torch.tensor([0.3, 0.4, 0.4], dtype=torch.float64)
    influential = [ADDITIVE, *PAIR]
    for maps in (small, large):
        ST, conf = maps.ST[0].flatten()[influential], maps.ST_conf[0].flatten()[influential]
        assert ((ST - exact_ST).abs() <= conf).all()
    assert (large.ST_conf[0].flatten()[influential]
            < small.ST_conf[0].flatten()[influential] / 2).all()


def test_each_image_of_a_batch_gets_its_own_map():
    images = ones(3)
    images[1] = 0  # nothing to remove: the model's output never changes
    rows, cols = divmod(PAIR[1], GRID)
    images[2, :, rows * PIXELS:(rows + 1) * PIXELS, cols * PIXELS:(cols + 1) * PIXELS] = 0
    with pytest.warns(UserWarning, match="constant"):
        maps = analyse(additive_and_interaction, images)
    assert (maps.ST[1] == 0).all() and (maps.S1[1] == 0).all()
    # image 2 lacks region 11: only region 1 is left, alone, with all the variance
    expected = torch.zeros(GRID * GRID, dtype=torch.float64)
    expected[ADDITIVE] = 1.0
    torch.testing.assert_close(maps.S1[2].flatten(), expected)
    torch.testing.assert_close(maps.ST[2].flatten(), expected)
    assert (maps.ST[0].flatten()[list(PAIR)] > 0.3).all()


def test_a_shared_design_gives_each_image_the_map_it_gets_alone():
    torch.manual_seed(0)
    images = torch.rand(3, 1, SIZE, SIZE)
    together = analyse(additive_and_interaction, images, N=64, chunk_size=100)
    for b in range(3):
        alone = analyse(additive_and_interaction, images[b:b + 1], N=64, chunk_size=7)
        for key in sobol_images.INDICES:
            torch.testing.assert_close(getattr(together, key)[b], getattr(alone, key)[0])


def test_design_is_the_saltelli_design_of_lib_sobol():
    masks = sobol_images.mask_design(GRID, 8, seed=3, device="cpu")
    D = GRID * GRID
    problem = {"num_vars": D, "names": [f"r{i}" for i in range(D)], "bounds": [[0, 1]] * D}
    expected = sobol.sample(problem, 8, calc_second_order=False, seed=3)
    assert masks.shape == (8 * (D + 2), GRID, GRID)
    np.testing.assert_allclose(masks.flatten(1).numpy(), expected, rtol=0, atol=1e-7)
    assert sobol_images.forward_passes(GRID, 8) == len(masks)


def test_maps_are_lib_sobol_indices_of_each_image_laid_out_on_the_grid():
    D = GRID * GRID
    problem = {"num_vars": D, "names": [f"r{i}" for i in range(D)], "bounds": [[0, 1]] * D}
    outputs = torch.rand(16 * (D + 2), 3, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    maps = sobol_images.maps_from_outputs(outputs, GRID, num_resamples=10, seed=4)
    expected = sobol.analyze(problem, outputs, calc_second_order=False, num_resamples=10,
                             seed=4)
    for key in sobol_images.INDICES:
        assert maps[key].shape == (3, GRID, GRID)
        torch.testing.assert_close(maps[key].flatten(1), expected[key].T)


def test_upsampled_masks_fill_their_regions_and_perturb_blends_image_and_baseline():
    masks = torch.arange(GRID * GRID, dtype=torch.float32).view(1, GRID, GRID) / 15
    upsampled = sobol_images.upsample_masks(masks, (SIZE, SIZE))
    assert upsampled.shape == (1, 1, SIZE, SIZE)
    torch.testing.assert_close(region_means(upsampled), masks.flatten(1))
    image, fill = torch.full((1, 1, SIZE, SIZE), 3.0), torch.full((1, 1, SIZE, SIZE), 1.0)
    perturbed = sobol_images.perturb(image, fill, upsampled)
    torch.testing.assert_close(perturbed, fill + upsampled * (image - fill))
    assert perturbed.flatten()[0] == 1.0 and perturbed.flatten()[-1] == 3.0


def test_blur_baseline_and_a_real_network_run_on_several_channels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).eval()
    images = torch.rand(2, 3, 16, 16)
    maps = sobol_images.sobol_maps(model, images, grid=4, N=8, blur_sigma=2.0, seed=0,
                                   show_progress=False)
    assert maps.ST.shape == (2, 4, 4) and maps.forwards == 8 * 18
    assert torch.equal(maps.target, model(images).argmax(1))
    assert torch.isfinite(maps.ST).all() and (maps.ST_conf >= 0).all()
    assert maps.to_image("ST", (16, 16)).shape == (2, 1, 16, 16)
    assert maps.to_image("S1", (16, 16), mode="bilinear").shape == (2, 1, 16, 16)


def test_probability_output_is_the_softmax_of_the_scores():
    maps = analyse(additive_and_interaction, ones(), N=64, output="probability")
    # softmax of (s, -s) is a monotone function of s: the same regions matter
    influential = set(torch.nonzero(maps.ST[0].flatten() > 0).flatten().tolist())
    assert influential == {ADDITIVE, *PAIR}


# --------------------------------------------------------------------------- bad input

def test_grid_that_does_not_divide_the_image_is_refused_with_the_allowed_sizes():
    assert sobol_images.allowed_grids(32, 32) == [1, 2, 4, 8, 16, 32]
    assert sobol_images.allowed_grids(96, 64) == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match=r"allowed: \[1, 2, 4, 8\]"):
        analyse(additive_and_interaction, ones(), grid=3)
    for grid in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="grid"):
            analyse(additive_and_interaction, ones(), grid=grid)


@pytest.mark.parametrize("N", [100, 1, 0, 3, 2.0])
def test_N_must_be_a_power_of_two(N):
    with pytest.raises(ValueError, match="power of two"):
        analyse(additive_and_interaction, ones(), N=N)


def test_baseline_of_the_wrong_shape_or_kind_is_refused():
    with pytest.raises(ValueError, match=r"baseline tensor must have the images' shape"):
        analyse(additive_and_interaction, ones(2), baseline=torch.zeros(1, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="NaN"):
        analyse(additive_and_interaction, ones(), baseline=torch.full((1, 1, SIZE, SIZE),
                                                                      float("nan")))
    for bad in ("black", None, float("inf")):
        with pytest.raises(ValueError, match="baseline"):
            analyse(additive_and_interaction, ones(), baseline=bad)
    with pytest.raises(ValueError, match="sigma"):
        analyse(additive_and_interaction, ones(), baseline="blur", blur_sigma=0)


def test_other_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="output must be one of"):
        analyse(additive_and_interaction, ones(), output="softmax")
    with pytest.raises(ValueError, match=r"target classes must be in 0..1"):
        analyse(additive_and_interaction, ones(), target=2)
    with pytest.raises(ValueError, match="N x C x H x W"):
        analyse(additive_and_interaction, torch.ones(1, SIZE, SIZE))
    with pytest.raises(ValueError, match="NaN"):
        analyse(additive_and_interaction, torch.full((1, 1, SIZE, SIZE), float("nan")))
    with pytest.raises(ValueError, match="chunk_size"):
        analyse(additive_and_interaction, ones(), chunk_size=0)
    with pytest.raises(ValueError, match="training mode"):
        analyse(torch.nn.Conv2d(1, 2, 1).train(), ones())
    maps = analyse(additive_and_interaction, ones(), N=4)
    with pytest.raises(ValueError, match="key must be one of"):
        maps.to_image("S2", (SIZE, SIZE))
    with pytest.raises(ValueError, match="mode must be one of"):
        maps.to_image("ST", (SIZE, SIZE), mode="cubic")


def test_out_of_gpu_memory_splits_the_block_and_gives_the_same_scores():
    def fussy(x):
        if x.shape[0] > 5:  # as a GPU would when a forward does not fit
            raise torch.cuda.OutOfMemoryError("out of memory")
        return additive_and_interaction(x)

    torch.manual_seed(0)
    images = torch.rand(3, 1, SIZE, SIZE)
    expected = analyse(additive_and_interaction, images, N=8)
    split = analyse(fussy, images, N=8, chunk_size=64)
    for key in sobol_images.INDICES:
        torch.testing.assert_close(getattr(split, key), getattr(expected, key))
