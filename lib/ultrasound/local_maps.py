"""Studies of finite-difference sensitivity maps: how they depend on the step, its sign, the
patch size and the colour channel, measured against the gradient (:mod:`lib.kernels.local`).

Each study returns the maps it computed and rows of numbers whose keys are the column names
of the chapter's tables.
"""
import numpy as np
import torch

from ..kernels import local

DISTANCE = "relative distance to the gradient"
LARGEST = "largest |s|"
CHANNEL_PAIRS = ((0, 1), (0, 2), (1, 2))


def both_signs(model, x, target, step, *, patch, chunk_size=None):
    """The one-sided maps for ``+step`` and ``-step``: ``(up, down)``, each like
    :func:`lib.kernels.local.fd_sensitivity`'s map; their mean is the central difference."""
    up = local.fd_sensitivity(model, x, target, step, patch=patch, chunk_size=chunk_size)
    down = local.fd_sensitivity(model, x, target, -step, patch=patch, chunk_size=chunk_size)
    return up, down


def step_sweep(model, x, target, deltas, *, patch, chunk_size=None):
    """The maps of ``x`` for each step of ``deltas``, and how far they are from the gradient.

    Returns ``(rows, maps)``: ``maps`` is ``{step: (up, down)}`` (:func:`both_signs`);
    ``rows`` holds, per step, a ``"forward"`` and a ``"central"`` row with the step
    (``"delta"``), the scheme, the relative L2 distance of the map to the gradient summed over
    the same patches (``DISTANCE``) and the map's largest absolute value (``LARGEST``). The
    distance and the largest value are over the whole batch: pass one image.
    """
    reference = local.gradient(model, x, target, patch=patch)
    rows, maps = [], {}
    for step in deltas:
        up, down = maps[step] = both_signs(model, x, target, step, patch=patch,
                                           chunk_size=chunk_size)
        for scheme, values in (("forward", up), ("central", (up + down) / 2)):
            rows.append({"delta": step, "scheme": scheme,
                         DISTANCE: local.relative_error(values, reference).item(),
                         LARGEST: values.abs().max().item()})
    return rows, maps


def patch_sweep(model, x, target, delta, patch_sizes, *, reference, chunk_size=None):
    """The map of ``x`` (one image) for each patch side, against the gradient.

    ``reference`` is the per-pixel gradient (:func:`lib.kernels.local.gradient` with
    ``patch=1``). Returns ``(maps, rows)``: ``{side: map}`` and one row per side with the
    forward passes the map costs and its correlation with the per-pixel gradient and with the
    gradient summed over the same patches.
    """
    height, width = x.shape[-2:]
    maps, rows = {}, []
    for side in patch_sizes:
        maps[side] = local.fd_sensitivity(model, x, target, delta, patch=side,
                                          chunk_size=chunk_size)
        coarse = local.gradient(model, x, target, patch=side)
        rows.append({"patch": side, "forward passes": (height // side) * (width // side),
                     "correlation with the per-pixel gradient":
                         local.correlation(maps[side], reference).item(),
                     "correlation with the gradient summed over patches":
                         local.correlation(maps[side], coarse).item()})
    return maps, rows


def channel_agreement(per_channel, together, gradient) -> dict:
    """How alike the maps of the three colour channels are, and whether they add up.

    ``per_channel`` (B x 3 x H x W) holds one map per channel, ``together`` (B x 1 x H x W)
    the map for perturbing all channels at once, ``gradient`` (B x 1 x H x W) the gradient
    summed over the channels. Correlations are means over the images.
    """
    if per_channel.ndim != 4 or per_channel.shape[1] != 3:
        raise ValueError(f"per_channel must be B x 3 x H x W (one map per colour channel); "
                         f"got {tuple(per_channel.shape)}")
    between = [local.correlation(per_channel[:, a:a + 1], per_channel[:, b:b + 1]).mean().item()
               for a, b in CHANNEL_PAIRS]
    return {"correlation between channel maps": np.mean(between),
            "together vs sum of channels":
                local.correlation(together, per_channel.sum(1, keepdim=True)).mean().item(),
            "together vs gradient": local.correlation(together, gradient).mean().item()}


def positive_share(maps) -> float:
    """The share of the maps' absolute mass that is positive, averaged over the images."""
    positive = maps.clamp(min=0).flatten(1).sum(1)
    return (positive / maps.abs().flatten(1).sum(1)).mean().item()


def pixel_maps(model, x, target, delta, *, chunk_size=None) -> dict:
    """The paper's per-pixel maps s_ij of ``x`` (one per image, all channels together, as
    the ultrasound networks take one gray channel) by exact incremental inference, with their
    wall time and the time brute force would take: one batched forward per perturbed image
    at the measured seconds per forward (``lib.timing``)."""
    from ..timing import best_time

    timed = best_time(lambda: local.fd_sensitivity(
        model, x, target, delta, patch=1, engine="incremental", chunk_size=chunk_size,
        show_progress=True), 1, warmup=False, device=x.device)
    batch = x[:1].expand(min(64, x.shape[-2] * x.shape[-1]), -1, -1, -1).contiguous()
    with torch.inference_mode():
        forward = best_time(lambda: model(batch), 2, device=x.device).wall / batch.shape[0]
    perturbations = x.shape[0] * x.shape[-2] * x.shape[-1]
    return {"maps": timed.result, "seconds": timed.wall,
            "brute_force_seconds": perturbations * forward, "perturbations": perturbations}


def brute_force_at(model, x, target, delta, pixels) -> torch.Tensor:
    """``s_ij`` at the listed pixels of image 0 only, each from a forward of its own perturbed
    image: the reference a per-pixel map is checked against. ``pixels``: (K, 2) rows and
    columns. Returns a length-K tensor."""
    rows, cols = pixels[:, 0], pixels[:, 1]
    images = x[:1].repeat(len(rows) + 1, 1, 1, 1)
    images[1 + torch.arange(len(rows)), :, rows, cols] += delta
    with torch.inference_mode():
        scores = model(images)[:, int(target[0])]
    return (scores[1:] - scores[0]) / delta


def agreement_with_brute_force(model, x, target, delta, maps, *, count=64, seed=0) -> float:
    """The largest difference between ``maps`` (image 0) and brute force at ``count`` random
    pixels, relative to the map's largest absolute value."""
    generator = torch.Generator().manual_seed(seed)
    height, width = x.shape[-2:]
    flat = torch.randperm(height * width, generator=generator)[:count]
    pixels = torch.stack([flat // width, flat % width], dim=1).to(x.device)
    exact = brute_force_at(model, x, target, delta, pixels)
    ours = maps[0, 0, pixels[:, 0], pixels[:, 1]]
    return ((ours - exact).abs().max() / maps[0].abs().max()).item()


def speed_phrase(ratio: float) -> str:
    """A time ratio (other / ours) as the prose says it: ``"3.2 times faster than"``."""
    if ratio >= 1:
        return f"{ratio:.1f} times faster than"
    return f"{1 / ratio:.1f} times slower than"
