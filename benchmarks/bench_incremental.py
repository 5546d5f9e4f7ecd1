"""Per-pixel maps by incremental inference against brute force and Captum's Occlusion.

    .venv/bin/python benchmarks/bench_incremental.py [--arch vgg16 resnet18] [--sizes 96 224]
        [--channels all each] [--repeats 1] [--threads N] [--device cpu] [--full-map]
        [--field-cap 0.5 ...]

The book's VGG-16 and ResNet-18 (``lib.ultrasound.models.build``, random weights: the cost of a forward
does not depend on them) on one random RGB image, per-pixel forward differences with
``delta = 0.05``, three sides computing the same perturbations in batches of the same size:

- ours, incremental: ``lib.kernels.incremental`` (what ``fd_sensitivity`` runs by default);
- ours, full: ``fd_sensitivity(engine="full")``'s brute force, one whole forward per perturbed
  image (plus the unperturbed image in every batch);
- Captum with ``baselines = x + delta``, ``perturbations_per_eval`` equal to our batch size;
  its attribution is ``-delta`` times our map.

A whole map would take hours of brute force on two cores, so every side is timed on the same
grid of pixel positions (every ``r``-th row and ``c``-th column; the grid is printed). Captum's
``Occlusion`` cannot skip positions with 1 x 1 windows (its strides may not exceed the window),
so on the grid Captum runs ``FeatureAblation`` (of which ``Occlusion`` is a subclass: the same
perturbation loop) with one feature per grid pixel (per channel, or all channels together) and
one more feature for all other pixels: one extra perturbation. The incremental side's cost per
perturbation does not depend on where the pixel is. Beside each measured ratio: the
multiply-add bound (convolutions and linear layers of whole forwards over those the incremental
engine actually ran for the same perturbations), the feature maps the engine stores, and the
largest difference between the maps relative to the largest value.
``--field-cap 0.5`` also times the approximate engine (projective-field thresholding, never
the default) and prints its error against the exact map.
``--full-map`` also times whole per-pixel maps at 96 px: the incremental engine against Captum
``Occlusion`` with ``(1, 1, 1)`` or ``(3, 1, 1)`` windows and strides 1 (long: minutes for
ResNet-18, an hour or more for VGG-16).
Each side is warmed up on one batch first (kernel selection for new shapes). Differences are
the largest over the timed pixels relative to the largest value; ``full-Captum`` shows the
rounding noise of two brute-force implementations in float32 for comparison. The last two
columns are the ratios of process CPU time, less sensitive to other work on shared cores.
"""
import argparse
import os
import platform
import sys
from pathlib import Path

import torch
from captum.attr import FeatureAblation, Occlusion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import local  # noqa: E402
from lib.ultrasound import models  # noqa: E402
from lib.kernels import incremental  # noqa: E402
from lib.timing import best_times  # noqa: E402

DELTA = 0.05
TARGET = 1
CHANNELS = 3
# Perturbations per batch, and the grid (row stride, column stride) timed per channel mode:
# every side evaluates whole batches of the same size.
BATCH = {96: 64, 224: 32}
GRIDS = {96: {"all": (4, 4), "each": (6, 8)}, 224: {"all": (28, 19), "each": (56, 28)}}
WARM_UP_GRIDS = {96: (12, 12), 224: (56, 28)}


def grid_cells(size, strides, channels, dev):
    """Every ``strides[0]``-th row and ``strides[1]``-th column: (channel, row, col) cells."""
    rows = torch.arange(0, size, strides[0], device=dev)
    cols = torch.arange(0, size, strides[1], device=dev)
    groups = torch.arange(CHANNELS if channels == "each" else 1, device=dev)
    group, row, col = torch.meshgrid(groups, rows, cols, indexing="ij")
    return group.flatten(), row.flatten(), col.flatten()


def ours_incremental(model, x, cells, channels, batch, field_cap=None):
    group, row, col = cells
    size = x.shape[-1]
    with torch.inference_mode():
        engine = incremental.IncrementalEngine(model, x, field_cap=field_cap).set_images(x)
        values = incremental.cell_sensitivities(
            engine, torch.tensor([TARGET], device=x.device), DELTA, torch.zeros_like(row),
            group * size * size + row * size + col, channels=channels, chunk_size=batch)
    return values, engine


def ours_full(model, x, cells, channels, batch):
    """``fd_sensitivity(engine="full")``'s batches, restricted to the grid's cells."""
    group, row, col = cells
    size = x.shape[-1]
    layout = local._Layout(x.shape, 1, channels)
    index = group * size * size + row * size + col
    target = torch.tensor([TARGET], device=x.device)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(index), batch):
            steps = layout.steps(index[start:start + batch], x.dtype)
            parts.append(local._differences(model, x, steps, DELTA, target, "logit", "forward"))
    return torch.cat(parts)[:, 0]


def captum_ablation(model, x, cells, channels, batch):
    """FeatureAblation of the grid's pixels, one feature each, the other pixels one more."""
    group, row, col = cells
    size = x.shape[-1]
    depth = CHANNELS if channels == "each" else 1
    mask = torch.full((1, depth, size, size), len(row), dtype=torch.long, device=x.device)
    mask[0, group, row, col] = torch.arange(len(row))
    attribution = FeatureAblation(model).attribute(
        x, baselines=x + DELTA, target=TARGET, feature_mask=mask,
        perturbations_per_eval=batch)
    return -attribution[0, group, row, col] / DELTA


def relative_difference(values, reference):
    return ((values.double() - reference.double()).abs().max()
            / reference.double().abs().max()).item()


def compare(arch, size, channels, repeats, dev, caps):
    torch.manual_seed(0)
    model = models.build(arch).eval().to(dev)
    x = torch.rand(1, CHANNELS, size, size, device=dev)
    batch, strides = BATCH[size], GRIDS[size][channels]
    cells = grid_cells(size, strides, channels, dev)
    count = len(cells[0])
    warm = grid_cells(size, WARM_UP_GRIDS[size], "all", dev)
    warm = tuple(part[:batch] for part in warm)
    ours_incremental(model, x, warm, channels, batch)
    ours_full(model, x, warm, channels, batch)
    captum_ablation(model, x, warm, "all", batch)
    runs = {
        "incremental": lambda: ours_incremental(model, x, cells, channels, batch),
        "full": lambda: ours_full(model, x, cells, channels, batch),
        "captum": lambda: captum_ablation(model, x, cells, channels, batch),
    }
    for cap in caps:
        ours_incremental(model, x, warm, channels, batch, cap)
        runs[cap] = lambda cap=cap: ours_incremental(model, x, cells, channels, batch, cap)
    times = best_times(runs, repeats=repeats, warmup=False, device=dev)
    values, engine = times["incremental"].result
    bound = engine.full_macs_per_image * count / engine.macs
    row = {
        "arch": arch, "size": size, "channels": channels, "count": count, "strides": strides,
        "incremental": times["incremental"].wall, "full": times["full"].wall,
        "captum": times["captum"].wall, "bound": bound,
        "cpu": {name: timing.cpu for name, timing in times.items()},
        "stored_mb": engine.stored_bytes / 2 ** 20,
        "vs_captum": relative_difference(values, times["captum"].result),
        "vs_full": relative_difference(values, times["full"].result),
        "full_vs_captum": relative_difference(times["full"].result, times["captum"].result),
    }
    print_row(row)
    for cap in caps:
        approximate, capped = times[cap].result
        error = (approximate - values).norm() / values.norm()
        print(f"{'':>9} approximate, field cap {cap}: {times[cap].wall:.2f} s, "
              f"{times['incremental'].wall / times[cap].wall:.2f}x the exact incremental, "
              f"MAC bound {capped.full_macs_per_image * count / capped.macs:.2f}; error against "
              f"the exact map: largest {relative_difference(approximate, values):.1e}, "
              f"relative norm {error.item():.1e}", flush=True)


HEADER = (f"{'network':>9} {'px':>4} {'chan':>5} {'perturb.':>8} {'grid':>8} "
          f"{'incr s':>7} {'full s':>7} {'Captum s':>8} {'Captum/incr':>11} {'full/incr':>9} "
          f"{'MAC bound':>9} {'stored MB':>9} {'diff vs Captum':>14} {'vs full':>8} "
          f"{'full-Captum':>12} {'CPU: C/incr':>11} {'f/incr':>7}")


def print_row(row):
    grid = f"{row['strides'][0]}x{row['strides'][1]}"
    print(f"{row['arch']:>9} {row['size']:>4} {row['channels']:>5} {row['count']:>8} "
          f"{grid:>8} {row['incremental']:7.2f} {row['full']:7.2f} {row['captum']:8.2f} "
          f"{row['captum'] / row['incremental']:11.2f} {row['full'] / row['incremental']:9.2f} "
          f"{row['bound']:9.2f} {row['stored_mb']:9.1f} {row['vs_captum']:14.1e} "
          f"{row['vs_full']:8.1e} {row['full_vs_captum']:12.1e} "
          f"{row['cpu']['captum'] / row['cpu']['incremental']:11.2f} "
          f"{row['cpu']['full'] / row['cpu']['incremental']:7.2f}", flush=True)


def full_maps(arch, channels, dev):
    """Whole 96 px per-pixel maps: the incremental engine against Captum's Occlusion."""
    torch.manual_seed(0)
    model = models.build(arch).eval().to(dev)
    x = torch.rand(1, CHANNELS, 96, 96, device=dev)
    batch = BATCH[96]
    depth = CHANNELS if channels == "all" else 1

    def occlusion():
        attribution = Occlusion(model).attribute(
            x, sliding_window_shapes=(depth, 1, 1), strides=1, baselines=x + DELTA,
            target=TARGET, perturbations_per_eval=batch)
        return -(attribution[:, :1] if channels == "all" else attribution) / DELTA

    times = best_times({
        "incremental": lambda: local.fd_sensitivity(
            model, x, TARGET, DELTA, channels=channels, chunk_size=batch,
            engine="incremental", show_progress=False),
        "occlusion": occlusion}, repeats=1, warmup=False, device=dev)
    ours, theirs = times["incremental"].result, times["occlusion"].result
    print(f"  {arch} 96 px whole map, channels={channels}: {ours.numel()} perturbations, "
          f"incremental {times['incremental'].wall:.1f} s, Captum Occlusion "
          f"{times['occlusion'].wall:.1f} s, ratio "
          f"{times['occlusion'].wall / times['incremental'].wall:.2f}, "
          f"difference {relative_difference(ours, theirs):.1e}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["vgg16", "resnet18"],
                        choices=list(models.ARCHS))
    parser.add_argument("--sizes", type=int, nargs="*", default=[96, 224], choices=[96, 224],
                        help="image sizes of the grid comparisons (none: only --full-map)")
    parser.add_argument("--channels", nargs="+", default=["all", "each"],
                        choices=["all", "each"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--field-cap", type=float, nargs="*", default=[],
                        help="also time the approximate engine with these field caps")
    parser.add_argument("--full-map", action="store_true",
                        help="also time whole 96 px maps against Captum Occlusion")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"{platform.node()} | {lib.hardware.describe(dev)} | torch "
          f"{torch.__version__} | load average {os.getloadavg()[0]:.2f}")
    print(f"per-pixel forward differences, delta {DELTA}, one {CHANNELS}-channel image; batch "
          f"{BATCH} perturbations by size; grid = row x column stride of the timed pixels")
    print(HEADER, flush=True)
    for size in args.sizes:
        for arch in args.arch:
            for channels in args.channels:
                compare(arch, size, channels, args.repeats, dev, args.field_cap)
    if args.full_map:
        print("whole maps at 96 px (no warm-up):")
        for arch in args.arch:
            for channels in args.channels:
                full_maps(arch, channels, dev)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
