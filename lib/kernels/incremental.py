"""Exact incremental inference: a model's outputs for many small perturbations of a few images.

A perturbation that changes a small rectangle of an image changes only a small region of each
early feature map: the rectangle's projective field. :class:`IncrementalEngine` runs the
unperturbed images once, keeping the feature maps that later layers read, and then, for a
batch of perturbations, recomputes each layer only on the changed region plus the halo its
kernel reads, all perturbations of the batch in one call per layer (their regions have the same
size), and reads everything else from the stored maps. Once a region covers most of a map
(``WHOLE_MAP_SHARE``), that layer and the ones after it compute whole maps, as a plain forward
would. The outputs equal those of full re-inference up to floating-point rounding: in float64
to about 1e-12 of the outputs; in float32 a finite-difference map computed this way is off the
float64 map by one to two times the brute-force float32 map's own error (rounding in the
recomputed regions adds to that of the changed pixels).

The model is traced with ``torch.fx``, with tensor shapes (all but the batch size) made
concrete from one example image, so that shape checks and shape arithmetic in ``forward``
trace; it is traced at two batch sizes, and a graph that depends on the batch size is not
used. Layers computed on regions: ``Conv2d`` and ``F.conv2d`` (any stride, padding, dilation
and groups; zero padding), constant ``F.pad``, ``MaxPool2d``, ``AvgPool2d``, eval-mode
``BatchNorm2d``, element-wise activations and dropout in eval mode, element-wise arithmetic with
constants or per-channel buffers (input normalisation), ``expand``/``repeat`` along channels,
and element-wise operations or channel concatenations of several feature maps (residual
additions, dense blocks: the union of their regions). Everything else (global pooling,
flatten, linear heads, unknown operations) runs on whole maps for the batch, so an unsupported
operation costs speed, never exactness. In-place operations run out of place where that
provably changes no result. A model that does not trace (or whose in-place operations could be
observed) runs as whole forwards of the perturbed images.

Memory: the engine keeps, per image, every feature map that a region-computed layer, a
several-input operation or the first whole-map layer reads: per image the sum of those maps'
sizes (:attr:`IncrementalEngine.stored_bytes`; at 224 x 224 in float32 about 58 MiB for the
book's VGG-16, 14 MiB for its ResNet-18). :func:`incremental_fd_sensitivity` stores at most
``STORED_BYTES_PER_PASS`` at once (at least one image). A batch of ``K`` perturbations holds in
addition ``K`` copies of the regions of a few consecutive layers and, after the switch to whole
maps, ``K`` whole maps of a few consecutive layers, like a forward of ``K`` images.
"""
import torch
import torch.nn.functional as F

from ..progress import progress
from .incremental_engine import IncrementalEngine  # noqa: F401  (the engine's home page)

# Perturbations per batch on the CPU: more amortise the per-layer overhead, cost memory.
CPU_PERTURBATIONS_PER_BATCH = 64
# Share of the free GPU memory a batch may use.
GPU_MEMORY_SHARE = 0.5
# Stored feature maps of at most this many bytes per pass over a group of images.
STORED_BYTES_PER_PASS = 2 ** 30
SCHEMES = ("forward", "central")
CHANNEL_MODES = ("each", "all")
OUTPUTS = ("logit", "probability")


def incremental_fd_sensitivity(model, x, target, delta, *, scheme="forward", patch=1,
                               channels="each", output="logit", chunk_size=None,
                               show_progress=True, require_graph=False, field_cap=None):
    """:func:`lib.local.fd_sensitivity`'s map, computed by incremental inference.

    Arguments and result are those of ``fd_sensitivity``, which checks them (``target`` is an
    int or one class per image); ``chunk_size`` is the number of perturbations per batch
    (``None``: ``CPU_PERTURBATIONS_PER_BATCH`` on the CPU, from the free memory on a GPU).
    With ``require_graph``, returns ``None`` instead of running whole forwards when the model
    does not trace or no layer of it can be computed on regions. ``field_cap`` (not exact,
    never the default) is :class:`IncrementalEngine`'s approximation.
    """
    batch, num_channels, height, width = x.shape
    target = torch.as_tensor(target, device=x.device).long().expand(batch)
    with torch.inference_mode():
        engine = IncrementalEngine(model, x, field_cap=field_cap).set_images(x[:1])
        if require_graph and not engine.incremental:
            return None
        per_image = max(engine.stored_bytes, 1)
        images_per_pass = max(1, min(batch, STORED_BYTES_PER_PASS // per_image))
        cells_per_image = (num_channels if channels == "each" else 1) * (height // patch) * (
            width // patch)
        per_cell = torch.empty(batch, cells_per_image, dtype=x.dtype, device=x.device)
        bar = progress(total=batch * cells_per_image, desc="fd_sensitivity (incremental)",
                       unit="perturbation", leave=False) if show_progress else None
        for first in range(0, batch, images_per_pass):
            images = x[first:first + images_per_pass]
            if first > 0 or images.shape[0] > 1:
                engine.set_images(images)
            cells = torch.arange(images.shape[0] * cells_per_image, device=x.device)
            per_cell[first:first + images.shape[0]] = cell_sensitivities(
                engine, target[first:first + images.shape[0]], delta,
                cells // cells_per_image, cells % cells_per_image, scheme=scheme, patch=patch,
                channels=channels, output=output, chunk_size=chunk_size,
                bar=bar).view(images.shape[0], cells_per_image)
        if bar is not None:
            bar.close()
    cells = per_cell.view(batch, -1, height // patch, width // patch)
    if patch == 1:
        return cells.contiguous()
    return cells.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)

def cell_sensitivities(engine, target, delta, image, cell, *, scheme="forward", patch=1,
                       channels="each", output="logit", chunk_size=None, bar=None):
    """Difference quotients of ``engine``'s class scores for a list of perturbations.

    Perturbation ``k`` moves cell ``cell[k]`` of image ``image[k]`` (an index into the engine's
    current images) by ``delta``; cells are numbered like ``fd_sensitivity``'s map: channel
    (``channels="each"``; one group for ``"all"``), then patch row, then patch column, patches
    being ``patch x patch``. ``target`` holds one class per image. Returns a ``K`` tensor in
    the images' dtype. The forward scheme's unperturbed scores are the engine's reference
    outputs (in float32 that is slightly closer to the float64 map than scoring unperturbed
    copies in every batch, as the brute force does).
    """
    images = engine.images
    _, num_channels, height, width = images.shape
    cols = width // patch
    per_group = (height // patch) * cols
    automatic = chunk_size is None
    if automatic:
        chunk_size = _auto_chunk_size(engine, scheme)
    results, start = [], 0
    while start < len(cell):
        stop = min(start + chunk_size, len(cell))
        try:
            results.append(_batch_quotients(engine, target, delta, image[start:stop],
                                            cell[start:stop], scheme, patch, channels, output,
                                            num_channels, per_group, cols))
        except torch.OutOfMemoryError:
            if not automatic or chunk_size == 1:
                raise
            chunk_size //= 2  # the estimate was too optimistic: retry with smaller batches
            if images.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        if bar is not None:
            bar.update(stop - start)
        start = stop
    if not results:
        return images.new_empty(0)
    return torch.cat(results)

def _batch_quotients(engine, target, delta, image, cell, scheme, patch, channels, output,
                     num_channels, per_group, cols):
    images = engine.images
    group, position = cell // per_group, cell % per_group
    top, left = (position // cols) * patch, (position % cols) * patch
    offsets = torch.arange(patch, device=images.device)
    ys, xs = top[:, None] + offsets, left[:, None] + offsets
    values = images[image[:, None, None], :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)
    if channels == "all":
        step = values.new_ones(len(cell), num_channels, 1, 1)
    else:
        step = F.one_hot(group, num_channels).to(values.dtype)[:, :, None, None]
    if scheme == "forward":
        scores = _scores(engine.outputs(image, top, left, torch.add(values, step, alpha=delta)),
                         target[image], output)
        return (scores - _scores(engine.reference, target, output)[image]) / delta
    scores = _scores(engine.outputs(
        torch.cat([image, image]), torch.cat([top, top]), torch.cat([left, left]),
        torch.cat([torch.add(values, step, alpha=delta), torch.add(values, step, alpha=-delta)])),
        torch.cat([target[image], target[image]]), output)
    return (scores[:len(cell)] - scores[len(cell):]) / (2 * delta)

def _scores(logits, target, output):
    if output == "probability":
        logits = logits.softmax(dim=1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)

def _auto_chunk_size(engine, scheme):
    """Perturbations per batch: a fixed number on the CPU, from the free memory on a GPU."""
    images = engine.images
    if images.device.type != "cuda":
        return CPU_PERTURBATIONS_PER_BATCH
    torch.cuda.synchronize(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    before = torch.cuda.memory_allocated(images.device)
    engine._model(images[:1])
    # At worst a perturbation costs a whole forward of one image.
    per_image = torch.cuda.max_memory_allocated(images.device) - before + 2 * images[0].nbytes
    free, _ = torch.cuda.mem_get_info(images.device)
    count = int(GPU_MEMORY_SHARE * free // max(per_image, 1))
    return max(1, count - 1 if scheme == "forward" else count // 2)
