"""Sobol' maps of a batch of images: one shared design (lib.sobol_images) against a per-image loop.

    .venv/bin/python benchmarks/bench_sobol_images.py [--arch small resnet18 vgg16] [--images 8]
        [--size 32] [--grid 4] [--N 16] [--num-resamples 100] [--chunk-size 256]
        [--batch-size 256] [--repeats 3] [--threads T]

Both sides compute the same thing for the same images, design, budget and network: first-order
and total Sobol' indices of g x g regions with bootstrap confidence intervals, N (g^2 + 2)
forward passes per image, the "blur" baseline, each image's predicted class.

- **per-image loop**, the way existing tools do it (the Sobol attribution method of Fel et al.
  and Xplique): for each image in turn, the masks go through the network ``--batch-size`` at a
  time (upsampled, applied to that image, scores moved to NumPy), then SALib's
  ``analyze.sobol`` estimates the indices and their bootstrap intervals for that image;
- **shared design**: ``lib.kernels.sobol_images.sobol_maps``: (mask, image) pairs of the whole batch
  in chunks of ``--chunk-size`` on the device, then one call of the estimator kernel for every
  image at once.

The networks have random weights (the cost does not depend on them): ``small`` is a
three-layer CNN, where the per-image overheads weigh most; ``resnet18`` and ``vgg16`` are the
book's networks, where the forward passes, identical on both sides, dominate. The script
prints both wall times (best of ``--repeats``, interleaved, after a warm-up), each side's split
into forwards and estimator (SALib per image, or one ``lib.sobol`` call for the batch), the
ratios loop / shared (above 1: the shared design is faster) overall and per part, and the
largest difference between the two sides' indices. The load average is printed, since other
work on the same cores slows both sides.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from SALib.analyze import sobol as salib_sobol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import sobol_images  # noqa: E402
from lib.timing import best_times  # noqa: E402
from lib.ultrasound import models  # noqa: E402

ARCHS = ("small", "resnet18", "vgg16")
BOOTSTRAP_SEED = 1  # SALib reads a seed of 0 as "no seed"


def network(arch, dev):
    torch.manual_seed(0)
    if arch == "small":
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    else:
        net = models.build(arch)
    return net.eval().to(dev)


def per_image_loop(model, images, fill, masks, classes, args):
    """Indices image by image: forwards in batches of masks, then SALib on that image.

    Returns the indices {key: (images, g^2) array} and the seconds spent in forwards and
    in SALib."""
    D = args.grid ** 2
    problem = {"num_vars": D, "names": [f"r{i}" for i in range(D)], "bounds": [[0, 1]] * D}
    results, forward_s, salib_s = [], 0.0, 0.0
    for image, baseline, label in zip(images, fill, classes.tolist()):
        start = time.perf_counter()
        scores = []
        with torch.inference_mode():
            for first in range(0, len(masks), args.batch_size):
                batch = F.interpolate(masks[first:first + args.batch_size, None],
                                      size=image.shape[-2:], mode="nearest")
                perturbed = baseline + batch * (image - baseline)
                scores.append(model(perturbed)[:, label].cpu().numpy())
        y = np.concatenate(scores).astype(np.float64)
        middle = time.perf_counter()
        results.append(salib_sobol.analyze(problem, y, calc_second_order=False,
                                           num_resamples=args.num_resamples,
                                           seed=BOOTSTRAP_SEED))
        forward_s += middle - start
        salib_s += time.perf_counter() - middle
    indices = {key: np.stack([r[key] for r in results]) for key in sobol_images.INDICES}
    return indices, {"forward": forward_s, "salib": salib_s}


def compare(arch, args, dev):
    model = network(arch, dev)
    images = torch.rand(args.images, 1, args.size, args.size,
                        generator=torch.Generator().manual_seed(1)).to(dev)
    fill = sobol_images.baseline_images(images, "blur")
    masks = sobol_images.mask_design(args.grid, args.N, seed=BOOTSTRAP_SEED, device=dev)
    with torch.inference_mode():
        classes = model(images).argmax(dim=1)

    def shared():
        return sobol_images.sobol_maps(model, images, classes, grid=args.grid, N=args.N,
                                       num_resamples=args.num_resamples, seed=BOOTSTRAP_SEED,
                                       chunk_size=args.chunk_size, show_progress=False)

    def shared_forwards():
        return sobol_images.evaluate_masks(model, images, fill, masks, classes,
                                           chunk_size=args.chunk_size, show_progress=False)

    measured = best_times({"shared": shared, "loop": lambda: per_image_loop(
        model, images, fill, masks, classes, args), "shared forwards": shared_forwards},
        args.repeats, device=dev)
    outputs = measured["shared forwards"].result
    measured.update(best_times({"shared estimator": lambda: sobol_images.maps_from_outputs(
        outputs, args.grid, num_resamples=args.num_resamples, seed=BOOTSTRAP_SEED)},
        args.repeats, device=dev))
    ours_time, ours = measured["shared"].wall, measured["shared"].result
    loop_time, (theirs, timings) = measured["loop"].wall, measured["loop"].result
    difference = max(np.abs(getattr(ours, key).flatten(1).cpu().numpy() - theirs[key]).max()
                     for key in sobol_images.INDICES)
    forwards = args.images * sobol_images.forward_passes(args.grid, args.N)
    forward_s, estimator_s = (measured[key].wall for key in ("shared forwards",
                                                             "shared estimator"))
    print(f"{arch:9s} {args.images} images x {forwards // args.images} forwards, "
          f"{args.size} px, g={args.grid}, N={args.N}:  shared {ours_time:8.2f} s "
          f"(forwards {forward_s:.2f} s, estimator {estimator_s:.3f} s)  loop {loop_time:8.2f} s "
          f"(forwards {timings['forward']:.2f} s, SALib {timings['salib']:.3f} s)  "
          f"ratio {loop_time / ours_time:5.2f}x (forwards {timings['forward'] / forward_s:.2f}x, "
          f"estimator {timings['salib'] / estimator_s:.1f}x)  max |difference| {difference:.1e}",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["small", "resnet18"], choices=ARCHS)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--N", type=int, default=16)
    parser.add_argument("--num-resamples", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=256,
                        help="(mask, image) pairs per forward of the shared design")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="masks per forward of the per-image loop (Xplique's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = lib.device()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {lib.hardware.describe(dev)}, torch {torch.__version__}, "
          f"{platform.machine()}, load average {load:.1f}")
    for arch in args.arch:
        compare(arch, args, dev)


if __name__ == "__main__":
    main()
