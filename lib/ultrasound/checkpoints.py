"""Trained ultrasound CNNs, cached: train once per setting, load every time after.

A checkpoint's key hashes the architecture, the training settings, the seed, the data
checksums, the toolchain and the source of the training code with everything it imports
(``lib.book.imports``), so a change to any of them trains anew and a stale network is never
served. Each profile trains every network with several seeds (``lib.book.profiles.CNN_SEEDS``),
and one ResNet-18 on shuffled training labels for the data-randomisation check
(``lib.book.profiles.CNN_SHUFFLED_LABELS``).
"""
import contextlib
from dataclasses import asdict, dataclass, fields

import torch

from .. import hardware
from ..book import cache, imports, profiles
from . import models, train
from .train import Augmentation, TrainConfig


AUTO_PRECISION = "auto"


def config_for(arch: str, profile: str, **changes) -> TrainConfig:
    """The training settings of ``arch`` at ``profile`` (``lib.book.profiles.CNN_TRAINING``).

    A profile's entry holds settings shared by both networks plus optional per-architecture
    entries (``"vgg16": {...}``) that take precedence; ``changes`` override both.
    ``precision="auto"`` becomes ``"bfloat16"`` where ``lib.device()`` computes it in hardware
    and ``"float32"`` elsewhere, so the settings (and the cache key) say what ran.
    """
    models.check_arch(arch)
    settings = dict(profiles.CNN_TRAINING[profiles.check_profile(profile)])
    per_arch = {name: settings.pop(name, {}) for name in models.ARCHS}
    settings.update(per_arch[arch], **changes)
    valid = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; valid settings: "
                         f"{', '.join(valid)}")
    if settings.get("precision") == AUTO_PRECISION:
        fast = hardware.has_fast_bfloat16(hardware.device())
        settings["precision"] = "bfloat16" if fast else "float32"
    augment = settings.pop("augment", {})
    if not isinstance(augment, Augmentation):
        valid_aug = [f.name for f in fields(Augmentation)]
        if set(augment) - set(valid_aug):
            unknown = ", ".join(sorted(set(augment) - set(valid_aug)))
            raise ValueError(f"unknown augmentation(s) {unknown}; valid augmentations: "
                             f"{', '.join(valid_aug)}")
        augment = Augmentation(**augment)
    config = TrainConfig(**settings, augment=augment)
    models.check_width(arch, config.width)
    return config


@dataclass(frozen=True)
class TrainedRun:
    """What ``load_trained`` knows about a trained network besides its weights."""

    arch: str
    profile: str
    weights: str | None
    seed: int
    config: object      # lib.ultrasound.train.TrainConfig
    history: dict       # per-epoch learning curves, lists keyed by name
    best_epoch: int     # 1-based epoch whose weights were kept
    epochs_run: int
    seconds: float      # training wall time
    trained_on: str     # device description
    train_scores: dict | None = None  # kept weights' metrics on the unaugmented training
                                      # images, against the labels trained on


SHUFFLED_LABELS_ARCH = "resnet18"


def seeds(profile: str) -> tuple:
    """The training seeds of ``profile`` (``lib.book.profiles.CNN_SEEDS``)."""
    return tuple(profiles.CNN_SEEDS[profiles.check_profile(profile)])


def checkpoint_key(arch: str, config, weights, seed: int) -> str:
    """Cache key of a trained network: settings, data, training code and toolchain."""
    return cache.make_key(arch=arch, config=asdict(config), weights=weights, seed=seed,
                          data=cache.data_digest(), lib=imports.closure_digest(train.__name__),
                          toolchain=cache.toolchain_digest())


def is_cached(arch: str, profile: str = "book", *, weights=None, seed: int = 0,
              **changes) -> bool:
    """True when an intact checkpoint exists for what ``load_trained`` would return."""
    config = config_for(arch, profiles.check_profile(profile), **changes)
    key = checkpoint_key(arch, config, weights, seed)
    return cache.is_valid(cache.entry_path("models", _entry_name(arch, profile, seed, weights,
                                                                 config), key, ".pt"))


def planned(profile: str = "book") -> list:
    """Every network the chapters of ``profile`` load, as ``(arch, seed, changes)``, the
    costliest first: each architecture at each seed, then the shuffled-labels ResNet-18."""
    profile = profiles.check_profile(profile)
    jobs = [(arch, seed, {}) for arch in models.ARCHS for seed in seeds(profile)]
    jobs.append((SHUFFLED_LABELS_ARCH, 0, dict(profiles.CNN_SHUFFLED_LABELS[profile])))
    return jobs


def _entry_name(arch, profile, seed, weights, config) -> str:
    return f"{arch}-{profiles.check_profile(profile)}-seed{seed}" + (
        "-imagenet" if weights else "") + (
        "-shuffled" if config.shuffled_labels_seed is not None else "")


def load_trained(arch: str, profile: str = "book", *, weights=None, seed: int = 0,
                 verbose: bool = True, **changes):
    """The network ``arch`` trained at ``profile``, in eval mode on ``lib.device()``.

    Returns ``(model, run)`` with ``run`` a :class:`TrainedRun` (training config, learning
    curves, ...); the model is in channels-last memory layout. ``changes`` override the
    profile's training settings (``epochs=5``, see ``lib.ultrasound.train.TrainConfig``).
    Trains only when no intact checkpoint exists for the same settings, data and training
    code; the global random state is left as it was, so a cached and a fresh run give a
    chapter the same random numbers afterwards.
    """
    models.check_weights(weights)
    profile = profiles.check_profile(profile)
    config = config_for(arch, profile, **changes)
    dev = hardware.device()
    key = checkpoint_key(arch, config, weights, seed)
    name = _entry_name(arch, profile, seed, weights, config)
    with _isolated_rng(seed, dev):
        entry = cache.cached_torch(
            "models", name, key,
            lambda: train.train_checkpoint(arch, config, weights=weights, seed=seed,
                                           device=dev, verbose=verbose),
            verbose=verbose)
        model = models.build(arch, num_classes=len(entry["classes"]), width=config.width)
    model.load_state_dict(entry["state_dict"])
    run = TrainedRun(arch=arch, profile=profile, weights=weights, seed=seed, config=config,
                     history=entry["history"], best_epoch=entry["best_epoch"],
                     epochs_run=entry["epochs_run"], seconds=entry["seconds"],
                     trained_on=entry["trained_on"], train_scores=entry.get("train_scores"))
    # Channels-last: faster convolutions on a CPU (1.1-1.5x, bench_train), the same logits.
    return model.to(dev, memory_format=torch.channels_last).eval(), run


def load_all(profile: str = "book", *, archs=models.ARCHS, weights=None,
             verbose: bool = True) -> dict:
    """``{(arch, seed): (model, run)}`` for every architecture in ``archs`` and every seed of
    ``profile``, each as :func:`load_trained` gives it (trained once, cached)."""
    return {(arch, seed): load_trained(arch, profile, weights=weights, seed=seed,
                                       verbose=verbose)
            for arch in archs for seed in seeds(profile)}


def of_seed(every: dict, seed: int) -> dict:
    """``{arch: (model, run)}`` of training seed ``seed`` from a :func:`load_all` result, or a
    ValueError naming the seeds it holds."""
    held = sorted({s for _, s in every})
    if seed not in held:
        raise ValueError(f"seed {seed} is not a training seed of these networks; the seeds "
                         f"are {', '.join(map(str, held))}")
    return {arch: loaded for (arch, s), loaded in every.items() if s == seed}


def load_shuffled_labels(profile: str = "book", *, seed: int = 0, verbose: bool = True):
    """The ResNet-18 trained on randomly permuted training labels, ``(model, run)``.

    The data-randomisation check of explanation methods compares its maps with those of the
    networks trained on the real labels. It keeps its last epoch (no early stopping on a
    validation loss that means nothing here); ``run.train_scores["accuracy"]`` says how far it
    memorised the shuffled labels. ``lib.book.profiles.CNN_SHUFFLED_LABELS`` holds its
    settings, applied over the profile's ResNet-18 settings.
    """
    changes = profiles.CNN_SHUFFLED_LABELS[profiles.check_profile(profile)]
    return load_trained(SHUFFLED_LABELS_ARCH, profile, seed=seed, verbose=verbose, **changes)


@contextlib.contextmanager
def _isolated_rng(seed: int, dev: torch.device):
    """Seed torch inside the block and restore the caller's random state afterwards."""
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
