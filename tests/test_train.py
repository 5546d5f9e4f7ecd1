"""The CNN training loop: settings per profile, augmentation, class weights, early stopping."""
import math

import pytest
import torch
from torch import nn

from lib.book import profiles
from lib.ultrasound import checkpoints, train


class TinyNet(nn.Module):
    """A small CNN without batch normalisation: fast, and its eval output is exactly repeatable."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    def forward(self, images):
        return self.body(images)


class FrozenNet(nn.Module):
    """Scores that no parameter can change: the validation loss never improves."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.register_buffer("scores", torch.tensor([0.2, 0.1, -0.3]))

    def forward(self, images):
        return self.scores.expand(len(images), 3) + 0 * self.unused


def blobs(n=48, size=16, seed=0):
    """Noise with a square whose brightness is the class: none, dim, bright."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.1 * torch.rand(n, 1, size, size, generator=generator)
    images[:, :, 3:size - 3, 3:size - 3] += 0.4 * labels.view(-1, 1, 1, 1)
    return images.clamp(0, 1), labels


def small_config(**changes):
    settings = dict(image_size=16, epochs=3, batch_size=8, lr=1e-2, weight_decay=0.0,
                    patience=10)
    settings.update(changes)
    return train.TrainConfig(**settings)


@pytest.mark.parametrize("profile", profiles.PROFILES)
@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_every_profile_has_a_valid_config(profile, arch):
    config = checkpoints.config_for(arch, profile)
    assert isinstance(config, train.TrainConfig)
    assert isinstance(config.augment, train.Augmentation)
    if profile == "full":
        assert config.image_size == 224


@pytest.mark.parametrize("profile", profiles.PROFILES)
def test_both_networks_see_the_same_image_size(profile):
    """Later chapters feed the same test images to both networks."""
    sizes = {checkpoints.config_for(arch, profile).image_size for arch in ("vgg16", "resnet18")}
    assert len(sizes) == 1


def test_per_architecture_settings_take_precedence(monkeypatch):
    monkeypatch.setitem(profiles.CNN_TRAINING, "book", {
        "image_size": 64, "epochs": 20, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.0,
        "patience": 3, "vgg16": {"epochs": 7}, "augment": {"rotate": 5.0}})
    assert checkpoints.config_for("vgg16", "book").epochs == 7
    assert checkpoints.config_for("resnet18", "book").epochs == 20
    assert checkpoints.config_for("resnet18", "book").augment.rotate == 5.0
    assert checkpoints.config_for("resnet18", "book", epochs=2).epochs == 2


@pytest.mark.parametrize("changes, message", [
    ({"epochz": 3}, "unknown training setting.*valid settings: image_size"),
    ({"augment": {"vflip": True}}, "unknown augmentation.*valid augmentations: hflip"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"augment": {"scale": 1.5}}, "scale and contrast must be below 1"),
    ({"train_subset": 1}, "train_subset must be None or an integer >= 2"),
    ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
])
def test_bad_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        checkpoints.config_for("resnet18", "smoke", **changes)


def test_unknown_profile_and_arch_are_rejected():
    with pytest.raises(ValueError, match="valid profiles"):
        checkpoints.config_for("resnet18", "huge")
    with pytest.raises(ValueError, match="valid architectures"):
        checkpoints.config_for("alexnet", "book")


def test_augment_keeps_shape_and_range_and_repeats_with_the_seed():
    images, _ = blobs(n=12, size=24)
    aug = train.Augmentation()
    first = train.augment(images, aug, torch.Generator().manual_seed(3))
    again = train.augment(images, aug, torch.Generator().manual_seed(3))
    other = train.augment(images, aug, torch.Generator().manual_seed(4))
    assert first.shape == images.shape
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, images, atol=1e-3)


def test_augment_with_nothing_switched_on_is_the_identity():
    images, _ = blobs(n=6, size=20)
    off = train.Augmentation(hflip=False, rotate=0, scale=0, shift=0, gain=0, contrast=0,
                             speckle=0)
    assert torch.allclose(train.augment(images, off, torch.Generator().manual_seed(0)), images,
                          atol=1e-6)


def test_flips_are_left_right_only():
    images = torch.rand(64, 1, 10, 10)
    flips = train.Augmentation(hflip=True, rotate=0, scale=0, shift=0, gain=0, contrast=0,
                               speckle=0)
    out = train.augment(images, flips, torch.Generator().manual_seed(0))
    same = torch.isclose(out, images, atol=1e-6).flatten(1).all(dim=1)
    mirrored = torch.isclose(out, images.flip(-1), atol=1e-6).flatten(1).all(dim=1)
    assert torch.all(same ^ mirrored)
    assert same.any() and mirrored.any()


def test_class_weights_make_every_class_count_equally():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    weights = train.class_weights(labels, 3)
    counts = torch.bincount(labels).float()
    assert torch.allclose(weights * counts, torch.full((3,), len(labels) / 3))
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no training images"):
        train.class_weights(torch.tensor([0, 1, 1]), 3)


def fit_tiny(seed=0, **changes):
    torch.manual_seed(seed)
    model = TinyNet()
    images, labels = blobs()
    val = blobs(n=24, seed=1)
    return model, train.fit(model, (images, labels), val, small_config(**changes), seed=seed)


def test_fit_is_repeatable_with_the_same_seed():
    _, first = fit_tiny(seed=0)
    _, again = fit_tiny(seed=0)
    _, other = fit_tiny(seed=1)
    assert first.history == again.history
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    assert first.history != other.history


def test_fit_learns_an_easy_problem():
    _, result = fit_tiny(epochs=12, lr=3e-2)
    assert result.history["train_loss"][-1] < 0.7 * result.history["train_loss"][0]
    assert max(result.history["val_accuracy"]) > 0.6  # chance is 1/3


def test_fit_keeps_the_weights_of_the_best_validation_epoch():
    model, result = fit_tiny(epochs=8, lr=3e-2)
    losses = result.history["val_loss"]
    assert result.best_epoch == 1 + losses.index(min(losses))
    model.load_state_dict(result.state_dict)
    images, labels = blobs(n=24, seed=1)
    weights = train.class_weights(blobs()[1], 3)
    loss = nn.functional.cross_entropy(model.eval()(images), labels, weight=weights).item()
    assert loss == pytest.approx(min(losses), rel=1e-6)


def test_fit_stops_after_patience_epochs_without_improvement():
    model = FrozenNet()
    images, labels = blobs()
    result = train.fit(model, (images, labels), blobs(n=12, seed=1),
                       small_config(epochs=20, patience=2), seed=0)
    assert result.best_epoch == 1
    assert result.epochs_run == 3
    assert all(len(values) == 3 for values in result.history.values())
    assert math.isfinite(result.seconds)


def test_subset_draws_without_replacement():
    images, labels = blobs(n=30)
    small_images, small_labels = train.subset(images, labels, 10, seed=0)
    assert len(small_labels) == 10
    rows = {tuple(row.flatten().tolist()) for row in small_images}
    assert len(rows) == 10
    assert train.subset(images, labels, None, seed=0)[0] is images


def test_fit_reports_a_run_whose_validation_loss_is_never_finite():
    model = FrozenNet()
    model.scores.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="validation loss was never finite"):
        train.fit(model, blobs(), blobs(n=12, seed=1), small_config(epochs=5, patience=2),
                  seed=0)


def test_fit_keeps_the_moving_average_of_the_weights_when_asked():
    raw, plain = fit_tiny(epochs=4, lr=3e-2)
    model, averaged = fit_tiny(epochs=4, lr=3e-2, ema_decay=0.9)
    _, again = fit_tiny(epochs=4, lr=3e-2, ema_decay=0.9)
    assert averaged.history == again.history
    assert averaged.history["train_loss"] == plain.history["train_loss"]  # same raw training
    assert averaged.history["val_loss"] != plain.history["val_loss"]  # other weights judged
    model.load_state_dict(averaged.state_dict)
    images, labels = blobs(n=24, seed=1)
    weights = train.class_weights(blobs()[1], 3)
    loss = nn.functional.cross_entropy(model.eval()(images), labels, weight=weights).item()
    assert loss == pytest.approx(min(averaged.history["val_loss"]), rel=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({"precision": "float16"}, "precision must be one of float32, bfloat16"),
    ({"channels_last": 1}, "channels_last must be True or False"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"shuffled_labels_seed": True}, "shuffled_labels_seed must be None or an integer"),
])
def test_bad_speed_and_regularisation_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        small_config(**changes)


def test_channels_last_trains_the_same_network():
    """Only the memory layout changes: the same curves up to rounding, weights handed back
    contiguous and a model in its original layout."""
    _, plain = fit_tiny(epochs=3)
    model, strided = fit_tiny(epochs=3, channels_last=True)
    for name in plain.history:
        assert strided.history[name] == pytest.approx(plain.history[name], rel=1e-4, abs=1e-6)
    conv = model.body[0].weight
    assert conv.is_contiguous()
    assert all(value.is_contiguous() for value in strided.state_dict.values())


def test_bfloat16_autocast_trains_and_keeps_float32_weights():
    _, plain = fit_tiny(epochs=12, lr=3e-2)
    model, mixed = fit_tiny(epochs=12, lr=3e-2, precision="bfloat16")
    assert mixed.history["train_loss"] != plain.history["train_loss"]  # autocast was on
    assert mixed.history["train_loss"][-1] < 0.7 * mixed.history["train_loss"][0]
    assert max(mixed.history["val_accuracy"]) > 0.6
    assert all(value.dtype == torch.float32 for value in mixed.state_dict.values())


def test_label_smoothing_changes_the_training_loss_not_the_validation_loss():
    _, plain = fit_tiny(epochs=3)
    model, smoothed = fit_tiny(epochs=3, label_smoothing=0.2)
    assert smoothed.history["train_loss"][0] != plain.history["train_loss"][0]
    model.load_state_dict(smoothed.state_dict)
    images, labels = blobs(n=24, seed=1)
    weights = train.class_weights(blobs()[1], 3)
    loss = nn.functional.cross_entropy(model.eval()(images), labels, weight=weights).item()
    assert loss == pytest.approx(min(smoothed.history["val_loss"]), rel=1e-6)


def test_shuffled_labels_are_a_seeded_permutation():
    labels = torch.arange(60) % 3
    shuffled = train.shuffled_labels(labels, seed=4)
    assert torch.equal(torch.bincount(shuffled), torch.bincount(labels))
    assert torch.equal(shuffled, train.shuffled_labels(labels, seed=4))
    assert not torch.equal(shuffled, train.shuffled_labels(labels, seed=5))
    assert (shuffled != labels).float().mean() > 0.4  # most labels moved


def test_a_shuffled_label_run_keeps_its_last_epoch_without_early_stopping():
    """FrozenNet never improves the validation loss, yet every epoch runs and the last is kept."""
    model = FrozenNet()
    result = train.fit(model, blobs(), blobs(n=12, seed=1),
                       small_config(epochs=5, patience=1, shuffled_labels_seed=0), seed=0)
    assert result.epochs_run == 5
    assert result.best_epoch == 5
    assert not small_config(shuffled_labels_seed=0).keeps_best_epoch
    assert small_config().keeps_best_epoch


def test_every_profile_has_seeds_and_a_shuffled_label_network():
    for profile in profiles.PROFILES:
        assert len(checkpoints.seeds(profile)) >= 2
        assert len(set(checkpoints.seeds(profile))) == len(checkpoints.seeds(profile))
        changes = profiles.CNN_SHUFFLED_LABELS[profile]
        config = checkpoints.config_for(checkpoints.SHUFFLED_LABELS_ARCH, profile, **changes)
        assert config.shuffled_labels_seed is not None
        assert config.image_size == checkpoints.config_for("vgg16", profile).image_size
    assert checkpoints.seeds("book") == (0, 1, 2)


def test_mixup_step_is_the_mixture_of_the_two_images_losses():
    torch.manual_seed(0)
    model = TinyNet()
    images, labels = blobs(n=16)
    weights = train.class_weights(labels, 3)
    aug = train.Augmentation()
    generator = torch.Generator().manual_seed(5)
    replay = torch.Generator().manual_seed(5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step leaves the weights
    _, loss = train.train_step(model, images, labels, weights, optimizer, aug, generator,
                               mixup=True)
    batch = train.augment(images, aug, replay)
    partner = torch.randperm(16, generator=replay)
    share = torch.rand((), generator=replay)
    logits = model(share * batch + (1 - share) * batch[partner])
    expected = (share * nn.functional.cross_entropy(logits, labels, weight=weights)
                + (1 - share) * nn.functional.cross_entropy(logits, labels[partner],
                                                            weight=weights))
    assert 0 < share < 1
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(generator.get_state(), replay.get_state())  # no other draws


def test_mixup_still_learns_an_easy_problem():
    _, plain = fit_tiny(epochs=12, lr=3e-2)
    _, mixed = fit_tiny(epochs=12, lr=3e-2, mixup=True)
    assert mixed.history["train_loss"] != plain.history["train_loss"]
    assert max(mixed.history["val_accuracy"]) > 0.6


def test_softer_class_weights_have_known_values():
    labels = torch.tensor([0] * 1 + [1] * 4 + [2] * 16)
    assert torch.allclose(train.class_weights(labels, 3, "none"), torch.ones(3))
    sqrt = train.class_weights(labels, 3, "sqrt")
    # proportional to 1, 1/2, 1/4, scaled so that the 21 images weigh 21 in all
    assert torch.allclose(sqrt, torch.tensor([1.0, 0.5, 0.25]) * 21 / (1 + 2 + 4))
    inverse = train.class_weights(labels, 3, "inverse")
    assert torch.allclose(inverse, torch.tensor([7.0, 7 / 4, 7 / 16]))
    with pytest.raises(ValueError, match="class weighting must be one of inverse, sqrt, none"):
        train.class_weights(labels, 3, "log")
    with pytest.raises(ValueError, match="class_weighting must be one of"):
        small_config(class_weighting="balanced")


def test_the_validation_loss_weighs_classes_alike_whatever_the_training_weights():
    images, labels = blobs()
    keep = torch.cat([torch.arange(0, 48, 3), torch.arange(1, 48, 3)[:4],
                      torch.arange(2, 48, 3)[:8]])  # 16, 4 and 8 images per class
    model = TinyNet()
    result = train.fit(model, (images[keep], labels[keep]), blobs(n=24, seed=1),
                       small_config(epochs=3, class_weighting="none"), seed=0)
    model.load_state_dict(result.state_dict)
    val_images, val_labels = blobs(n=24, seed=1)
    weights = train.class_weights(labels[keep], 3)
    loss = nn.functional.cross_entropy(model.eval()(val_images), val_labels,
                                       weight=weights).item()
    assert loss == pytest.approx(min(result.history["val_loss"]), rel=1e-6)
