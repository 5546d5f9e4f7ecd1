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


def untrained_case():
    """An untrained ResNet-18, three random images and one target class each."""
    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, images, torch.tensor([0, 1, 2])


def test_the_cascade_tells_a_network_method_from_the_edge_detector():
    model, images, target = untrained_case()
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


def test_the_whole_network_check_is_the_cascades_last_step():
    model, images, target = untrained_case()
    once = sanity_maps.whole_network_check(model, images, target, ["gradient", "edges"],
                                           n_boot=50)
    full = sanity_maps.final_similarity(
        sanity_maps.cascade(model, images, target, ["gradient", "edges"],
                            show_progress=False), n_boot=50)
    assert list(once["verdict"]) == list(full["verdict"]) == ["changes", "insensitive"]
    assert once.loc["edge detector", "spearman"] == pytest.approx(1.0)
    assert once.loc["gradient", "spearman"] < 0.9


def test_the_chapter_helpers_word_the_verdicts_and_round_the_tables():
    import pandas as pd

    final = pd.DataFrame({"spearman": [0.9, 0.1, 0.95], "verdict": ["insensitive", "changes",
                                                                   "insensitive"]},
                         index=pd.MultiIndex.from_tuples([("VGG-16", "edges"),
                                                          ("VGG-16", "gradient"),
                                                          ("ResNet-18", "edges")]))
    words = sanity_maps.verdict_words(final)
    assert words == {"insensitive_methods": "edges (VGG-16, ResNet-18)",
                     "sensitive_methods": "gradient (VGG-16)"}
    data = pd.DataFrame({"spearman": [0.7, 0.2], "spearman CI": [(0.6, 0.8), (0.1, 0.3)]},
                        index=["a", "b"])
    assert sanity_maps.data_verdicts(data, 0.5) == {"data_similar_methods": "a",
                                                    "data_different_methods": "b"}
    shown = sanity_maps.rounded(data)
    assert list(shown.columns) == ["Spearman"]
    assert shown.loc["a", "Spearman"] == "0.70 [0.60, 0.80]"
    constant = sanity_maps.rounded(pd.DataFrame({"spearman": [float("nan")],
                                                 "spearman CI": [(float("nan"),) * 2]}))
    assert constant.iloc[0, 0] == "— (constant map)"


def test_correct_lesion_images_are_those_every_network_gets_right():
    from types import SimpleNamespace

    class Fixed(torch.nn.Module):
        def __init__(self, predictions):
            super().__init__()
            self.predictions = predictions
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            rows = x[:, 0, 0, 0].long()
            return torch.nn.functional.one_hot(self.predictions[rows], 3).float()

    labels = torch.tensor([0, 1, 2, 1, 2])
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    test = SimpleNamespace(images=images, labels=labels,
                           classes=("normal", "benign", "malignant"))
    first = Fixed(torch.tensor([0, 1, 2, 2, 2]))
    second = Fixed(torch.tensor([0, 1, 0, 2, 2]))
    chosen = sanity_maps.correct_lesion_images([first, second], test, 5)
    assert chosen.tolist() == [1, 4]  # 0 is normal, 2 and 3 are missed by one network
    assert sanity_maps.correct_lesion_images([first], test, 1).tolist() == [1]
    run = SimpleNamespace(train_scores={"accuracy": 0.9})
    scores = sanity_maps.shuffled_network_scores(first, run, test)
    assert scores == {"shuffled_train_accuracy": 0.9, "shuffled_test_accuracy": 0.8,
                      "majority_test_accuracy": 0.4}  # two of five are class 1 (or 2)
