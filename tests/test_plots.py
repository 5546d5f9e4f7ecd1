"""Figures of images beside their maps."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.kernels import metrics  # noqa: E402
from lib.ultrasound import plots  # noqa: E402


def test_one_row_per_image_and_one_column_per_map():
    images = torch.rand(3, 1, 16, 16)
    masks = (torch.rand(3, 1, 16, 16) > 0.5).float()
    maps = {"a": torch.randn(3, 1, 16, 16), "b": torch.zeros(3, 16, 16)}
    fig = plots.show_maps(images, maps, masks=masks, row_labels=["x", "y", "z"], share="row")
    assert len(fig.axes) == 3 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "a", "b"]
    plt.close(fig)


def test_colour_images_and_bad_share():
    fig = plots.show_maps(torch.rand(1, 3, 8, 8), {"m": torch.randn(1, 1, 8, 8)})
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="'panel', 'row'"):
        plots.show_maps(torch.rand(1, 3, 8, 8), {}, share="column")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_images_lays_out_a_grid_and_hides_unused_panels():
    images = torch.rand(5, 1, 8, 8)
    fig = plots.show_images(images, titles=list("abcde"), ncols=3, row_labels=["r0", "r1"])
    assert len(fig.axes) == 6 and len(image_axes(fig)) == 5
    assert [ax.get_title() for ax in image_axes(fig)] == list("abcde")
    assert fig.axes[3].get_ylabel() == "r1"
    assert not fig.axes[5].axison
    plt.close(fig)


def test_show_images_stretches_each_image_only_when_asked():
    images = torch.full((2, 3, 4, 4), 0.4)
    images[0, :, 0, 0] = 0.6
    plain = plots.show_images(images)
    assert plain.axes[0].images[0].get_array().max() == pytest.approx(0.6)
    stretched = plots.show_images(images, stretch=True)
    values = stretched.axes[0].images[0].get_array()
    assert values.min() == 0 and values.max() == 1
    assert stretched.axes[1].images[0].get_array().max() == 0  # a constant image stays flat
    plt.close("all")
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        plots.show_images(torch.rand(2, 2, 4, 4))


def test_show_explanations_scales_each_map_from_zero_to_its_maximum():
    images = torch.rand(2, 1, 8, 8)
    maps = {"a": torch.rand(2, 1, 8, 8) * 5, "b": torch.zeros(2, 1, 8, 8)}
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, 2:5, 2:5] = 1
    fig = plots.show_explanations(images, maps, masks=masks, row_labels=["x", "y"])
    assert len(fig.axes) == 6
    assert [fig.axes[c].get_title() for c in range(3)] == ["image", "a", "b"]
    assert fig.axes[1].images[0].get_clim() == (0, pytest.approx(maps["a"][0].max().item()))
    assert fig.axes[2].images[0].get_clim() == (0, 1)  # an all-zero map is drawn black
    assert len(fig.axes[1].collections) == 1 and not fig.axes[4].collections  # outline, row 0
    plt.close(fig)
    with pytest.raises(ValueError, match="non-negative"):
        plots.show_explanations(images, {"signed": -maps["a"]})


def test_plot_curves_draws_one_line_per_method_in_a_row_per_group():
    fractions = torch.linspace(0, 1, 3)
    curve = metrics.Curves("deletion", "blur", "probability", fractions,
                           torch.tensor([[1.0, 0.5, 0.0], [1.0, 0.7, 0.2]]), torch.zeros(2))
    inserted = metrics.Curves("insertion", "blur", "probability", fractions,
                              torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.1, 1.0]]), torch.zeros(2))
    per_method = {"x": {"deletion": curve, "insertion": inserted},
                  "y": {"deletion": curve, "insertion": inserted}}
    fig = plots.plot_curves({"net1": per_method, "net2": per_method}, titles={"x": "X"})
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 2
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([1.0, 0.6, 0.1])
    assert fig.axes[3].get_title() == "net2: insertion, baseline blur"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["X", "y"]
    plt.close(fig)
