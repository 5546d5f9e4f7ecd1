"""Activation maximisation: the input that most excites a class, a channel or a single unit.

Gradient ascent on an image (Erhan et al. 2009; Simonyan et al. 2014): starting from noise,
follow the gradient of the chosen activation with respect to the input,

    x* = argmax_x  a(x) - sum_r lambda_r R_r(x),

where the regularisers ``R_r`` keep ``x`` looking like an image rather than adversarial noise.
The ingredients, each a switch here:

- *parameterisation*: the optimiser moves either the pixels themselves or the image's Fourier
  coefficients, scaled by ``1 / f**decay`` so that coarse patterns are cheap and fine ones dear
  (the "spectral" parameterisation of Olah et al., Distill 2017); a sigmoid maps the result
  into [0, 1] (``"pixel"``, ``"fourier"``), or the pixels are the parameters and each step
  ends by clipping them to [0, 1] (``"clamped"``: projected gradient ascent);
- *optimiser*: Adam (``"adam"``), or plain gradient ascent (``"gradient"``, a step of
  ``lr`` times the gradient). What an image-specific change means depends on both: under
  Adam the first steps move every pixel by about ``lr`` whatever the size of its gradient
  (Adam divides by the gradient's running magnitude), and through the sigmoid a pixel's
  change is scaled by ``x (1 - x)``, small for near-black and near-white pixels; projected
  gradient ascent on clamped pixels changes each pixel in proportion to its gradient;
- *random transformations* at every step (jitter, scale, rotation): a pattern must survive
  them to score, which removes pixel-precise adversarial texture;
- *penalties*: L2 (Simonyan et al.), total variation (Mahendran & Vedaldi 2015) and blur (the
  squared distance to a Gaussian-blurred copy, a smooth counterpart of the periodic blurring
  of Yosinski et al. 2015).

Any number of targets, on the model's output or on any layers, are optimised together as one
batch (one image per target). Images have any number of channels (1 for grayscale, for a model
that replicates it to 3 itself or through ``preprocess``; 3 for RGB).

:func:`maximize_from` is the image-specific variant: it starts from real images and penalises
the distance to them, so the change it makes shows what the network would alter to be more
sure of the class.
"""
import functools
import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..progress import progress
from . import am_images, checks
from .blur import gaussian_blur
from .hooks import hooked

OPTIMISERS = ("adam", "gradient")
KINDS = ("logit", "channel", "unit")
# The start image of maximize_from is kept this far from 0 and 1, where the sigmoid's inverse
# is infinite.
EDGE = 1e-3


@dataclass(frozen=True)
class Target:
    """What to maximise; build one with :func:`class_logit`, :func:`channel` or :func:`unit`.

    ``kind`` is ``"logit"`` (``index`` is a class of the model's output), ``"channel"`` (the
    mean over positions of channel ``index`` of ``layer``) or ``"unit"`` (channel ``index`` of
    ``layer`` at ``position``; ``None`` means the centre of the map).
    """

    kind: str
    index: int
    layer: str | None = None
    position: tuple[int, int] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; "
                             f"got {self.kind!r}")
        if (self.kind == "logit") != (self.layer is None):
            raise ValueError("a logit target has no layer; channel and unit targets need one")

    def __str__(self):
        if self.kind == "logit":
            return f"class {self.index}"
        where = "" if self.kind == "channel" else f" at {self.position or 'centre'}"
        return f"{self.layer}:{self.index}{where}"


def class_logit(index):
    """Maximise the logit of class ``index``."""
    return Target("logit", _check_index(index))


def channel(layer, index):
    """Maximise the mean activation of channel ``index`` of ``layer`` (a feature's detector)."""
    return Target("channel", _check_index(index), _check_layer_name(layer))


def unit(layer, index, position=None):
    """Maximise one unit: channel ``index`` of ``layer`` at ``position`` (row, col; the centre
    of the map by default). On a fully connected layer the unit is just output ``index``."""
    if position is not None:
        if (not isinstance(position, (tuple, list)) or len(position) != 2
                or not all(isinstance(p, numbers.Integral) and p >= 0 for p in position)):
            raise ValueError(f"position must be a (row, col) pair of non-negative ints or None; "
                             f"got {position!r}")
        position = tuple(int(p) for p in position)
    return Target("unit", _check_index(index), _check_layer_name(layer), position)


@dataclass(frozen=True)
class Transforms:
    """Random transformations applied to the image at every step (one draw per image).

    ``jitter``: largest shift in pixels; ``scale``: (low, high) zoom factors; ``rotate``:
    largest rotation in degrees. ``Transforms(0, (1, 1), 0)`` is the identity.
    """

    jitter: int = 8
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0

    def __post_init__(self):
        if not isinstance(self.jitter, numbers.Integral) or self.jitter < 0:
            raise ValueError(f"jitter must be a non-negative int (pixels); got {self.jitter!r}")
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high; got {self.scale}")
        if not 0 <= self.rotate <= 180:
            raise ValueError(f"rotate must be in [0, 180] degrees; got {self.rotate!r}")

    def __call__(self, images, generator):
        """Warp each image by its own random similarity transform (differentiable)."""
        batch = images.shape[0]
        uniform = torch.rand(batch, 2, generator=generator)
        angle = (2 * uniform[:, 0] - 1) * self.rotate
        zoom = self.scale[0] + (self.scale[1] - self.scale[0]) * uniform[:, 1]
        shift = torch.randint(-self.jitter, self.jitter + 1, (batch, 2), generator=generator)
        return similarity_warp(images, angle, zoom, shift)


def similarity_warp(images, angle, zoom, shift):
    """Rotate by ``angle`` degrees and zoom by ``zoom`` about the image centre, and shift by
    ``shift`` = (dx, dy) pixels (output pixel (y, x) shows input pixel (y + dy, x + dx)); one
    value (row) per image; borders are reflected."""
    height, width = images.shape[-2:]
    angle, zoom, shift = (torch.as_tensor(v, dtype=images.dtype) for v in (angle, zoom, shift))
    # affine_grid maps output to input coordinates in [-1, 1] along each side: zooming in by s
    # samples a region 1/s as large; a shift of d pixels is 2 d / side; a rotation in pixels
    # needs the aspect ratio in those units.
    radians = torch.deg2rad(angle)
    cos, sin = torch.cos(radians) / zoom, torch.sin(radians) / zoom
    aspect = height / width
    theta = torch.stack([
        torch.stack([cos, -sin * aspect, 2 * shift[:, 0] / width], dim=1),
        torch.stack([sin / aspect, cos, 2 * shift[:, 1] / height], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


@dataclass
class AMResult:
    """The outcome of activation maximisation, as tensors on the device.

    ``images``: ``B x C x H x W`` in [0, 1], one per target; ``targets``: the targets;
    ``history``: ``steps x B`` target values during the ascent (on transformed images);
    ``start_values`` / ``final_values``: the targets on the start and final images (no
    transformation); ``start``: the start images.
    """

    images: torch.Tensor
    targets: list
    history: torch.Tensor
    start_values: torch.Tensor
    final_values: torch.Tensor
    start: torch.Tensor = field(repr=False)

    @property
    def change(self):
        """``images - start``: what the ascent altered, signed, ``B x C x H x W``."""
        return self.images - self.start

    def change_map(self):
        """The size of the change at each pixel, ``|change|`` summed over channels:
        ``B x 1 x H x W``, a map to compare with saliency maps and lesion masks."""
        return self.change.abs().sum(dim=1, keepdim=True)


def _with_autograd(function):
    """Run ``function`` with autograd on, even when the caller has switched it off."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return function(*args, **kwargs)
    return wrapper


@_with_autograd
def maximize(model, targets, *, size=224, channels=3, param="fourier", decay=1.0,
             transforms=Transforms(), l2=0.0, tv=0.0, blur=0.0, blur_sigma=1.0, steps=256,
             lr=0.05, init_std=0.01, preprocess=None, seed=0, device=None, show_progress=True,
             optimizer="adam"):
    """Synthesise one image per target that maximises it.

    Args:
        model: a network in eval mode (on ``device``); it receives ``preprocess(images)``.
        targets: a list of :class:`Target` (or ints, read as class logits), one image each.
        size: image side, an int, or (height, width).
        channels: channels of the synthesised image: 1 (grayscale) or 3 (RGB), or any count
            the model (after ``preprocess``) accepts.
        param: ``"pixel"``, ``"fourier"`` (coefficients scaled by ``1 / f**decay``) or
            ``"clamped"`` (pixels clipped to [0, 1] after each step).
        decay: the frequency decay exponent of the Fourier parameterisation.
        transforms: a :class:`Transforms`, or ``None`` for none.
        l2, tv, blur: weights of the penalties on the deviation from mid-grey: its mean square,
            its total variation (mean absolute difference of neighbours) and the mean square of
            its difference from a Gaussian blur (``blur_sigma`` pixels) of itself.
        steps, lr: optimisation steps and learning rate.
        optimizer: ``"adam"`` or ``"gradient"`` (plain gradient ascent).
        init_std: standard deviation of the random start of the parameters.
        preprocess: maps images in [0, 1] to the model's input (normalisation, replicating a
            grayscale channel); ``None`` feeds the images as they are.
        seed: seeds the start and the transformations; equal seeds give equal images.
        device: where to optimise (default: the model's device).

    Returns:
        An :class:`AMResult`.
    """
    targets = _check_targets(targets)
    height, width = _check_size(size)
    checks.positive_int("channels", channels)
    device = _model_device(model, device)
    generator = torch.Generator().manual_seed(_check_seed(seed))
    shape = (len(targets), channels, height, width)
    decay = am_images.check_param(param, decay)
    init_std = checks.finite_number("init_std", init_std)
    image = am_images.random_image(param, decay, shape, init_std, generator, device)
    reference = torch.full(shape, 0.5, device=device)
    return _ascend(model, targets, image, reference, transforms, l2, tv, blur, blur_sigma,
                   steps, lr, preprocess, generator, show_progress, optimizer)


@_with_autograd
def maximize_from(model, images, targets, *, param="pixel", decay=1.0, transforms=None,
                  l2=1.0, tv=0.0, blur=0.0, blur_sigma=1.0, steps=64, lr=0.05,
                  preprocess=None, seed=0, show_progress=True, optimizer="adam"):
    """Image-specific activation maximisation: push real images towards their targets.

    The ascent starts from ``images`` (clamped to [0.001, 0.999] so that the sigmoid can
    represent them; ``param="clamped"`` starts from the images as they are) and the penalties
    act on the change, so ``l2`` weighs the mean squared
    distance to the start image, ``tv`` the roughness of the change. ``AMResult.change_map()``
    shows where, and ``AMResult.change`` how, the network would alter each image.

    Args:
        images: ``B x C x H x W`` images in [0, 1] on the model's device.
        targets: one :class:`Target` (or int) per image, or a single one for all images.
        Others as for :func:`maximize` (no transformations by default, so that the change
        stays aligned with the image).
    """
    _check_images(images)
    targets = _check_targets(targets)
    if len(targets) == 1:
        targets = targets * images.shape[0]
    if len(targets) != images.shape[0]:
        raise ValueError(f"give one target per image ({images.shape[0]}) or a single target; "
                         f"got {len(targets)}")
    generator = torch.Generator().manual_seed(_check_seed(seed))
    decay = am_images.check_param(param, decay)
    start = images.detach().clamp(0, 1) if param == "clamped" else \
        images.detach().clamp(EDGE, 1 - EDGE)
    image = am_images.image_from(param, decay, start)
    return _ascend(model, targets, image, start, transforms, l2, tv, blur, blur_sigma,
                   steps, lr, preprocess, generator, show_progress, optimizer)


def target_values(model, images, targets, *, preprocess=None):
    """The value of each target on its image (no transformation): a ``B`` tensor."""
    targets = _check_targets(targets)
    if len(targets) != images.shape[0]:
        raise ValueError(f"give one target per image ({images.shape[0]}); got {len(targets)}")
    _check_model(model, images.device)
    with torch.no_grad():
        return _evaluate(model, images, targets, preprocess, validate=True)


def _ascend(model, targets, image, reference, transforms, l2, tv, blur, blur_sigma, steps, lr,
            preprocess, generator, show_progress, optimizer="adam"):
    """Adam or gradient ascent on the image's parameters; returns the :class:`AMResult`."""
    _check_model(model, image.param.device)
    checks.positive_int("steps", steps)
    weights = {name: checks.finite_number(name, value)
               for name, value in (("l2", l2), ("tv", tv), ("blur", blur))}
    if transforms is not None and not isinstance(transforms, Transforms):
        raise TypeError(f"transforms must be a lib.kernels.am.Transforms or None; got "
                        f"{type(transforms).__name__}")
    with torch.no_grad():
        start = image().detach().clone()
        start_values = _evaluate(model, start, targets, preprocess, validate=True)
    checks.finite(start_values, "the target value of the starting image", "target")
    lr = checks.finite_number("lr", lr, positive=True)
    checks.choice("optimizer", optimizer, OPTIMISERS)
    optimiser = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)([image.param],
                                                                              lr=lr)
    history = []
    iterations = progress(range(steps), desc="activation maximisation", leave=False,
                          show=show_progress)
    for _ in iterations:
        current = image()
        seen = current if transforms is None else transforms(current, generator)
        values = _evaluate(model, seen, targets, preprocess)
        penalty = _penalties(current - reference, weights, blur_sigma)
        # torch.autograd.grad, not backward(): the model's own .grad fields stay untouched.
        (image.param.grad,) = torch.autograd.grad(-(values - penalty).sum(), [image.param])
        optimiser.step()
        image.project()
        history.append(values.detach())
    with torch.no_grad():
        final = image().detach().clone()
        final_values = _evaluate(model, final, targets, preprocess)
    checks.finite(torch.cat([final.flatten(1), final_values[:, None]], dim=1),
                  f"activation maximisation diverged (lr = {lr:g}): the image or its value",
                  "target")
    return AMResult(final, list(targets), torch.stack(history), start_values, final_values,
                    start)


def _penalties(deviation, weights, blur_sigma):
    """The weighted sum of penalties on ``deviation`` (image minus reference), per image."""
    total = torch.zeros(deviation.shape[0], device=deviation.device)
    if weights["l2"]:
        total = total + weights["l2"] * deviation.pow(2).mean(dim=(1, 2, 3))
    if weights["tv"]:
        total = total + weights["tv"] * total_variation(deviation)
    if weights["blur"]:
        smooth = gaussian_blur(deviation, blur_sigma)
        total = total + weights["blur"] * (deviation - smooth).pow(2).mean(dim=(1, 2, 3))
    return total


def total_variation(images):
    """Mean absolute difference between vertical and horizontal neighbours, per image."""
    rows = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    cols = (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    return rows + cols


def _evaluate(model, images, targets, preprocess, validate=False):
    """Each target's value on its own image: one forward pass for the whole batch."""
    layers = sorted({t.layer for t in targets if t.layer is not None})
    outputs = {}

    def recorder(name):
        def hook(module, inputs, output):
            outputs[name] = output
            # The rest of the network gets a copy, so an in-place operation further on (x +=
            # identity, ReLU(inplace=True)) cannot change the recorded activation.
            return output.clone() if isinstance(output, torch.Tensor) else output
        return hook

    with hooked(model, {name: recorder(name) for name in layers}):
        outputs[None] = model(images if preprocess is None else preprocess(images))
    if validate:
        _check_outputs(outputs, targets, layers)
    return torch.stack([_value(outputs[t.layer][row], t) for row, t in enumerate(targets)])


def _value(activation, target):
    """The target's value in one image's activation (``C``, or ``C x h x w``)."""
    values = activation[target.index]
    if target.kind == "logit" or values.ndim == 0:
        return values
    if target.kind == "channel":
        return values.mean()
    row, col = target.position or (values.shape[-2] // 2, values.shape[-1] // 2)
    return values[..., row, col]


def _check_outputs(outputs, targets, layers):
    for name in layers:
        if name not in outputs:
            raise ValueError(f"layer {name!r} did not run in the model's forward pass")
    for t in targets:
        out = outputs[t.layer]
        where = "the model's output" if t.layer is None else f"layer {t.layer!r}"
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
            raise ValueError(f"{where} must be a B x C or B x C x h x w tensor; got "
                             f"{type(out).__name__} of shape {getattr(out, 'shape', None)}")
        if t.index >= out.shape[1]:
            raise ValueError(f"target {t}: index out of range; {where} has {out.shape[1]} "
                             f"channels (0..{out.shape[1] - 1})")
        if t.kind == "unit" and t.position is not None:
            if out.ndim != 4 or not (t.position[0] < out.shape[2] and t.position[1] < out.shape[3]):
                raise ValueError(f"target {t}: position out of range for {where} of shape "
                                 f"{tuple(out.shape[1:])}")


def _check_targets(targets):
    if isinstance(targets, (Target, numbers.Integral)):
        targets = [targets]
    if not isinstance(targets, (list, tuple)) or not targets:
        raise TypeError(f"targets must be a non-empty list of lib.am targets or ints; got "
                        f"{targets!r}")
    checked = []
    for t in targets:
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            t = class_logit(int(t))
        if not isinstance(t, Target):
            raise TypeError(f"each target must be a lib.kernels.am.Target (class_logit, channel, unit) "
                            f"or an int class; got {t!r}")
        checked.append(t)
    return checked


def _check_index(index):
    if not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative int; got {index!r}")
    return int(index)


def _check_layer_name(layer):
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a dotted module name; got {layer!r}")
    return layer


def _check_model(model, device=None):
    checks.eval_model(model)
    if device is not None:
        checks.same_device(model, device)


def _model_device(model, device):
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return param.device if param is not None else torch.device("cpu")


def _check_images(images):
    checks.image_batch(images)
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must hold values in [0, 1]")


def _check_size(size):
    if isinstance(size, numbers.Integral):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, numbers.Integral) and s >= 2 for s in size)):
        raise ValueError(f"size must be an int >= 2 or a (height, width) pair; got {size!r}")
    return int(size[0]), int(size[1])


def _check_seed(seed):
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int; got {seed!r}")
    return int(seed)
