"""The offline ImageNet classifier, the natural test images, and torchvision's weights loader."""
import urllib.error

import pandas as pd
import pytest
import torch
import torchvision

from lib.ultrasound import imagenet, models

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return imagenet.load_model("efficientnet_lite0", device="cpu")


def test_images_are_rgb_in_unit_range():
    batch = imagenet.load_images(size=32, device="cpu")
    assert batch.shape == (len(imagenet.IMAGE_NAMES), 3, 32, 32)
    assert batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1 + 1e-6
    assert len({tuple(image.flatten()[:50].tolist()) for image in batch}) == batch.shape[0]


def test_images_come_in_the_order_asked_for():
    both = imagenet.load_images(["coffee", "chelsea"], size=16, device="cpu")
    cat = imagenet.load_images("chelsea", size=16, device="cpu")
    torch.testing.assert_close(both[1:], cat, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"names": ["lena"]}, "unknown image"),
    ({"names": []}, "unknown image"),
    ({"size": 4}, "at least 8"),
    ({"size": 32.0}, "integer"),
])
def test_bad_image_requests_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imagenet.load_images(**kwargs)


def test_categories_are_the_imagenet_classes():
    names = imagenet.categories()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"


def test_class_indices_are_positions_in_the_categories_and_unknown_names_are_listed():
    assert imagenet.class_indices(["espresso", "Egyptian cat"]) == [967, 285]
    assert imagenet.class_indices([]) == []
    with pytest.raises(ValueError, match=r"unknown ImageNet classes \['cat', 'dog'\]"):
        imagenet.class_indices(["espresso", "cat", "dog"])


def test_efficientnet_recognises_the_cat_and_the_coffee(lite0):
    images = imagenet.load_images(["chelsea", "coffee"], size=128, device="cpu")
    table = imagenet.top_predictions(lite0, images, k=1, names=["chelsea", "coffee"])
    assert isinstance(table, pd.DataFrame)
    assert table.loc[0, "class_index"] in CAT_CLASSES
    assert table.loc[1, "class"] == "espresso"
    assert (table["probability"] > 0.5).all()


def test_efficientnet_accepts_any_image_size(lite0):
    with torch.inference_mode():
        logits = lite0(torch.rand(2, 3, 100, 72))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert not lite0.training


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="efficientnet_lite0, vgg16, resnet18"):
        imagenet.load_model("alexnet")


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    """An empty torch cache, and a network that fails like an offline machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr("urllib.request.urlopen", offline)
    return tmp_path


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_offline_without_cached_weights_fails_clearly(empty_torch_cache, arch):
    cached = models.weights_file(arch)
    assert str(cached).startswith(str(empty_torch_cache))
    with pytest.raises(imagenet.WeightsUnavailableError, match="could not be downloaded") as info:
        imagenet.load_model(arch, device="cpu")
    assert str(cached) in str(info.value)
    with pytest.raises(imagenet.WeightsUnavailableError, match="download=False") as info:
        imagenet.load_model(arch, device="cpu", download=False)
    assert "efficientnet_lite0" in str(info.value)


def test_cached_weights_load_without_network(empty_torch_cache):
    # A stand-in for the real file: random weights saved where torch looks for them.
    reference = torchvision.models.resnet18().eval()
    cached = models.weights_file("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    model = imagenet.load_model("resnet18", device="cpu", download=False)
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference((x - mean) / std))
