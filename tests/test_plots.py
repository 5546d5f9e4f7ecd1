"""Figures of images beside their maps."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib import plots  # noqa: E402


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
