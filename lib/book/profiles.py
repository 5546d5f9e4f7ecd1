"""The named sets of parameters the book can be run at.

Each chapter's ``parameters`` cell holds the ``book`` values of its knobs. The other profiles
override some of them here, by chapter file stem. A profile changes sizes, never code paths.

- ``smoke``: tiny sizes, every chapter in seconds to a minute on 2 CPU cores (what CI runs);
- ``book``: the published book, sized for a 2-core CPU;
- ``full``: our full-scale settings (224 px inputs, large N, per-pixel maps), meant for one GPU.
  They are ours, not the paper's, whose settings are not published; ``paper``, its former
  name, is still accepted.
"""

PROFILES = ("smoke", "book", "full")
ALIASES = {"paper": "full"}
DEFAULT_PROFILE = "book"

# chapter stem -> parameter -> value, for each profile other than ``book``.
OVERRIDES = {
    "smoke": {
        "02-sobol-method": {"log2_N": 10, "bench_log2_N": 10, "data_rows": 200,
                            "coverage_log2_N_max": 8, "rqmc_replicates": 4,
                            "coverage_repetitions": 5},
        "03-diabetes-network": {"n_repeats": 2, "n_folds": 2, "max_epochs": 30, "patience": 10},
        "04-diabetes-sobol": {"n_repeats": 2, "n_folds": 2, "max_epochs": 30, "patience": 10,
                              "log2_N": 8, "num_resamples": 20, "n_permutation_repeats": 2,
                              "n_seed_checks": 1, "n_random_orderings": 2,
                              "convergence_log2_N": 8, "n_shapley_networks": 2,
                              "shapley_resamples": 100},
        "05-cnns": {"n_boot": 200, "n_examples": 2},
        "06-local-sensitivity": {"deltas": [0.001, 0.1, 1.0], "patch_sizes": [8, 4],
                                 "natural_images": ["chelsea"], "natural_size": 32},
        "07-activation-maximisation": {"am_steps": 4, "grid_steps": 4, "channel_steps": 4,
                                       "n_channels": 2, "imagenet_size": 32,
                                       "imagenet_steps": 4, "jitter": 1,
                                       "transfer_repeats": 1, "attack_steps": 2,
                                       "n_boot": 100},
        "08-am-vs-gradcam": {"n_test_images": 24, "am_steps": 2, "deletion_steps": 2,
                             "n_boot": 50, "n_boot_paired": 200, "n_examples": 1,
                             "common_grid": 4, "fd_patch": 8, "n_sanity_images": 2},
        "09-global-cnn": {"N": 4, "n_per_class": 1, "num_resamples": 20, "deletion_steps": 2,
                          "n_boot": 100, "n_shown": 2, "cost_grids": [2, 4],
                          "cost_Ns": [4, 8], "chunk_size": 64, "convergence_N": 8,
                          "additive_samples": 50, "sanity_N": 2},
        "10-sanity-checks": {"n_images": 2, "am_steps": 2, "fd_patch": 8, "sobol_N": 2,
                             "sobol_grid": 2, "n_boot": 50},
    },
    "book": {},
    "full": {
        "06-local-sensitivity": {"patch": 1, "images_per_group": 2, "sweep_patch": 4,
                                 "patch_sizes": [8, 4, 2, 1], "natural_size": 224,
                                 "natural_patch": 1},
        "02-sobol-method": {"log2_N": 16, "coverage_log2_N_max": 16,
                            "coverage_repetitions": 100},
        "03-diabetes-network": {"n_repeats": 10},
        "04-diabetes-sobol": {"n_repeats": 10, "log2_N": 15, "n_seed_checks": 5,
                              "n_random_orderings": 20, "convergence_log2_N": 17,
                              "n_shapley_networks": 1000, "shapley_resamples": 1000},
        "07-activation-maximisation": {"am_steps": 512, "grid_steps": 256,
                                       "channel_steps": 256, "n_channels": 6,
                                       "imagenet_size": 224, "imagenet_steps": 512,
                                       "jitter": 8, "transfer_repeats": 8},
        "08-am-vs-gradcam": {"am_steps": 64, "fd_patch": 8, "deletion_steps": 20,
                             "n_boot": 2000, "n_examples": 3},
        "09-global-cnn": {"grid": 8, "N": 32, "n_per_class": 30, "chunk_size": 512,
                          "deletion_steps": 20, "n_boot": 2000, "n_shown": 6,
                          "convergence_N": 1024, "additive_samples": 512},
        "10-sanity-checks": {"n_images": 30, "am_steps": 64, "fd_patch": 8, "sobol_N": 32,
                             "n_boot": 2000},
    },
}


# Training of the ultrasound CNNs (lib.ultrasound.train.TrainConfig) per profile: settings shared
# by both networks, then per-architecture entries that take precedence. Changing any value
# retrains. Both networks see the same image size (later chapters feed them the same images).
# The ``book`` recipes follow the rule of scripts/select_cnn.py (book/cnn-selection.csv): the
# best validation balanced accuracy among the candidates whose training fits the cold-build
# budget on a 2-core CPU without bfloat16 (ties within 0.01 go to the lower validation loss):
# "xlong-quarterwidth" for VGG-16 (its layout at a quarter of the channel width, a sixteenth of
# the arithmetic, for 80 epochs), "fast-batch16-short" for ResNet-18 (batch 16, 30 epochs).
# Patience covers the whole one-cycle schedule, so the kept weights are the best validation
# epoch of the whole run.
# ``precision="auto"``: bfloat16 autocast where the hardware has it (the selection's "fast"
# candidates), float32 where bfloat16 would be emulated and many times slower.
CNN_TRAINING = {
    "smoke": {"image_size": 32, "epochs": 1, "batch_size": 16, "lr": 1e-3,
              "weight_decay": 5e-4, "patience": 1, "ema_decay": 0.9,
              "train_subset": 64, "val_subset": 32},
    "book": {"image_size": 96, "batch_size": 32, "lr": 2e-3, "weight_decay": 5e-4,
             "ema_decay": 0.99, "precision": "auto", "channels_last": True,
             "vgg16": {"epochs": 80, "patience": 80, "width": 0.25},
             "resnet18": {"epochs": 30, "patience": 30, "batch_size": 16}},
    "full": {"image_size": 224, "epochs": 60, "batch_size": 32, "lr": 2e-3,
              "weight_decay": 5e-4, "patience": 20, "ema_decay": 0.99},
}

# Training seeds per profile: every network is trained once per seed, and the CNN chapter
# reports each metric as the mean and range over them.
CNN_SEEDS = {"smoke": (0, 1), "book": (0, 1, 2), "full": (0, 1, 2)}

# The ResNet-18 of the data-randomisation check: trained on the training labels permuted with
# ``shuffled_labels_seed``, over the profile's ResNet-18 settings. No augmentation and no weight
# decay, so that it can memorise the noise; it keeps its last epoch.
_NO_AUGMENTATION = {"hflip": False, "rotate": 0.0, "scale": 0.0, "shift": 0.0, "gain": 0.0,
                    "contrast": 0.0, "speckle": 0.0}
CNN_SHUFFLED_LABELS = {
    "smoke": {"shuffled_labels_seed": 0, "augment": _NO_AUGMENTATION},
    "book": {"shuffled_labels_seed": 0, "augment": _NO_AUGMENTATION, "weight_decay": 0.0},
    "full": {"shuffled_labels_seed": 0, "augment": _NO_AUGMENTATION, "weight_decay": 0.0},
}


def check_profile(name: str) -> str:
    """The profile's name (an alias gives the name it stands for), or a ValueError."""
    name = ALIASES.get(name, name)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return name


def overrides(profile: str, chapter: str) -> dict:
    """The parameters ``profile`` sets for ``chapter`` (its ``profile`` knob included)."""
    profile = check_profile(profile)
    return {"profile": profile, **OVERRIDES[profile].get(chapter, {})}
