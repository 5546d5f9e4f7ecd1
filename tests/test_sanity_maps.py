"""lib.ultrasound.sanity_maps: the map methods as explain functions, the randomisation steps."""
import pytest
import torch

from lib.kernels import sanity
from lib.ultrasound import compare, models, sanity_maps


@pytest.mark.parametrize("arch", models.ARCHS)
def test_the_steps_cover_every_layer_once_from_the_head_down(arch):
    torch.manual_seed(0)
    model = models.build(arch).eval()
    images = torch.rand(1, 1, 32, 32)
    steps = sanity_maps.randomisation_steps(model)
    assert list(steps)[0] == "head"
    layers = sanity.parameterised_layers(model, images)
    groups = sanity._layer_groups(model, layers, steps)
    members = [m for group in groups.values() for m in group]
    assert sorted(members) == sorted(layers) and len(members) == len(set(members))
    assert list(groups)[-1] == "head"  # ordered input first: the cascade walks it backwards


def test_the_edge_detector_sees_edges_and_ignores_the_model():
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert sanity_maps.edge_map(flat).abs().max() == 0
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    edges = sanity_maps.edge_map(step)[0, 0]
    assert edges[:, 3:5].min() > 0 and edges[:, :2].max() == 0 and edges[:, 6:].max() == 0


def test_every_method_gives_one_map_per_image_of_the_images_size():
    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    images = torch.rand(2, 1, 32, 32)
    target = torch.tensor([1, 2])
    settings = compare.MapSettings(am_steps=2, fd_patch=8, batch_size=2)
    for method in sanity_maps.METHODS:
        explain = sanity_maps.explainer(method, target, layer=models.TARGET_LAYERS["resnet18"],
                                        settings=settings, grid=2, N=2)
        maps = explain(model, images)
        assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all(), method
    other = models.build("resnet18").eval()
    edges = sanity_maps.explainer("edges", target, layer="net.layer4")
    assert torch.equal(edges(model, images), edges(other, images))
    with pytest.raises(ValueError, match="method must be one of"):
        sanity_maps.explainer("saliency", target, layer="net.layer4")


def test_the_cascade_tells_a_network_method_from_the_edge_detector():
    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2])
    results = sanity_maps.cascade(model, images, target, ["gradient", "edges"],
                                  show_progress=False)
    table = sanity_maps.final_similarity(results, n_boot=50)
    assert table.loc["edge detector", "verdict"] == "insensitive"
    assert table.loc["edge detector", "spearman"] == pytest.approx(1.0)
    assert table.loc["gradient", "verdict"] == "changes"
    other = models.build("resnet18").eval()
    data = sanity_maps.data_randomisation(model, other, images, target, ["gradient", "edges"],
                                          n_boot=50)
    assert data.loc["edge detector", "spearman"] == pytest.approx(1.0)
    assert data.loc["gradient", "spearman"] < 0.9
