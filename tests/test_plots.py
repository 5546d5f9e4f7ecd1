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


def test_show_predictions_gives_each_network_a_correct_and_a_wrong_row():
    images = {"a": torch.rand(4, 1, 8, 8), "b": torch.rand(4, 1, 6, 6)}
    probs = {"a": torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
             "b": torch.tensor([[0.1, 0.9], [0.4, 0.6], [0.7, 0.3], [0.5, 0.5]])}
    labels = torch.tensor([0, 1, 1, 0])
    picked = {"a": {"correct": [0, 1], "wrong": [2]}, "b": {"correct": [1], "wrong": []}}
    fig = plots.show_predictions(images, labels, probs, picked, classes=("no", "yes"), count=2)
    assert len(fig.axes) == 4 * 2 and not any(ax.axison for ax in fig.axes)
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 1, 0, 1, 0, 0, 0]
    assert fig.axes[2].get_title() == "a, wrong\ntrue yes\npred no 0.60"
    assert fig.axes[4].get_title() == "b, correct\ntrue yes\npred yes 0.60"
    plt.close(fig)


def test_show_confusion_shades_by_row_share_and_writes_count_and_share():
    matrix = torch.tensor([[3, 1], [0, 4]])
    fig = plots.show_confusion({"net": matrix, "other": matrix.flip(0)}, ["x", "y"])
    assert [ax.get_title() for ax in fig.axes] == ["net", "other"]
    shares = fig.axes[0].images[0].get_array()
    assert shares.tolist() == [[0.75, 0.25], [0.0, 1.0]]
    assert [t.get_text() for t in fig.axes[0].texts] == ["3\n75%", "1\n25%", "0\n0%", "4\n100%"]
    assert fig.axes[0].texts[3].get_color() == "white"
    plt.close(fig)


def test_plot_step_sweep_draws_both_schemes_and_the_one_over_delta_line():
    import pandas as pd

    rows = [{"network": net, "delta": d, "scheme": scheme,
             "relative distance to the gradient": d + offset, "largest |s|": 2.0 / d}
            for net, offset in (("n1", 0.0), ("n2", 0.5)) for d in (0.1, 1.0)
            for scheme in ("forward", "central")]
    fig = plots.plot_step_sweep(pd.DataFrame(rows), {"n1": "red", "n2": "blue"})
    left, right = fig.axes
    assert len(left.lines) == 4 and len(right.lines) == 4  # data and 1/δ line per network
    dotted = right.lines[1]
    assert dotted.get_linestyle() == ":"
    assert list(dotted.get_ydata()) == pytest.approx([20.0, 2.0])  # 2 at δ = 1, times 1/δ
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "n1, central", "n1, forward", "n2, central", "n2, forward"]
    plt.close(fig)


def test_show_sobol_maps_shows_S1_ST_their_gap_and_the_interval():
    from lib.kernels.sobol_images import SobolMaps

    first = torch.tensor([[[0.1, 0.2], [0.0, 0.3]]]).repeat(3, 1, 1).double()
    result = SobolMaps(S1=first, ST=first + 0.1, S1_conf=first, ST_conf=first / 2,
                       target=torch.zeros(3, dtype=torch.long), grid=2, N=4, conf_level=0.95)
    fig = plots.show_sobol_maps(torch.rand(3, 1, 4, 4), result, count=2,
                                masks=torch.ones(3, 1, 4, 4), row_labels=["a", "b"])
    assert len(fig.axes) == 2 * 5
    assert [ax.get_title() for ax in fig.axes[:5]] == ["image", "S1", "ST", "ST − S1",
                                                       "ST interval ±"]
    gap = fig.axes[3].images[0].get_array()
    assert gap.shape == (4, 4) and gap.min() == pytest.approx(0.1) and gap.max() == \
        pytest.approx(0.1)
    assert fig.axes[1].images[0].get_clim() == pytest.approx((-0.4, 0.4))  # one scale per row
    plt.close(fig)


def test_plot_convergence_draws_the_distance_and_the_agreement_against_N():
    import pandas as pd

    table = pd.DataFrame({"N": [4, 8, 16], "mean |difference| from the largest N": [0.2, 0.1, 0],
                          "mean CI half-width": [0.3, 0.2, 0.1],
                          "rank correlation with the largest N": [0.5, 0.8, 1.0]}).set_index("N")
    fig = plots.plot_convergence(table)
    left, right = fig.axes
    assert list(left.lines[0].get_ydata()) == [0.2, 0.1, 0]
    assert [list(line.get_xdata()) for line in right.lines] == [[4, 8, 16]] * 2
    assert left.get_xscale() == "log"
    plt.close(fig)
