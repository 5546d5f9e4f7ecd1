"""Numbers about activation-maximisation images (:mod:`lib.kernels.am`): does a pattern
survive random transformations, and how rough is it? Whether it convinces another network is
:mod:`lib.ultrasound.am_transfer`."""
import torch

from ..kernels import am


def transformed_values(model, result, transforms, *, draws: int = 8, seed: int = 0):
    """Each target's mean value over ``draws`` random ``transforms`` of its final image.

    ``result`` is an ``AMResult``; the draws come from a generator seeded with ``seed``.
    Returns a tensor with one value per target.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}")
    generator = torch.Generator().manual_seed(seed)
    values = [am.target_values(model, transforms(result.images, generator), result.targets)
              for _ in range(draws)]
    return torch.stack(values).mean(dim=0)


def mean_scores(model, result, transforms, *, draws: int = 8, seed: int = 0) -> dict:
    """Means over the targets of ``result``: the value on the final image (``"logit"``), over
    random transformations of it (``"logit, transformed"``, :func:`transformed_values`) and
    the image's total variation."""
    robust = transformed_values(model, result, transforms, draws=draws, seed=seed)
    return {"logit": result.final_values.mean().item(),
            "logit, transformed": robust.mean().item(),
            "total variation": am.total_variation(result.images).mean().item()}

