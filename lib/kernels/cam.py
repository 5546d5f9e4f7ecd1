"""Grad-CAM: where in a convolutional layer the evidence for a class lies.

For a layer with activations ``A^k`` (channel ``k``, ``h x w`` positions) and the score ``y_c``
of class ``c`` (its logit), Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel by its
spatially averaged gradient and keeps the positive part:

    alpha_k = mean_ij d y_c / d A^k_ij,        L_c = ReLU(sum_k alpha_k A^k)

The map has the layer's resolution; it is upsampled bilinearly to the input for display and
for comparison with lesion masks.

Which layer. The usual choice is the last convolutional block, whose maps are the most
class-specific that still have a spatial layout:

- ResNet-18: ``"layer4"`` (the output of the last residual block, 7 x 7 at 224 px);
- VGG-16: ``"features.29"``, the ReLU after the last convolution (14 x 14 at 224 px), not the
  final max-pool ``"features.30"``, which halves the resolution for nothing; in VGG-16 with
  batch normalisation (``vgg16_bn``) the same ReLU is ``"features.42"``.

Layers are named by their dotted path in ``model.named_modules()``; the book's networks wrap
the torchvision model, and ``lib.ultrasound.models.TARGET_LAYERS`` holds their names.

The hooks live only inside a ``with`` block and are removed however it ends. The layers before
the chosen one run without autograd bookkeeping: only the part of the network after the layer
is differentiated, which is what makes Grad-CAM cost little more than a forward pass.
"""
import torch
import torch.nn.functional as F

from ..progress import progress
from . import checks
from .hooks import get_layer, hooked

# Images per forward by default: a whole test split at 224 px fits comfortably in CPU memory.
DEFAULT_BATCH_SIZE = 32


def grad_cam(model, x, target=None, *, layer, upsample=True, normalize=False, relu=True,
             batch_size=DEFAULT_BATCH_SIZE, show_progress=True):
    """Grad-CAM maps of a batch of images.

    Args:
        model: a classifier in eval mode on the device of ``x``, mapping ``B x C x H x W``
            images to ``B x classes`` logits.
        x: images, a floating ``B x C x H x W`` tensor with finite values.
        target: the class explained: ``None`` for each image's predicted class, an int for
            every image, or one int per image (sequence or 1-D integer tensor of length ``B``).
        layer: dotted name of the convolutional layer (see the module notes).
        upsample: ``True`` resizes the maps bilinearly to ``H x W``; ``False`` keeps the
            layer's resolution.
        normalize: ``False`` returns raw values; ``True`` rescales each map to [0, 1] with
            :func:`normalize_maps`, at the layer's resolution and again after upsampling
            (interpolation can lower the peak), exactly as pytorch-grad-cam does, so that the
            two agree to float precision even for maps with tiny values.
        relu: keep only the positive part (Grad-CAM's definition); ``False`` gives the signed
            map, e.g. to compare with Captum's ``LayerGradCam`` default.
        batch_size: images per forward pass.
        show_progress: show a progress bar when there is more than one batch.

    Returns:
        A ``B x 1 x H x W`` tensor (``B x 1 x h x w`` at layer resolution) on the device of
        ``x``, detached.
    """
    checks.model_and_images(model, x, name="x")
    get_layer(model, layer)
    checks.positive_int("batch_size", batch_size)
    starts = range(0, x.shape[0], batch_size)
    starts = progress(starts, desc="grad_cam", unit="batch", leave=False,
                      show=show_progress and len(starts) > 1)
    with torch.inference_mode(False):  # works even when called under inference_mode
        target = checks.class_targets(target, x.shape[0], x.device, allow_none=True)
        cams = torch.cat([_cam_batch(model, x, target, slice(s, s + batch_size), layer, relu)
                          for s in starts])
    checks.finite(cams, "the Grad-CAM map (from the model's scores and their gradients)")
    if normalize:
        cams = normalize_maps(cams)
    if upsample:
        cams = F.interpolate(cams, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if normalize:
            cams = normalize_maps(cams)
    return cams


def normalize_maps(maps, eps=1e-7):
    """Rescale each map of a ``B x ...`` batch to [0, 1]: ``(L - min) / (max - min + eps)``.

    ``eps`` keeps a constant map finite (it becomes zeros). With the default, pytorch-grad-cam's
    value, the peak falls short of 1 by about ``eps / (max - min)``: noticeable only for maps
    whose values span less than about 1e-4 (e.g. untrained networks with tiny gradients).
    """
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    return ((flat - low) / (span + eps)).view_as(maps)


def _cam_batch(model, x, target, rows, layer, relu):
    """Grad-CAM at layer resolution, ``b x 1 x h x w``, for the images ``x[rows]``."""
    recorded = []
    with hooked(model, {layer: _differentiate_from_here(layer, recorded)}), torch.no_grad():
        logits = model(x[rows])  # the hook turns autograd on at the layer
    if not recorded:
        raise ValueError(f"layer {layer!r} did not run in the model's forward pass")
    activation = recorded[0]
    checks.logits(logits, activation.shape[0])
    # NaN scores can still give finite (zero) gradients, hence a map that looks plausible
    checks.finite(logits.detach(), "the model's scores for Grad-CAM", offset=rows.start)
    if target is None:
        classes = logits.argmax(dim=1)
    else:
        checks.classes_in_range(target, logits.shape[1])  # all images, so a bad class fails early
        classes = target[rows]
    score = logits.gather(1, classes.view(-1, 1)).sum()  # images are independent in eval mode
    (grads,) = torch.autograd.grad(score, activation, allow_unused=True)
    if grads is None:
        raise ValueError(f"the model's output does not depend on layer {layer!r}")
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activation.detach()).sum(dim=1, keepdim=True)
    return cam.relu() if relu else cam


def _differentiate_from_here(layer, recorded):
    """A forward hook that starts the autograd graph at the layer's output.

    The output is replaced by a fresh leaf that requires grad; the rest of the network sees a
    copy, so an in-place operation downstream (e.g. ``ReLU(inplace=True)``) cannot alter the
    recorded activation.
    """
    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ValueError(f"layer {layer!r} must output a B x C x h x w tensor for Grad-CAM; "
                             f"got {checks.describe(output)}")
        if recorded:
            raise ValueError(f"layer {layer!r} runs more than once per forward pass; choose a "
                             f"layer that is used once")
        torch.set_grad_enabled(True)  # restored when the caller's no_grad block exits
        leaf = output.detach().requires_grad_(True)
        recorded.append(leaf)
        return leaf.clone()
    return hook
