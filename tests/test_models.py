"""The ultrasound CNNs: architectures, ImageNet weights offline, cached trained checkpoints."""
import urllib.error
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from lib import data
from lib.book import cache, paths
from lib.ultrasound import checkpoints, models, train

CLASSES = ["normal", "benign", "malignant"]


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return {arch: models.build(arch).eval() for arch in models.ARCHS}


@pytest.mark.parametrize("arch", models.ARCHS)
def test_networks_score_three_classes_for_grayscale_input(networks, arch):
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        scores = networks[arch](images)
        replicated = networks[arch](images.expand(-1, 3, -1, -1))
    assert scores.shape == (2, 3)
    assert torch.equal(scores, replicated)


def test_input_step_replicates_and_normalises_with_imagenet_statistics():
    images = torch.rand(2, 1, 4, 4)
    prepared = models.GrayscaleToImageNet()(images)
    for channel in range(3):
        expected = (images[:, 0] - models.IMAGENET_MEAN[channel]) / models.IMAGENET_STD[channel]
        assert torch.allclose(prepared[:, channel], expected)


def test_wrong_number_of_channels_is_rejected(networks):
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        networks["resnet18"](torch.rand(2, 2, 32, 32))


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "alexnet"}, "valid architectures: vgg16, resnet18"),
    ({"arch": "resnet18", "weights": "IMAGENET1K_V1"}, "valid weights"),
    ({"arch": "resnet18", "num_classes": 1}, "num_classes must be an integer >= 2"),
])
def test_bad_build_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "resnet18", "width": 0.5}, "needs arch 'vgg16'"),
    ({"arch": "vgg16", "width": 0.0}, r"width must be a number in \(0, 4\]"),
    ({"arch": "vgg16", "width": True}, "width must be a number"),
    ({"arch": "vgg16", "width": 0.01}, "without channels"),
])
def test_bad_widths_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.build(**kwargs)


def test_half_width_vgg_halves_every_convolution_and_keeps_the_layout():
    full, half = models.build("vgg16"), models.build("vgg16", width=0.5)
    convs = [[m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
             for net in (full, half)]
    assert convs[1] == [c // 2 for c in convs[0]]
    assert convs[1][0] == 32 and convs[1][-1] == 256
    assert [type(m) for m in full.net.features] == [type(m) for m in half.net.features]
    assert half.net.classifier[0].in_features == 256
    assert isinstance(models.target_layer(half), nn.ReLU)
    ratio = models.count_parameters(half) / models.count_parameters(full)
    assert 0.2 < ratio < 0.3
    with torch.no_grad():
        assert half.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_width_is_a_training_setting_that_reaches_the_network():
    config = checkpoints.config_for("vgg16", "smoke", width=0.5)
    assert config.width == 0.5
    with pytest.raises(ValueError, match="needs arch 'vgg16'"):
        checkpoints.config_for("resnet18", "smoke", width=0.5)
    with pytest.raises(ValueError, match="width must be a number"):
        checkpoints.config_for("vgg16", "smoke", width=-1)


@pytest.mark.parametrize("fast, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(monkeypatch, fast,
                                                                   expected):
    monkeypatch.setattr(checkpoints.hardware, "has_fast_bfloat16", lambda dev: fast)
    config = checkpoints.config_for("resnet18", "smoke", precision="auto")
    assert config.precision == expected
    assert checkpoints.config_for("resnet18", "smoke", precision="float32").precision == \
        "float32"


def test_target_layers_are_the_last_convolutional_blocks(networks):
    resnet, vgg = networks["resnet18"], networks["vgg16"]
    assert models.target_layer(resnet) is resnet.net.layer4
    layer = models.target_layer(vgg)
    features = list(vgg.net.features)
    position = features.index(layer)
    assert isinstance(layer, nn.ReLU)
    assert isinstance(features[position - 2], nn.Conv2d)
    assert not any(isinstance(m, nn.Conv2d) for m in features[position:])


@pytest.mark.parametrize("arch, side", [("vgg16", 4), ("resnet18", 2)])
def test_target_layer_resolution(networks, arch, side):
    """At 64 px the VGG target keeps 1/16 of the side (before its last pooling), ResNet 1/32."""
    seen = []
    layer = models.target_layer(networks[arch])
    handle = layer.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    with torch.no_grad():
        networks[arch](torch.rand(1, 1, 64, 64))
    handle.remove()
    assert seen[0][-2:] == (side, side)


@pytest.mark.parametrize("arch, shape", [("vgg16", (512, 4, 4)), ("resnet18", (512, 2, 2))])
def test_target_layer_shape_is_channels_and_resolution_of_one_image(networks, arch, shape):
    assert models.target_layer_shape(networks[arch], 64) == shape
    assert not models.target_layer(networks[arch])._forward_hooks  # the probe is removed


def test_init_knob_maps_to_the_weights_and_refuses_anything_else():
    assert models.weights_for("scratch") is None
    assert models.weights_for("imagenet") == "imagenet"
    assert all(models.weights_for(init) in models.WEIGHTS for init in models.INITS)
    for bad in ("ImageNet", None, "", ["scratch"]):
        with pytest.raises(ValueError, match=r"init must be one of 'scratch', 'imagenet'; got"):
            models.weights_for(bad)


def test_vgg_head_is_compact_and_takes_any_size(networks):
    vgg = networks["vgg16"]
    head = models.count_parameters(vgg.net.classifier)
    assert head == 512 * 256 + 256 + 256 * 3 + 3
    with torch.no_grad():
        assert vgg(torch.rand(1, 1, 48, 48)).shape == (1, 3)


def test_predictions_do_not_depend_on_the_chunk_size(networks):
    images = torch.rand(7, 1, 32, 32)
    whole = models.predict_logits(networks["resnet18"], images, chunk_size=7)
    chunked = models.predict_logits(networks["resnet18"], images, chunk_size=3)
    assert torch.allclose(whole, chunked, atol=1e-5)
    probs = models.predict_proba(networks["resnet18"], images, chunk_size=2)
    assert torch.allclose(probs.sum(dim=1), torch.ones(7, dtype=probs.dtype))
    with pytest.raises(ValueError, match="chunk_size"):
        models.predict_logits(networks["resnet18"], images, chunk_size=0)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no network: any download attempt fails."""
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


@pytest.mark.parametrize("arch", models.ARCHS)
def test_imagenet_weights_offline_fail_with_a_clear_message(offline_hub, arch):
    assert not models.imagenet_weights_available(arch)
    with pytest.raises(models.WeightsUnavailableError) as error:
        models.build(arch, weights="imagenet")
    message = str(error.value)
    assert "could not be downloaded" in message
    assert str(models.weights_file(arch)) in message
    assert "weights=None" in message


def test_cached_imagenet_weights_load_without_the_network(offline_hub):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18()
    target = models.weights_file("resnet18")
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    assert models.imagenet_weights_available("resnet18")
    model = models.build("resnet18", weights="imagenet")
    assert torch.equal(model.net.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.net.fc.out_features == 3  # the ImageNet head is replaced


# --- trained checkpoints, on a synthetic stand-in for BUSI ---------------------------------

def fake_busi(split, size=256):
    """Twelve images per class whose brightness is the class, different for each split."""
    seed = {"train": 0, "val": 1, "test": 2}[split]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(36) % 3
    images = 0.1 * torch.rand(36, 1, size, size, generator=generator)
    images[:, :, 4:-4, 4:-4] += 0.3 * labels.view(-1, 1, 1, 1)
    return SimpleNamespace(images=images, labels=labels, classes=CLASSES,
                           masks=torch.zeros_like(images), names=[f"{i}.png" for i in range(36)])


@pytest.fixture
def trained_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(data, "load_busi", fake_busi)
    monkeypatch.setattr(cache, "data_digest", lambda: "synthetic")
    monkeypatch.setenv("NNSA_DEVICE", "cpu")
    return tmp_path


def test_load_trained_trains_once_then_reuses_the_checkpoint(trained_setup, monkeypatch, capsys):
    model, run = checkpoints.load_trained("resnet18", "smoke")
    assert "training resnet18 from scratch" in capsys.readouterr().out
    assert not model.training
    assert run.config == checkpoints.config_for("resnet18", "smoke")
    assert len(run.history["val_loss"]) == run.epochs_run
    images = fake_busi("test", run.config.image_size).images
    expected = models.predict_logits(model, images)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached checkpoint must not be retrained")

    monkeypatch.setattr(train, "train_checkpoint", no_training)
    again, run_again = checkpoints.load_trained("resnet18", "smoke")
    assert torch.equal(models.predict_logits(again, images), expected)
    assert run_again.history == run.history


def test_loaded_network_is_channels_last_with_the_logits_of_the_plain_layout(trained_setup):
    model, run = checkpoints.load_trained("resnet18", "smoke", verbose=False)
    conv_weights = [m.weight for m in model.modules()  # a 1 x 1 kernel is both layouts
                    if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert conv_weights and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        for w in conv_weights)
    plain = models.build("resnet18", num_classes=3).eval()
    plain.load_state_dict(model.state_dict())
    images = fake_busi("test", run.config.image_size).images
    assert torch.allclose(models.predict_logits(model, images),
                          models.predict_logits(plain, images), atol=1e-4)


def test_of_seed_picks_one_seed_and_names_the_seeds_it_holds():
    every = {("vgg16", 0): "v0", ("resnet18", 0): "r0", ("vgg16", 1): "v1",
             ("resnet18", 1): "r1"}
    assert checkpoints.of_seed(every, 1) == {"vgg16": "v1", "resnet18": "r1"}
    with pytest.raises(ValueError, match="seeds are 0, 1"):
        checkpoints.of_seed(every, 2)


def test_a_corrupt_checkpoint_is_retrained_not_loaded(trained_setup, capsys):
    checkpoints.load_trained("resnet18", "smoke")
    (entry,) = (trained_setup / "models").glob("resnet18-smoke-*.pt")
    entry.write_bytes(entry.read_bytes()[:1000])
    model, _ = checkpoints.load_trained("resnet18", "smoke")
    assert "corrupt" in capsys.readouterr().out
    assert cache.is_valid(entry)


def test_training_is_repeatable_and_leaves_the_global_random_state_alone(trained_setup):
    before = torch.get_rng_state()
    first, _ = checkpoints.load_trained("resnet18", "smoke", verbose=False)
    assert torch.equal(torch.get_rng_state(), before)
    for entry in (trained_setup / "models").iterdir():
        entry.unlink()
    second, _ = checkpoints.load_trained("resnet18", "smoke", verbose=False)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name


def test_checkpoint_key_sees_seed_settings_data_and_code(trained_setup, monkeypatch):
    config = checkpoints.config_for("resnet18", "smoke")
    key = checkpoints.checkpoint_key("resnet18", config, None, 0)
    assert checkpoints.checkpoint_key("resnet18", config, None, 1) != key
    assert checkpoints.checkpoint_key("resnet18", config, "imagenet", 0) != key
    assert checkpoints.checkpoint_key("vgg16", config, None, 0) != key
    changed = checkpoints.config_for("resnet18", "smoke", epochs=2)
    assert checkpoints.checkpoint_key("resnet18", changed, None, 0) != key
    monkeypatch.setattr(cache, "data_digest", lambda: "other data")
    assert checkpoints.checkpoint_key("resnet18", config, None, 0) != key
    monkeypatch.setattr(checkpoints.imports, "closure_digest", lambda *names: "edited code")
    assert checkpoints.checkpoint_key("resnet18", config, None, 0) != key


def test_load_trained_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid architectures"):
        checkpoints.load_trained("alexnet", "smoke")
    with pytest.raises(ValueError, match="valid profiles"):
        checkpoints.load_trained("resnet18", "huge")
    with pytest.raises(ValueError, match="valid weights"):
        checkpoints.load_trained("resnet18", "smoke", weights="IMAGENET1K_V1")


def test_every_seed_is_its_own_cached_network(trained_setup, monkeypatch):
    monkeypatch.setitem(checkpoints.profiles.CNN_SEEDS, "smoke", (0, 3))
    loaded = checkpoints.load_all("smoke", archs=("resnet18",), verbose=False)
    assert sorted(loaded) == [("resnet18", 0), ("resnet18", 3)]
    names = sorted(path.name for path in (trained_setup / "models").glob("*.pt"))
    assert [name.split("-")[2] for name in names] == ["seed0", "seed3"]
    (first, run0), (second, run3) = loaded[("resnet18", 0)], loaded[("resnet18", 3)]
    assert (run0.seed, run3.seed) == (0, 3)
    assert not torch.equal(first.net.fc.weight, second.net.fc.weight)
    assert set(run0.train_scores) == {"accuracy", "balanced_accuracy", "macro_f1", "auc_ovr"}


def test_the_shuffled_label_network_is_cached_apart_and_trained_on_permuted_labels(
        trained_setup, monkeypatch):
    seen = []
    fit = train.fit
    monkeypatch.setattr(train, "fit", lambda model, train_set, *args, **kwargs: (
        seen.append(train_set[1].clone()), fit(model, train_set, *args, **kwargs))[1])
    model, run = checkpoints.load_shuffled_labels("smoke", verbose=False)
    assert run.arch == checkpoints.SHUFFLED_LABELS_ARCH
    assert run.config.shuffled_labels_seed == 0
    assert run.best_epoch == run.epochs_run == run.config.epochs
    (name,) = [path.name for path in (trained_setup / "models").glob("*.pt")]
    assert name.startswith("resnet18-smoke-seed0-shuffled-")
    real = train.subset(*(lambda s: (s.images, s.labels))(fake_busi("train", 32)),
                        run.config.train_subset, 0)[1]
    assert torch.equal(seen[0], train.shuffled_labels(real, 0))
    assert torch.equal(torch.bincount(seen[0]), torch.bincount(real))
