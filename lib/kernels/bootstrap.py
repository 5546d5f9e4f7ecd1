"""Bootstrap resamples as count matrices: row r says how often each case is drawn in resample r.

A statistic that is a weighted sum over cases then takes every replicate at once, as one matrix
product, and two statistics computed from the same matrix are paired by construction.
"""
import torch


def bootstrap_counts(num_cases: int, n_boot: int, seed: int, device=None) -> torch.Tensor:
    """An ``n_boot`` x ``num_cases`` matrix of draw counts, each row a resample with
    replacement; drawn on the CPU with ``seed`` so every device gets the same resamples."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(num_cases, (n_boot, num_cases), generator=generator)
    offsets = torch.arange(n_boot).unsqueeze(1) * num_cases
    counts = torch.bincount((draws + offsets).flatten(), minlength=n_boot * num_cases)
    return counts.view(n_boot, num_cases).to(device=device, dtype=torch.float64)
