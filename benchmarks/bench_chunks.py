"""Forward throughput of the book's two networks against the number of images per forward.

    .venv/bin/python benchmarks/bench_chunks.py [--blocks 8 16 32 64 128] [--size 96]
                                                [--images 256] [--repeats 3]

The perturbation kernels (deletion and insertion curves, Sobol' maps) pass thousands of
perturbed images through a network in blocks; ``lib.kernels.blocks.CPU_BLOCK`` is the block
they use on a CPU when the caller does not choose. This script times ``--images`` images
through each network (the book profile's layout: VGG-16 at its book width and ResNet-18,
randomly initialised, since the cost does not depend on the weights, in the memory format the
book's networks are trained and stored in: channels-last weights run about 1.6 times faster
than contiguous ones on a 2-core AVX2 CPU) in blocks of each size,
best of ``--repeats`` with the sizes interleaved, and prints milliseconds per image and the
ratio to the kernels' default block (above 1: the default is faster; on a GPU the default
is that of the Sobol' maps, ``lib.kernels.sobol_images.DEFAULT_CHUNK_SIZE``).
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lib  # noqa: E402
from lib.kernels import blocks, sobol_images  # noqa: E402
from lib.ultrasound import checkpoints, models  # noqa: E402


def per_image_ms(model, images, block):
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, images.shape[0], block):
            model(images[first:first + block])
    if images.is_cuda:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / images.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dev = lib.setup("book", 0)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"device {dev}, load average {os.getloadavg()[0]:.2f}")
    default = blocks.forward_block(None, dev, sobol_images.DEFAULT_CHUNK_SIZE)
    sizes = sorted(set(args.blocks) | {default})
    images = torch.rand(args.images, 1, args.size, args.size,
                        generator=torch.Generator().manual_seed(0)).to(dev)
    for arch in models.ARCHS:
        config = checkpoints.config_for(arch, "book")
        width = config.width
        model = models.build(arch, width=width).eval().to(dev)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        per_image_ms(model, images[:default], default)  # warm-up
        best = {block: float("inf") for block in sizes}
        for _ in range(args.repeats):
            for block in sizes:
                best[block] = min(best[block], per_image_ms(model, images, block))
        cells = "  ".join(f"{block:3d}: {ms:5.2f} ms ({ms / best[default]:4.2f}x)"
                          for block, ms in best.items())
        print(f"{arch:9s} width {width:g}  {cells}")


if __name__ == "__main__":
    main()
