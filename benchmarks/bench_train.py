"""Training and inference throughput (images/s) of the ultrasound CNNs, per model and device.

Our training step augments the whole batch at once on the device (``lib.ultrasound.train.train_step``).
The reference is the usual torchvision recipe: ``transforms.v2`` applied image by image, as a
``DataLoader`` does, followed by the same forward and backward pass. Both see the same batch
size, image size, model and optimiser; the ratio is ours / reference.

    .venv/bin/python benchmarks/bench_train.py [--sizes 96 224] [--batches 4] [--archs vgg16]

The ``book`` profile's epoch time is (training images / throughput); multiply by the number of
epochs for a training-time estimate on this machine.
"""
import argparse
import sys
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import hardware  # noqa: E402
from lib.book import profiles  # noqa: E402
from lib.timing import best_time  # noqa: E402
from lib.ultrasound import models, train  # noqa: E402


def reference_augmentation(aug: train.Augmentation):
    """The closest per-image torchvision pipeline to ``aug`` (speckle has no counterpart)."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=aug.rotate, translate=(aug.shift, aug.shift),
                        scale=(1 - aug.scale, 1 + aug.scale)),
        v2.ColorJitter(brightness=aug.gain, contrast=aug.contrast),
    ])


def images_per_second(step, batch_size, batches, dev):
    """Throughput per second of wall time and per second of this process's CPU time.

    On a CPU shared with other jobs the wall-time rate drops while the CPU-time rate stays
    close to what the process would reach alone (divided by the threads it uses).
    """
    timed = best_time(lambda: [step() for _ in range(batches)], 1, device=dev)
    images = batch_size * batches
    return images / timed.wall, images / timed.cpu


def measure(arch, size, batch_size, batches, dev):
    torch.manual_seed(0)
    model = models.build(arch).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(batch_size, 1, size, size, device=dev)
    labels = torch.arange(batch_size, device=dev) % 3
    weights = torch.ones(3, device=dev)
    aug = train.Augmentation()
    generator = torch.Generator(device=dev).manual_seed(0)
    per_image = reference_augmentation(aug)

    def ours():
        train.train_step(model, images, labels, weights, optimizer, aug, generator)

    def reference():
        batch = torch.stack([per_image(image) for image in images])
        loss = torch.nn.functional.cross_entropy(model(batch), labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def inference():
        models.predict_logits(model, images, chunk_size=batch_size)

    ours_rate = images_per_second(ours, batch_size, batches, dev)
    reference_rate = images_per_second(reference, batch_size, batches, dev)
    model.eval()
    inference_rate = images_per_second(inference, batch_size, batches, dev)
    return ours_rate, reference_rate, inference_rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    book = profiles.CNN_TRAINING["book"]
    parser.add_argument("--sizes", type=int, nargs="+", default=[book["image_size"]])
    parser.add_argument("--archs", nargs="+", default=list(models.ARCHS),
                        choices=models.ARCHS)
    parser.add_argument("--batch-size", type=int, default=book["batch_size"])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (default: torch's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    print(f"torch {torch.__version__}, batch size {args.batch_size}, {args.batches} timed "
          f"batches; images per second of wall time (per second of process CPU time in "
          f"brackets); higher is better")
    print(f"{'model':9} {'px':>4} {'device':20} {'train, ours':>17} {'train, reference':>17} "
          f"{'ratio':>6} {'inference':>17}")
    for dev in devices:
        for size in args.sizes:
            for arch in args.archs:
                ours, reference, inference = measure(arch, size, args.batch_size,
                                                     args.batches, dev)
                print(f"{arch:9} {size:4d} {hardware.describe(dev):20} {rates(ours):>17} "
                      f"{rates(reference):>17} {ours[0] / reference[0]:6.2f} "
                      f"{rates(inference):>17}", flush=True)


def rates(pair):
    return f"{pair[0]:.1f} ({pair[1]:.1f})"


if __name__ == "__main__":
    main()
