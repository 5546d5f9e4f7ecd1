"""Training throughput (images/s) of the ultrasound CNNs: float32 against channels-last memory
layout, bfloat16 autocast and both, and VGG-16 at half and a quarter of its channel width, side
by side in one run; inference throughput beside them, at the ``book`` profile's width, in the
default layout (as the chapters ran before) and in channels-last (as
``lib.ultrasound.checkpoints`` loads the networks for the chapters now).

Every variant runs ``lib.ultrasound.train.train_step`` (batched augmentation on the device,
forward, backward, AdamW step) on the same batch, from the same initial weights; the timed runs
of the variants are interleaved so that a change of load on shared cores hits all of them alike.
``before`` is float32 in the default layout (the book's setting before these options existed),
``book`` marks the variant the ``book`` profile now trains with. ``--reference`` adds the usual
torchvision recipe (``transforms.v2`` image by image, as a ``DataLoader`` does) at float32.
Where the CPU has no bfloat16 instructions the bfloat16 variants are emulated and many times
slower; they are skipped there unless ``--emulated-bfloat16`` asks for them.

    .venv/bin/python benchmarks/bench_train.py [--sizes 96 224] [--batches 3] [--archs vgg16]

On shared cores read the rates per second of CPU time (in brackets): they stay close to what the
process reaches alone, times its threads. An epoch of the ``book`` profile takes (training
images / throughput); multiply by the epochs for a training-time estimate on this machine.
"""
import argparse
import copy
import sys
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import hardware  # noqa: E402
from lib.book import profiles  # noqa: E402
from lib.timing import best_times  # noqa: E402
from lib.ultrasound import checkpoints, models, train  # noqa: E402

# name -> (precision, channels_last, width); the first is the baseline of every ratio
VARIANTS = {"float32": ("float32", False, 1.0), "channels-last": ("float32", True, 1.0),
            "bfloat16": ("bfloat16", False, 1.0),
            "bfloat16 + channels-last": ("bfloat16", True, 1.0),
            "half width + channels-last": ("float32", True, 0.5),
            "half width + bf16 + channels-last": ("bfloat16", True, 0.5),
            "quarter width + channels-last": ("float32", True, 0.25)}


INFERENCE_BEFORE, INFERENCE_NOW = "inference, float32", "inference, channels-last"


def variants_for(arch, dev, emulated_bfloat16=False) -> dict:
    """The variants that apply to ``arch`` on ``dev`` (width only for VGG-16)."""
    fast = hardware.has_fast_bfloat16(dev) or emulated_bfloat16
    return {name: setting for name, setting in VARIANTS.items()
            if (setting[2] == 1 or arch == "vgg16") and (setting[0] != "bfloat16" or fast)}


def reference_augmentation(aug: train.Augmentation):
    """The closest per-image torchvision pipeline to ``aug`` (speckle has no counterpart)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=aug.rotate, translate=(aug.shift, aug.shift),
                        scale=(1 - aug.scale, 1 + aug.scale)),
        v2.ColorJitter(brightness=aug.gain, contrast=aug.contrast),
    ])


def training_runs(arch, size, batch_size, batches, dev, reference=False, variants=VARIANTS):
    """``{variant: callable}``, each running ``batches`` training steps of its own model copy."""
    initials = {}
    for width in sorted({setting[2] for setting in variants.values()}, reverse=True):
        torch.manual_seed(0)
        initials[width] = models.build(arch, width=width).to(dev).train()
    initial = initials[1.0]
    images = torch.rand(batch_size, 1, size, size, device=dev)
    labels = torch.arange(batch_size, device=dev) % 3
    weights = torch.ones(3, device=dev)
    aug = train.Augmentation()
    runs = {}
    for name, (precision, channels_last, width) in variants.items():
        model = copy.deepcopy(initials[width])
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator(device=dev).manual_seed(0)

        def run(model=model, optimizer=optimizer, generator=generator,
                precision=precision, channels_last=channels_last):
            for _ in range(batches):
                train.train_step(model, images, labels, weights, optimizer, aug, generator,
                                 precision=precision, channels_last=channels_last)
        runs[name] = run
    if reference:
        model = copy.deepcopy(initial)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        per_image = reference_augmentation(aug)

        def torchvision_recipe():
            for _ in range(batches):
                batch = torch.stack([per_image(image) for image in images])
                loss = torch.nn.functional.cross_entropy(model(batch), labels, weight=weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        runs["float32, per-image torchvision"] = torchvision_recipe
    torch.manual_seed(0)
    plain = models.build(arch, width=checkpoints.config_for(arch, "book").width).to(dev).eval()
    laid_out = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    for name, model in ((INFERENCE_BEFORE, plain), (INFERENCE_NOW, laid_out)):
        runs[name] = lambda model=model: [models.predict_logits(model, images, batch_size)
                                          for _ in range(batches)]
    return runs


def book_variant(arch):
    config = checkpoints.config_for(arch, "book")
    return next((name for name, setting in VARIANTS.items()
                 if setting == (config.precision, config.channels_last, config.width)), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    book = profiles.CNN_TRAINING["book"]
    parser.add_argument("--sizes", type=int, nargs="+", default=[book["image_size"]])
    parser.add_argument("--archs", nargs="+", default=list(models.ARCHS),
                        choices=models.ARCHS)
    parser.add_argument("--batch-size", type=int, default=book["batch_size"])
    parser.add_argument("--batches", type=int, default=3, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (default: torch's)")
    parser.add_argument("--reference", action="store_true",
                        help="also time the per-image torchvision augmentation recipe")
    parser.add_argument("--emulated-bfloat16", action="store_true",
                        help="time bfloat16 also where the CPU only emulates it (slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    print(f"torch {torch.__version__}, {args.threads} threads, batch size {args.batch_size}, "
          f"{args.batches} steps per run, best of {args.repeats} interleaved runs; images per "
          f"second of wall time (per second of process CPU time); ratio = CPU-time rate / "
          f"float32's, inference rows / default-layout inference's (wall-time ratio in "
          f"brackets); higher is better")
    print(f"{'model':9} {'px':>4} {'device':12} {'variant':31} {'images/s':>17} "
          f"{'ratio':>13}")
    for dev in devices:
        for size in args.sizes:
            for arch in args.archs:
                variants = variants_for(arch, dev, args.emulated_bfloat16)
                if not (hardware.has_fast_bfloat16(dev) or args.emulated_bfloat16):
                    print(f"{arch}: bfloat16 skipped on {hardware.describe(dev)} (emulated "
                          f"there; --emulated-bfloat16 times it anyway)")
                runs = training_runs(arch, size, args.batch_size, args.batches, dev,
                                     args.reference, variants)
                times = best_times(runs, args.repeats, device=dev)
                images = args.batch_size * args.batches
                book_name = book_variant(arch)
                for name, timed in times.items():
                    mark = {"float32": "  before", book_name: "  book",
                            INFERENCE_BEFORE: "  before", INFERENCE_NOW: "  chapters"}.get(
                        name, "")
                    if name == "float32" == book_name:
                        mark = "  before = book"
                    base = times[INFERENCE_BEFORE if name.startswith("inference")
                                 else "float32"]
                    ratio = f"{base.cpu / timed.cpu:5.2f} ({base.wall / timed.wall:4.2f})"
                    print(f"{arch:9} {size:4d} {hardware.describe(dev)[:12]:12} {name:31} "
                          f"{images / timed.wall:7.1f} ({images / timed.cpu:6.1f}) "
                          f"{ratio:>13}{mark}", flush=True)


if __name__ == "__main__":
    main()
