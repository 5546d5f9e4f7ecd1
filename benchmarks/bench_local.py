"""lib.kernels.local.fd_sensitivity against Captum's FeatureAblation and Occlusion, side by side.

    .venv/bin/python benchmarks/bench_local.py [--model resnet18] [--repeats 3] [--threads N]
                                               [--per-forward 32 64 128]

Both sides compute the same perturbations of the same model on the same images: Captum with
``baselines = x + delta`` returns ``f(x) - f(x + delta e)`` for every pixel or patch ``e``, which
is ``-delta`` times our forward-difference map. Cases:

1. per-pixel map, all channels together, one 32 x 32 image (1024 perturbations);
2. per-channel map of 4 x 4 patches, two 64 x 64 images in one call (768 perturbations each).

Each size in ``--per-forward`` is used as Captum's ``perturbations_per_eval`` and as our
``chunk_size``, so every pair evaluates the same batches; ours also runs at its automatic chunk
size. The script prints every time, the ratios Captum best / ours (above 1: ours is faster) and
the largest difference between the maps. On a GPU it also times a full 224 x 224 per-pixel map
of ResNet-18 (50176 perturbations, all channels together).
Every setting runs ``--repeats`` times, interleaved with the others, and its best time counts;
the load average is printed, since other work on the same cores slows both sides.
"""
import argparse
import os
import platform
import sys
from pathlib import Path

import torch
import torchvision
from captum.attr import FeatureAblation, Occlusion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import local  # noqa: E402
from lib.timing import best_time, best_times  # noqa: E402

DELTA = 0.05
CASES = (  # name, images, size, patch, channels
    ("per pixel, all channels", 1, 32, 1, "all"),
    ("4x4 patches, per channel, 2 images", 2, 64, 4, "each"),
)


def make_model(name, dev):
    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        return lib.ultrasound.imagenet.load_model(name, dev)
    # Random weights: the cost of a forward does not depend on them.
    return torchvision.models.get_model(name, num_classes=10).eval().to(dev)


def ours(model, x, target, patch, channels, chunk_size):
    return local.fd_sensitivity(model, x, target, DELTA, patch=patch, channels=channels,
                                chunk_size=chunk_size, show_progress=False)


def captum_ablation(model, x, target, patch, channels, per_eval):
    """FeatureAblation with one feature per patch (and per channel for ``channels="each"``)."""
    _, num_channels, height, width = x.shape
    rows, cols = height // patch, width // patch
    cells = torch.arange(rows * cols, device=x.device).view(rows, cols)
    mask = cells.repeat_interleave(patch, 0).repeat_interleave(patch, 1).view(1, 1, height, width)
    if channels == "each":
        offsets = torch.arange(num_channels, device=x.device).view(1, -1, 1, 1) * rows * cols
        mask = mask + offsets
    attribution = FeatureAblation(model).attribute(
        x, baselines=x + DELTA, target=target, feature_mask=mask,
        perturbations_per_eval=per_eval)
    return -(attribution[:, :1] if channels == "all" else attribution) / DELTA


def captum_occlusion(model, x, target, patch, channels, per_eval):
    """Occlusion with non-overlapping windows: the same perturbations as FeatureAblation."""
    depth = x.shape[1] if channels == "all" else 1
    window = (depth, patch, patch)
    attribution = Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=window, baselines=x + DELTA, target=target,
        perturbations_per_eval=per_eval)
    return -(attribution[:, :1] if channels == "all" else attribution) / DELTA


def compare(model, case, sizes, repeats, dev):
    """Time ours and Captum at every chunk size, interleaved ``repeats`` times; best counts.

    ``sizes`` are used both as Captum's ``perturbations_per_eval`` and as our ``chunk_size``
    (perturbations per forward), so each pair evaluates the same batches; ours also runs at
    its automatic chunk size (key ``"auto"``).
    """
    name, batch, size, patch, channels = case
    torch.manual_seed(1)
    x = torch.rand(batch, 3, size, size, device=dev)
    target = torch.arange(batch, device=dev)
    runs = {("ours", "auto"): lambda: ours(model, x, target, patch, channels, None)}
    for chunk in sizes:
        runs["ours", chunk] = lambda chunk=chunk: ours(model, x, target, patch, channels, chunk)
        for label, method in (("FeatureAblation", captum_ablation),
                              ("Occlusion", captum_occlusion)):
            runs[label, chunk] = (lambda method=method, chunk=chunk:
                                  method(model, x, target, patch, channels, chunk))
    timed = best_times(runs, repeats, warmup=False, device=dev)
    times = {key: timing.wall for key, timing in timed.items()}
    maps = {key: timing.result for key, timing in timed.items()}
    report(name, x, patch, model, sizes, times, maps)


def report(name, x, patch, model, sizes, times, maps):
    batch, _, size, _ = x.shape
    reference = maps["ours", "auto"]
    print(f"\n{name}: {batch} x 3 x {size} x {size}, "
          f"{reference[0].numel() // patch ** 2} perturbations per image")
    print(f"  {'per forward':>12} {'ours':>8} {'FeatureAblation':>16} {'Occlusion':>10}")
    for chunk in sizes:
        print(f"  {chunk:>12} {times['ours', chunk]:8.2f} {times['FeatureAblation', chunk]:16.2f}"
              f" {times['Occlusion', chunk]:10.2f}")
    auto = local.auto_chunk_size(model, x)
    print(f"  {'auto (' + str(auto) + ')':>12} {times['ours', 'auto']:8.2f}")
    best_ours = min(value for (side, _), value in times.items() if side == "ours")
    for label in ("FeatureAblation", "Occlusion"):
        best = min(times[label, chunk] for chunk in sizes)
        difference = max((maps[label, chunk].to(reference.dtype) - reference).abs().max().item()
                         for chunk in sizes)
        print(f"  Captum {label}: best / ours best = {best / best_ours:5.2f}, "
              f"best / ours auto = {best / times['ours', 'auto']:5.2f}; "
              f"largest map difference {difference:.1e}")


def full_map_on_gpu(dev):
    """A full 224 x 224 per-pixel map of ResNet-18 (all channels together)."""
    model = torchvision.models.resnet18(num_classes=1000).eval().to(dev)
    x = torch.rand(1, 3, 224, 224, device=dev)
    timed = best_time(lambda: local.fd_sensitivity(model, x, 0, DELTA, channels="all"), 1,
                      warmup=False, device=dev)
    seconds, result = timed.wall, timed.result
    print(f"\nResNet-18, full 224 x 224 per-pixel map on {lib.hardware.describe(dev)}: "
          f"{seconds:.1f} s for {result[0].numel()} perturbations "
          f"(chunk {local.auto_chunk_size(model, x)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18",
                        choices=["resnet18", "vgg16", "efficientnet_lite0"])
    parser.add_argument("--per-forward", type=int, nargs="+", default=[32, 64, 128],
                        help="perturbations per forward: Captum's perturbations_per_eval and "
                             "our chunk_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = lib.device()
    print(f"{platform.node()} | {lib.hardware.describe(dev)} | torch {torch.__version__} | "
          f"load average {os.getloadavg()[0]:.2f} | model {args.model}")
    model = make_model(args.model, dev)
    with torch.inference_mode():  # warm up the kernels once
        model(torch.rand(2, 3, 32, 32, device=dev))
    for case in CASES:
        compare(model, case, args.per_forward, args.repeats, dev)
    if dev.type == "cuda":
        full_map_on_gpu(dev)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
