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


def has_fast_bfloat16(dev: torch.device) -> bool:
    """True where bfloat16 arithmetic runs in hardware: a CUDA GPU that supports it, or a CPU
    with AVX-512 (or Arm bfloat16) instructions. Elsewhere it is emulated, and on an AVX2-only
    CPU a bfloat16 VGG-16 training step is about 14 times slower than in float32."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def describe(dev: torch.device) -> str:
    """A short human name for a device, e.g. ``cuda (NVIDIA H200)`` or ``cpu (2 threads)``."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
