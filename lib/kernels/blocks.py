"""How many perturbed images one forward pass takes when the caller leaves it to the kernel.

The perturbation kernels (deletion and insertion curves, Sobol' maps) run thousands of forwards
of small images. On a CPU a small block is fastest: the activations of a block of 16 images of
96 x 96 stay in the processor's cache, where a block of 64 or 128 spills them to memory
(``benchmarks/bench_chunks.py`` measures it). On a GPU a large block keeps the device busy;
each kernel names its own GPU default.
"""
import torch

from . import checks

# Perturbed images per forward on a CPU when the caller does not say.
CPU_BLOCK = 16


def forward_block(chunk_size, device, gpu_default: int) -> int:
    """``chunk_size`` checked (a positive int), or, when it is None, ``CPU_BLOCK`` on a CPU and
    ``gpu_default`` on any other device."""
    if chunk_size is None:
        return CPU_BLOCK if torch.device(device).type == "cpu" else gpu_default
    return checks.positive_int("chunk_size", chunk_size)
