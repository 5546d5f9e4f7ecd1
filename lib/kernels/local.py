"""Local sensitivity of a classifier to pixel perturbations, by finite differences.

For image ``x``, class ``q`` and step ``delta``, the sensitivity of pixel ``(i, j)`` of channel
``C`` is

    s_ij^C = (B_q(x + delta e_ijC) - B_q(x)) / delta                      (one-sided, "forward")
    s_ij^C = (B_q(x + delta e_ijC) - B_q(x - delta e_ijC)) / (2 delta)   ("central")

where ``e_ijC`` is one at that pixel of that channel and zero elsewhere, and ``B_q`` is the
score of class ``q``: its logit by default, or its softmax probability. ``e_ijC`` can also be a
``p x p`` patch, and it can cover all channels at once. As ``delta -> 0`` the map tends to the
gradient (summed over the patch and channels), which :func:`gradient` computes by autograd.

Every perturbation is exact (one forward per perturbed image, nothing approximated); they are
built on the device in chunks, a chunk of ``K`` perturbations of ``B`` images being one forward
of ``K * B`` images. By default (``engine="auto"``), where the model traces, a perturbed image
is instead computed from the unperturbed one's stored feature maps, recomputing only the
regions the perturbation changes (``lib.kernels.incremental``): the same map up to rounding,
for a fraction of the work.
"""
import math
import numbers

import torch

from ..progress import progress
from . import checks

SCHEMES = ("forward", "central")
CHANNEL_MODES = ("each", "all")
OUTPUTS = ("logit", "probability")
ENGINES = ("auto", "incremental", "full")

# Images per forward on the CPU: larger batches barely speed a CPU forward up, but cost memory.
CPU_IMAGES_PER_FORWARD = 64
# Share of the free GPU memory a chunk may use; the rest is left for the allocator's slack.
GPU_MEMORY_SHARE = 0.5


def fd_sensitivity(model, x, target, delta, *, scheme="forward", patch=1, channels="each",
                   output="logit", chunk_size=None, show_progress=True, engine="auto"):
    """Finite-difference sensitivity maps ``s_ij^C`` of class scores to pixel perturbations.

    Args:
        model: a classifier in eval mode mapping ``B x C x H x W`` images to ``B x classes``
            scores (logits); it runs on the device of ``x``.
        x: images, a floating ``B x C x H x W`` tensor (finite values).
        target: the class ``q`` whose score is differentiated: an int for every image, or one
            int per image (sequence or 1-D integer tensor of length ``B``).
        delta: the perturbation step, a finite non-zero number in the units of ``x``
            (a negative step gives the backward difference).
        scheme: ``"forward"`` (one-sided, one extra forward per perturbation) or ``"central"``
            (two forwards per perturbation, error O(delta^2) instead of O(delta)).
        patch: side ``p`` of the square patch perturbed at once; must divide ``H`` and ``W``.
            ``p = 1`` is the per-pixel map; for ``p > 1`` every pixel of a patch gets the
            patch's value (the response to moving the whole patch by ``delta``).
        channels: ``"each"`` perturbs one channel at a time (map ``B x C x H x W``);
            ``"all"`` moves every channel of the pixel or patch together (map ``B x 1 x H x W``).
        output: ``"logit"`` (default) or ``"probability"``. The logit is the default because it
            is the class score itself: the softmax probability saturates near 0 and 1, so a
            confident prediction shows almost no sensitivity whatever the pixel, and it mixes
            in every other class's logit.
        chunk_size: perturbations per forward; ``None`` picks it from the device's memory
            (see :func:`auto_chunk_size`) and halves it whenever a forward runs out of memory.
        show_progress: show a progress bar when the map takes more than one chunk.
        engine: ``"incremental"`` recomputes each layer only where a perturbation changes it
            (exact, see ``lib.kernels.incremental``; a model that does not trace runs whole
            forwards there); ``"full"`` runs one whole forward per perturbed image;
            ``"auto"`` (default) is incremental where the model traces and some layer can be
            computed on regions, else full. With the incremental engine, ``chunk_size`` counts
            perturbations per batch.

    Returns:
        The map as a tensor on the device of ``x``, in the dtype of ``x``: ``B x C x H x W``
        for ``channels="each"``, ``B x 1 x H x W`` for ``channels="all"``.
    """
    x, target = _check_inputs(model, x, target)
    delta = _check_delta(delta)
    checks.choice("scheme", scheme, SCHEMES)
    _check_step_resolves(x, delta, scheme)
    checks.choice("channels", channels, CHANNEL_MODES)
    checks.choice("output", output, OUTPUTS)
    _check_patch(patch, x.shape[-2:])
    checks.choice("engine", engine, ENGINES)
    if chunk_size is not None:
        checks.positive_int("chunk_size", chunk_size)
    with torch.inference_mode():
        checks.finite(_scores(model, x, target, output, check_target=True),
                      f"the model's {output} of the unperturbed images")
    if engine != "full":
        from .incremental import incremental_fd_sensitivity  # only when it is used

        maps = incremental_fd_sensitivity(
            model, x, target, delta, scheme=scheme, patch=patch, channels=channels,
            output=output, chunk_size=chunk_size, show_progress=show_progress,
            require_graph=engine == "auto")
        if maps is not None:
            return checks.finite(maps, "the sensitivity map", "image")
    layout = _Layout(x.shape, patch, channels)
    automatic = chunk_size is None
    if automatic:
        chunk_size = auto_chunk_size(model, x, scheme)
    checks.positive_int("chunk_size", chunk_size)

    with torch.inference_mode():
        rows, start = [], 0
        bar = progress(total=layout.count, desc="fd_sensitivity", unit="perturbation",
                       leave=False, show=show_progress and chunk_size < layout.count)
        while start < layout.count:
            indices = torch.arange(start, min(start + chunk_size, layout.count), device=x.device)
            try:
                rows.append(_differences(model, x, layout.steps(indices, x.dtype), delta,
                                         target, output, scheme))
            except torch.OutOfMemoryError:
                if not automatic or chunk_size == 1:
                    raise
                chunk_size //= 2  # the estimate was too optimistic: retry smaller chunks
                _release_cached_memory(x.device)
                continue
            start += len(indices)
            bar.update(len(indices))
        bar.close()
        per_cell = torch.cat(rows).T  # B x perturbations
    return layout.to_map(per_cell)


def gradient(model, x, target, *, patch=1, channels="each", output="logit"):
    """The autograd gradient of the class score, laid out like :func:`fd_sensitivity`'s map.

    With ``patch = p`` the gradient is summed over each ``p x p`` patch (and over channels for
    ``channels="all"``), which is the limit of the finite-difference map as ``delta -> 0``.
    Arguments are as for :func:`fd_sensitivity`. Returns a detached tensor on the device of
    ``x``, ``B x C x H x W`` or ``B x 1 x H x W``.
    """
    x, target = _check_inputs(model, x, target)
    checks.choice("channels", channels, CHANNEL_MODES)
    checks.choice("output", output, OUTPUTS)
    _check_patch(patch, x.shape[-2:])
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        # Each image's score depends only on that image, so the sum's gradient is per image.
        scores = _scores(model, inputs, target, output, check_target=True)
        checks.finite(scores.detach(), f"the model's {output}")
        (grad,) = torch.autograd.grad(scores.sum(), inputs)
        checks.finite(grad, f"the gradient of the model's {output}")
    if channels == "all":
        grad = grad.sum(dim=1, keepdim=True)
    if patch > 1:
        grad = torch.nn.functional.avg_pool2d(grad, patch) * patch ** 2
        grad = grad.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)
    return grad.detach()


def relative_error(maps, reference):
    """Per image, ``||maps - reference|| / ||reference||`` over all pixels and channels."""
    _check_same_shape(maps, reference)
    difference = (maps - reference).flatten(1).norm(dim=1)
    return difference / reference.flatten(1).norm(dim=1)


def correlation(maps, reference):
    """Per image, the Pearson correlation of two maps over all pixels and channels."""
    _check_same_shape(maps, reference)
    a = maps.flatten(1) - maps.flatten(1).mean(dim=1, keepdim=True)
    b = reference.flatten(1) - reference.flatten(1).mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def auto_chunk_size(model, x, scheme="forward"):
    """Perturbations per forward that fit the device of ``x``.

    A forward holds ``K + 1`` copies of the batch ``x`` for forward differences (``K``
    perturbed, one unperturbed) and ``2 K`` for central ones. On a GPU, ``K`` fills
    ``GPU_MEMORY_SHARE`` of the free memory, the memory of one copy being measured by one
    forward of ``x``; on the CPU, a forward holds about ``CPU_IMAGES_PER_FORWARD`` images.
    At least one.
    """
    checks.choice("scheme", scheme, SCHEMES)
    if x.device.type != "cuda":
        copies = max(1, CPU_IMAGES_PER_FORWARD // x.shape[0])
    else:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        # Peak of the forward plus the perturbed input and its step mask, per copy of x.
        per_copy = torch.cuda.max_memory_allocated(x.device) - before + 2 * x.nbytes
        free, _ = torch.cuda.mem_get_info(x.device)
        copies = int(GPU_MEMORY_SHARE * free // per_copy)
    return max(1, copies - 1 if scheme == "forward" else copies // 2)


class _Layout:
    """Numbering of the perturbations: (channel or all channels, patch row, patch column)."""

    def __init__(self, shape, patch, channels):
        _, num_channels, height, width = shape
        self.patch = patch
        self.channels = num_channels if channels == "each" else 1
        self.rows, self.cols = height // patch, width // patch
        self.count = self.channels * self.rows * self.cols

    def steps(self, indices, dtype):
        """``K x C' x H x W`` unit steps for perturbation ``indices`` (C' = 1 for all channels)."""
        cells = torch.zeros(len(indices), self.count, dtype=dtype, device=indices.device)
        cells[torch.arange(len(indices), device=indices.device), indices] = 1
        cells = cells.view(len(indices), self.channels, self.rows, self.cols)
        return self._upsample(cells)

    def to_map(self, per_cell):
        """``B x perturbations`` values to the ``B x C' x H x W`` map."""
        cells = per_cell.reshape(per_cell.shape[0], self.channels, self.rows, self.cols)
        return self._upsample(cells)

    def _upsample(self, cells):
        if self.patch == 1:
            return cells.contiguous()
        return cells.repeat_interleave(self.patch, dim=-2).repeat_interleave(self.patch, dim=-1)


def _release_cached_memory(dev):
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _differences(model, x, steps, delta, target, output, scheme):
    """Difference quotients of every image under every step: ``K x B``, from one forward.

    The reference scores (``x`` itself, or ``x - delta * step``) are evaluated in the same
    forward as the perturbed images: a batched forward can differ from a smaller one in the
    last bits, and that difference divided by a small ``delta`` would otherwise show up as noise.
    """
    num_steps, batch = steps.shape[0], x.shape[0]
    steps = steps.unsqueeze(1)  # K x 1 x C' x H x W, broadcast over images (and channels)
    if scheme == "forward":
        images = x.unsqueeze(0).repeat(num_steps + 1, 1, 1, 1, 1)  # reference first
        images[1:].add_(steps, alpha=delta)
    else:
        images = x.unsqueeze(0).repeat(2 * num_steps, 1, 1, 1, 1)
        images[:num_steps].add_(steps, alpha=delta)
        images[num_steps:].add_(steps, alpha=-delta)
    scores = _scores(model, images.reshape(-1, *x.shape[1:]),
                     target.repeat(images.shape[0]), output).view(-1, batch)
    checks.finite(scores, f"the model's {output} of the perturbed images", "image", axis=1)
    if scheme == "forward":
        return (scores[1:] - scores[:1]) / delta
    return (scores[:num_steps] - scores[num_steps:]) / (2 * delta)


def _scores(model, x, target, output, check_target=False):
    """``B_q`` of every image in ``x`` for its class in ``target``."""
    logits = model(x)
    if check_target:
        checks.classes_in_range(target, checks.logits(logits, x.shape[0]).shape[1])
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def _check_inputs(model, x, target):
    checks.model_and_images(model, x, name="x", module_only=False)
    return x, checks.class_targets(target, x.shape[0], x.device)


def _check_same_shape(maps, reference):
    if not (isinstance(maps, torch.Tensor) and isinstance(reference, torch.Tensor)):
        raise TypeError("maps and reference must be torch tensors")
    if maps.shape != reference.shape or maps.ndim < 2:
        raise ValueError(f"maps and reference must have the same shape, batch first; got "
                         f"{tuple(maps.shape)} and {tuple(reference.shape)}")


def _check_delta(delta):
    if isinstance(delta, torch.Tensor) and delta.numel() == 1:
        delta = delta.item()
    if not isinstance(delta, numbers.Real) or isinstance(delta, bool):
        raise TypeError(f"delta must be a real number; got {checks.describe(delta)}")
    if not math.isfinite(delta) or delta == 0:
        raise ValueError(f"delta must be finite and non-zero; got {delta}")
    return float(delta)


def _check_step_resolves(x, delta, scheme):
    """Refuse a step that leaves some pixel unchanged in the images' dtype: its difference
    quotient would be exactly zero, a map of no sensitivity that is only rounding."""
    moved = (x + delta) != x
    if scheme == "central":
        moved &= (x - delta) != x
    if not bool(moved.all()):
        largest = x[~moved].abs().max().item()
        needed = torch.finfo(x.dtype).eps * max(largest, torch.finfo(x.dtype).tiny)
        raise ValueError(f"delta = {delta:g} does not change {int((~moved).sum())} pixel "
                         f"value(s) of x in {x.dtype} (the largest of them is "
                         f"{largest:g}); use |delta| above about {needed:.1e}, or float64 "
                         f"images")


def _check_patch(patch, image_shape):
    checks.positive_int("patch", patch)
    height, width = image_shape
    if patch > min(height, width):
        raise ValueError(f"patch {patch} is larger than the {height} x {width} image")
    if height % patch or width % patch:
        raise ValueError(f"patch {patch} must divide the image size {height} x {width}; "
                         f"choose a divisor of both")
