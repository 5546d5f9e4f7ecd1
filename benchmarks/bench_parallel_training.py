"""Throughput of CNN training on a CPU: one training on every core's threads, against one
single-thread training per core side by side (what ``python -m lib train`` does).

Each worker runs ``lib.ultrasound.train.train_step`` with the ``book`` profile's settings
(image size, batch size, precision, memory layout) on a fixed batch; the side-by-side workers
start together behind a barrier. The ratio is the combined images/s of the side-by-side
trainings over the images/s of the one multi-thread training, measured in one run.

    .venv/bin/python benchmarks/bench_parallel_training.py [--batches 6] [--archs vgg16]

Run it on otherwise idle cores: other work on the machine slows the two set-ups unequally.
"""
import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def steps_per_second(arch: str, threads: int, batches: int, barrier=None) -> float:
    """Training steps per second of ``arch`` at the book settings with ``threads`` threads."""
    import torch

    from lib.ultrasound import checkpoints, models, train

    torch.set_num_threads(threads)
    config = checkpoints.config_for(arch, "book")
    torch.manual_seed(0)
    model = models.build(arch).train()
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    images = torch.rand(config.batch_size, 1, config.image_size, config.image_size)
    labels = torch.arange(config.batch_size) % 3
    weights = torch.ones(3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step():
        train.train_step(model, images, labels, weights, optimizer, config.augment, generator,
                         precision=config.precision, channels_last=config.channels_last)

    step()  # warm-up: allocation and kernel choice
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches / (time.perf_counter() - start)


def _worker(arch, batches, barrier, results):
    results.put(steps_per_second(arch, 1, batches, barrier))


def side_by_side(arch: str, processes: int, batches: int) -> float:
    """Combined steps per second of ``processes`` single-thread trainings run together."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_worker, args=(arch, batches, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    rates = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args(argv)
    from lib.ultrasound import checkpoints

    cores = os.cpu_count() or 1
    print(f"{cores} CPU cores; book settings; {args.batches} timed steps per training")
    print(f"{'network':10} {'1 x ' + str(cores) + ' threads':>16} "
          f"{str(cores) + ' x 1 thread':>14} {'ratio':>7}   (images/s)")
    for arch in args.archs:
        batch = checkpoints.config_for(arch, "book").batch_size
        together = steps_per_second(arch, cores, args.batches) * batch
        apart = side_by_side(arch, cores, args.batches) * batch
        print(f"{arch:10} {together:16.1f} {apart:14.1f} {apart / together:6.2f}x", flush=True)


if __name__ == "__main__":
    main()
