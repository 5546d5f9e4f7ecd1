"""Targeted adversarial images: small changes of real images that make one network answer a
chosen class.

Projected gradient descent (PGD) on the cross-entropy of the target class, under an L-infinity
budget: each step moves every pixel by ``step_size`` in the sign of the gradient, then clips the
change to ``[-epsilon, epsilon]`` and the image to [0, 1]. Such images are optimised to fool the
one network they were made on and nothing else, which makes them the baseline for any claim that
an optimised image "transfers" to another network because of what it shows.
"""
import torch
import torch.nn.functional as F

from . import checks
from .am import _with_autograd


@_with_autograd
def targeted_attack(model, images, targets, *, epsilon: float = 8 / 255, steps: int = 20,
                    step_size: float | None = None, preprocess=None) -> torch.Tensor:
    """Images within ``epsilon`` (L-infinity) of ``images`` that raise ``model``'s probability
    of ``targets``.

    Args:
        model: a classifier in eval mode; it receives ``preprocess(images)``.
        images: ``B x C x H x W`` in [0, 1].
        targets: one class index per image (a sequence or a ``B`` tensor).
        epsilon: the largest change of any pixel, in the images' units.
        steps: PGD steps; each moves every pixel by ``step_size`` (default
            ``2.5 * epsilon / steps``, so that the budget can be reached and revised).
        preprocess: maps images in [0, 1] to the model's input; ``None`` feeds them as they are.

    Returns:
        The adversarial images, ``B x C x H x W`` in [0, 1], detached.
    """
    checks.model_and_images(model, images)
    epsilon = checks.finite_number("epsilon", epsilon, positive=True)
    steps = checks.positive_int("steps", steps)
    step_size = 2.5 * epsilon / steps if step_size is None else \
        checks.finite_number("step_size", step_size, positive=True)
    targets = checks.class_targets(targets, images.shape[0], images.device)
    start = images.detach()
    adversarial = start.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        inputs = adversarial if preprocess is None else preprocess(adversarial)
        logits = checks.logits(model(inputs), images.shape[0])
        checks.finite(logits, "the model's logits", "image")
        loss = F.cross_entropy(logits.float(), checks.classes_in_range(targets, logits.shape[1]))
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            moved = adversarial - step_size * gradient.sign()  # down the target's loss
            change = (moved - start).clamp(-epsilon, epsilon)
            adversarial = (start + change).clamp(0, 1)
    return adversarial.detach()
