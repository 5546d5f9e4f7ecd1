"""The compute device, seeding and determinism."""
import os
import random

import numpy as np
import torch


def device() -> torch.device:
    """CUDA when present, else the CPU; ``NNSA_DEVICE`` overrides (e.g. ``cpu``)."""
    name = os.environ.get("NNSA_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cuBLAS needs this to be deterministic; harmless on the CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def synchronize(dev: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it (CUDA only)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def describe(dev: torch.device) -> str:
    """A short human name for a device, e.g. ``cuda (NVIDIA H200)`` or ``cpu (2 threads)``."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
