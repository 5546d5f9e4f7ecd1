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
import contextlib
import copy
import inspect
import math
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..progress import progress

# A layer whose changed region covers this share of its output map is computed whole.
WHOLE_MAP_SHARE = 0.75
# Perturbations per batch on the CPU: more amortise the per-layer overhead, cost memory.
CPU_PERTURBATIONS_PER_BATCH = 64
# Share of the free GPU memory a batch may use.
GPU_MEMORY_SHARE = 0.5
# Stored feature maps of at most this many bytes per pass over a group of images.
STORED_BYTES_PER_PASS = 2 ** 30

SCHEMES = ("forward", "central")
CHANNEL_MODES = ("each", "all")
OUTPUTS = ("logit", "probability")


@dataclass
class _Region:
    """A batch's values of one feature map inside a rectangle, the rest being unchanged.

    ``values`` is ``K x C x h x w``; perturbation ``k``'s rectangle starts at row ``top[k]`` and
    column ``left[k]`` and lies inside the map. Outside it the map equals the stored map of the
    perturbation's image.
    """

    values: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


class IncrementalEngine:
    """Outputs of ``model`` for batches of rectangle perturbations of stored images.

    ``model`` must be in eval mode and map ``N x C x H x W`` images to one output per image;
    ``example`` is a batch of images of the shape to be used (only its first image is read).
    Call :meth:`set_images` with the reference images (of that shape), then :meth:`outputs`
    per batch of perturbations.

    ``field_cap`` (default ``None``: exact) makes the outputs approximate, as Krypton's
    projective-field thresholding: a sliding-window layer computes at most this share of its
    output's rows and of its columns (the middle of the changed ones), and takes the rest of the
    changed outputs as unchanged.

    Attributes:
        traced: whether the model traced (otherwise every batch is whole forwards).
        incremental: whether some layer can be computed on regions.
        stored_bytes: bytes of the stored feature maps for the current images.
        reference: the model's outputs for the current images.
        full_macs_per_image: multiply-adds of convolutions and linear layers in one forward.
        macs: multiply-adds of convolutions and linear layers spent by :meth:`outputs` since
            the last :meth:`set_images`.
        last_regions: ``{layer name: (rows, columns)}``, the region computed by each
            sliding-window layer in the last batch (layers computed whole are absent).
    """

    @torch.inference_mode()
    def __init__(self, model, example, *, field_cap=None):
        if field_cap is not None and not 0 < field_cap <= 1:
            raise ValueError(f"field_cap must be None (exact) or in (0, 1]; got {field_cap!r}")
        self.field_cap = field_cap
        self._model = model
        self._image_shape = tuple(example.shape[1:])
        graph = _trace(model, example[:1])
        self.traced = graph is not None
        self._graph = graph if graph is not None else _whole_model_graph(model)
        self._nodes = list(self._graph.nodes)
        self._functions = {node: _pure_function(node, model if self.traced else None)
                           for node in self._nodes if node.op not in ("placeholder", "output")}
        positions = {node: index for index, node in enumerate(self._nodes)}
        self._last_use = {node: max((positions[user] for user in node.users),
                                    default=positions[node]) for node in self._nodes}
        self._aranges = {}
        self.images = None
        self.incremental = False
        self.last_regions = {}

    @torch.inference_mode()
    def set_images(self, images):
        """Run the reference forward of ``images`` (``B x C x H x W``), storing its maps."""
        if tuple(images.shape[1:]) != self._image_shape:
            # The graph may hold shapes computed for the example (e.g. padding).
            raise ValueError(f"images must have the example's shape C x H x W = "
                             f"{self._image_shape}; got {tuple(images.shape[1:])}")
        self.images = images
        self._kind, self._static, self._stored, self._shape = {}, {}, {}, {}
        self._may_be_region, self._divisors, self._macs_per_output = set(), {}, {}
        self.macs, self.reference_macs = 0, 0
        env, first = {}, True
        for index, node in enumerate(self._nodes):
            if node.op == "placeholder":
                if first:
                    value, self._kind[node], first = images, "input", False
                    self._may_be_region.add(node)
                else:
                    value, self._kind[node] = _default_of(node), "static"
                    self._static[node] = value
            elif node.op == "output":
                self._kind[node] = "output"
                self._store_regions_of(node, env)
                self.reference = fx.node.map_arg(node.args[0], lambda n: self._value(n, env))
                continue
            else:
                args, kwargs = self._arguments(node, env)
                value = self._functions[node](*args, **kwargs)
                if all(self._kind[n] == "static" for n in node.all_input_nodes):
                    self._kind[node] = "static"
                    self._static[node] = value
                else:
                    self._kind[node] = self._classify(node, env, value)
                    self._store_regions_of(node, env)
                    self._macs_per_output[node] = _macs_per_output(
                        node, self._model if self.traced else None, self._static)
                    self.reference_macs += self._macs(node, value)
            if isinstance(value, torch.Tensor) and self._kind[node] != "static":
                self._shape[node] = tuple(value.shape)
            env[node] = value
            self._release(index, env)
        self.full_macs_per_image = self.reference_macs / images.shape[0]
        self.incremental = any(self._kind[n] in ("conv", "maxpool", "avgpool")
                               and n.args[0] in self._may_be_region for n in self._nodes)
        self.stored_bytes = sum(rows.nbytes for rows in self._stored.values())
        return self

    @torch.inference_mode()
    def outputs(self, image, top, left, values):
        """The model's outputs for ``K`` perturbed images.

        Perturbation ``k`` is image ``image[k]`` (an index into the current images) with the
        ``h x w`` rectangle at row ``top[k]``, column ``left[k]`` replaced by ``values[k]``
        (``values`` is ``K x C x h x w``, every channel; the rectangle inside the image).
        Returns what the model returns for a ``K``-image batch.
        """
        self._image = image
        self.last_regions = {}
        env = {}
        for index, node in enumerate(self._nodes):
            kind = self._kind[node]
            if kind == "static":
                continue
            if kind == "input":
                env[node] = _Region(values, top, left)
            elif kind == "output":
                return fx.node.map_arg(node.args[0], lambda n: self._whole(n, env))
            else:
                env[node] = getattr(self, "_run_" + kind)(node, env)
            self._release(index, env)
        raise RuntimeError("the traced graph has no output")

    # -- planning (during the reference forward) --------------------------------------------

    def _classify(self, node, env, value):
        """How ``node`` runs on regions: a kind for ``_run_<kind>``."""
        dynamic = [n for n in node.all_input_nodes if self._kind[n] != "static"]
        region_inputs = [n for n in dynamic if n in self._may_be_region]
        if node.op == "call_method" and node.target in ("size", "dim"):
            return "shape"
        kind = _region_kind(node, self._model if self.traced else None, env, self._static,
                            dynamic, value)
        if kind is None or not region_inputs:
            return "generic"
        if kind in ("conv", "maxpool", "avgpool", "pointwise", "pad"):
            if len(dynamic) != 1:
                return "generic"
        self._may_be_region.add(node)
        if kind == "avgpool":
            self._avg_divisors(node, env[node.args[0]].shape[-2:], value.shape[-2:])
        return kind

    def _store_regions_of(self, node, env):
        """Keep the maps that ``node`` reads around a region (or as a whole map)."""
        if self._kind[node] in ("pointwise", "pad", "shape", "static"):
            return
        for source in node.all_input_nodes:
            if source in self._may_be_region and source not in self._stored:
                # One zero row at the end stands for every position outside the map.
                value = env[source]
                rows = value.permute(0, 2, 3, 1).reshape(-1, value.shape[1])
                self._stored[source] = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])

    def _avg_divisors(self, node, in_size, out_size):
        """Per output row and column, what ``AvgPool2d`` divides the window sum by."""
        module = _module(self._model, node)
        kernel, stride, padding = (_pair(module.kernel_size), _pair(module.stride or
                                   module.kernel_size), _pair(module.padding))
        divisors = []
        for axis in range(2):
            start = torch.arange(out_size[axis]) * stride[axis] - padding[axis]
            end = torch.clamp(start + kernel[axis], max=in_size[axis] + padding[axis])
            size = end - start
            if not module.count_include_pad:
                size = end.clamp(max=in_size[axis]) - start.clamp(min=0)
            divisors.append(size)
        self._divisors[node] = divisors

    # -- running one batch -------------------------------------------------------------------

    def _run_generic(self, node, env):
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: self._whole(n, env))
        value = self._functions[node](*args, **kwargs)
        self.macs += self._macs(node, value)
        return value

    def _run_shape(self, node, env):
        source = env.get(node.args[0])
        if not isinstance(source, _Region):
            return self._run_generic(node, env)
        shape = (len(self._image),) + self._shape[node.args[0]][1:]
        meta = torch.empty(shape, device="meta")
        return getattr(meta, node.target)(*node.args[1:], **node.kwargs)

    def _run_pointwise(self, node, env):
        (source,) = [n for n in node.all_input_nodes if self._kind[n] != "static"]
        region = env[source]
        if not isinstance(region, _Region):
            return self._run_generic(node, env)
        values = self._call(node, env, {source: region.values})
        return _Region(values, region.top, region.left)

    def _run_pad(self, node, env):
        """Constant padding moves a region by the padding before it; the new border is fixed."""
        region = env[node.args[0]]
        if not isinstance(region, _Region):
            return self._run_generic(node, env)
        pad = _constant_padding(node)
        return _Region(region.values, region.top + pad[2], region.left + pad[0])

    def _run_union(self, node, env):
        """An element-wise operation (or concatenation) of several maps, on their regions'
        union."""
        sources = [n for n in node.all_input_nodes if self._kind[n] != "static"]
        regions = [env[n] for n in sources]
        if not all(isinstance(r, _Region) for r in regions):
            return self._run_generic(node, env)
        first = regions[0]
        if all(r.values.shape[-2:] == first.values.shape[-2:] and torch.equal(r.top, first.top)
               and torch.equal(r.left, first.left) for r in regions[1:]):
            values = self._call(node, env, {n: r.values for n, r in zip(sources, regions)})
            return _Region(values, first.top, first.left)
        height, width = self._shape[sources[0]][-2:]
        top, rows = _union([r.top for r in regions], [r.values.shape[-2] for r in regions],
                           height)
        left, cols = _union([r.left for r in regions], [r.values.shape[-1] for r in regions],
                            width)
        values = self._call(node, env, {n: self._gather(n, r, top, left, rows, cols)
                                        for n, r in zip(sources, regions)})
        return _Region(values, top, left)

    def _run_conv(self, node, env):
        return self._run_window(node, env)

    def _run_maxpool(self, node, env):
        return self._run_window(node, env)

    def _run_avgpool(self, node, env):
        return self._run_window(node, env)

    def _run_window(self, node, env):
        """A sliding-window layer on the region it changes, or whole when that is most."""
        source = node.args[0]
        region = env[source]
        if not isinstance(region, _Region):
            return self._run_generic(node, env)
        kind = self._kind[node]
        kernel, stride, padding, dilation = _window_geometry(node, self._model, self._static)
        out_height, out_width = self._shape[node][-2:]
        size, start = [], []
        for axis, (corner, out_size) in enumerate(((region.top, out_height),
                                                  (region.left, out_width))):
            reach = dilation[axis] * (kernel[axis] - 1)
            length = min(out_size, (region.values.shape[-2 + axis] + reach - 1)
                         // stride[axis] + 1)
            first = -((reach - padding[axis] - corner) // stride[axis])  # ceil division
            if self.field_cap is not None and length > self.field_cap * out_size:
                # Approximation: keep the middle of the changed outputs, the rest unchanged.
                cap = max(1, math.ceil(self.field_cap * out_size))
                first, length = first + (length - cap) // 2, cap
            size.append(length)
            start.append(first.clamp(min=0, max=out_size - length))
        if size[0] * size[1] >= WHOLE_MAP_SHARE * out_height * out_width:
            return self._run_generic(node, env)
        in_rows = [(size[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
        fill = -torch.inf if kind == "maxpool" else 0.0
        window = self._gather(source, region, start[0] * stride[0] - padding[0],
                              start[1] * stride[1] - padding[1], in_rows[0], in_rows[1], fill)
        if kind == "conv":
            weight, bias, groups = _conv_parameters(node, self._model, self._static)
            values = F.conv2d(window, weight, bias, stride, 0, dilation, groups)
            self.macs += values.numel() * weight[0].numel()
        elif kind == "maxpool":
            values = F.max_pool2d(window, kernel, stride, 0, dilation)
        else:
            values = F.avg_pool2d(window, kernel, stride, 0, divisor_override=1)
            divisor_override = _module(self._model, node).divisor_override
            if divisor_override:
                values = values / divisor_override
            else:
                rows, cols = self._divisors[node]
                rows = rows.to(window.device)[start[0][:, None] + self._arange(size[0])]
                cols = cols.to(window.device)[start[1][:, None] + self._arange(size[1])]
                values = values / (rows[:, None, :, None] * cols[:, None, None, :]).to(
                    values.dtype)
        self.last_regions[node.name] = tuple(size)
        return _Region(values, start[0], start[1])

    # -- gathering maps ------------------------------------------------------------------------

    def _whole(self, node, env):
        """The value of ``node`` for the batch, regions spliced into whole maps."""
        value = self._value(node, env)
        if not isinstance(value, _Region):
            return value
        height, width = self._shape[node][-2:]
        zeros = torch.zeros_like(value.top)
        return self._gather(node, value, zeros, zeros, height, width)

    def _gather(self, node, region, top, left, rows, cols, fill=0.0):
        """``K x C x rows x cols`` windows of map ``node`` at ``top``, ``left`` (may overhang).

        Inside the map: the region's values where it has them, else the stored map; outside
        the map: ``fill``. The result is channels-last in memory.
        """
        stored = self._stored[node]
        _, channels, height, width = self._shape[node]
        count = len(top)
        outside_row = stored.shape[0] - 1
        ys = top[:, None] + self._arange(rows)
        xs = left[:, None] + self._arange(cols)
        inside = (((ys >= 0) & (ys < height))[:, :, None] & ((xs >= 0) & (xs < width))[:, None])
        index = (self._image[:, None, None] * (height * width)
                 + ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None])
        index = torch.where(inside, index, outside_row).flatten()
        # One extra row receives the region's values that fall outside the window.
        spare = count * rows * cols
        window = stored.index_select(0, torch.cat([index, index.new_full((1,), outside_row)]))
        region_rows = region.values.shape[-2]
        region_cols = region.values.shape[-1]
        ry = region.top[:, None] - top[:, None] + self._arange(region_rows)
        rx = region.left[:, None] - left[:, None] + self._arange(region_cols)
        fits = (((ry >= 0) & (ry < rows))[:, :, None] & ((rx >= 0) & (rx < cols))[:, None])
        target = (self._arange(count)[:, None, None] * (rows * cols)
                  + ry[:, :, None] * cols + rx[:, None])
        target = torch.where(fits, target, spare).flatten()
        window.index_copy_(0, target, region.values.permute(0, 2, 3, 1).reshape(-1, channels))
        window = window[:spare].view(count, rows, cols, channels)
        if fill != 0.0 and not bool(inside.all()):
            window.masked_fill_(~inside[..., None], fill)
        return window.permute(0, 3, 1, 2)

    # -- helpers -----------------------------------------------------------------------------

    def _value(self, node, env):
        return self._static[node] if self._kind[node] == "static" else env[node]

    def _arguments(self, node, env):
        return fx.node.map_arg((node.args, node.kwargs), lambda n: self._value(n, env))

    def _call(self, node, env, replaced):
        args, kwargs = fx.node.map_arg(
            (node.args, node.kwargs),
            lambda n: replaced[n] if n in replaced else self._value(n, env))
        return self._functions[node](*args, **kwargs)

    def _macs(self, node, value):
        per_output = self._macs_per_output.get(node, 0)
        return value.numel() * per_output if per_output and isinstance(value, torch.Tensor) else 0

    def _release(self, index, env):
        """Drop values that no later node reads."""
        for node in [n for n in env if self._last_use[n] <= index]:
            del env[node]

    def _arange(self, length):
        device = self.images.device
        if (length, device) not in self._aranges:
            self._aranges[length, device] = torch.arange(length, device=device)
        return self._aranges[length, device]


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


# -- which operations run on regions ---------------------------------------------------------

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Identity)
_EVAL_IDENTITY_MODULES = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.softsign, F.logsigmoid,
    torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, torch.exp, torch.log, torch.abs, torch.neg,
    torch.sqrt, torch.rsqrt, torch.square, torch.clamp, torch.clip, torch.pow,
    operator.neg, operator.pos, operator.abs}
_ARITHMETIC_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.pow, torch.add,
    torch.sub, torch.mul, torch.div, torch.true_divide, torch.maximum, torch.minimum}
_ELEMENTWISE_METHODS = {
    "relu", "sigmoid", "tanh", "exp", "log", "abs", "neg", "sqrt", "rsqrt", "square", "clamp",
    "clip", "pow", "contiguous", "add", "sub", "mul", "div", "true_divide", "maximum",
    "minimum"}
_ARITHMETIC_METHODS = {"add", "sub", "mul", "div", "true_divide", "pow", "maximum", "minimum"}


def _region_kind(node, root, env, static, dynamic, value):
    """``"conv"``, ``"maxpool"``, ``"avgpool"``, ``"pad"``, ``"pointwise"``, ``"union"`` or
    ``None`` (whole maps)."""
    source = env.get(dynamic[0]) if dynamic else None
    if not (isinstance(value, torch.Tensor) and isinstance(source, torch.Tensor)
            and value.ndim == 4 and source.ndim == 4 and value.shape[0] == source.shape[0]):
        return None
    if node.op == "call_module":
        module = _module(root, node)
        kind = type(module)
        if kind is nn.Conv2d and module.padding_mode == "zeros" and _conv_padding(
                module.padding, module.kernel_size, module.dilation) is not None:
            return "conv"
        if kind is nn.MaxPool2d and not module.return_indices:
            return "maxpool"
        if kind is nn.AvgPool2d:
            return "avgpool"
        pointwise = (kind in _ELEMENTWISE_MODULES
                     or (kind in _EVAL_IDENTITY_MODULES and not module.training)
                     or (kind is nn.BatchNorm2d and not module.training
                         and module.running_mean is not None))
        return "pointwise" if pointwise and value.shape == source.shape else None
    if node.op == "call_function" and node.target is F.conv2d:
        args = _conv_call_arguments(node)
        if (args["input"] is dynamic[0] and len(dynamic) == 1 and _static_tensors(args, static)
                and isinstance(args["weight"], fx.Node)
                and _conv_padding(args["padding"], static[args["weight"]].shape[-2:],
                                  args["dilation"]) is not None):
            return "conv"
        return None
    if node.op == "call_function" and node.target is F.pad:
        return "pad" if _constant_padding(node) is not None else None
    arithmetic = ((node.op == "call_function" and node.target in _ARITHMETIC_FUNCTIONS)
                  or (node.op == "call_method" and node.target in _ARITHMETIC_METHODS))
    if arithmetic and len(dynamic) == 2:
        other = env[dynamic[1]]
        same = (isinstance(other, torch.Tensor) and other.shape == source.shape
                and value.shape == source.shape)
        return "union" if same and _constants_broadcast(node, static, dynamic) else None
    if node.op == "call_function" and node.target is torch.cat:
        return _concatenation_kind(node, env, dynamic, value)
    elementwise = ((node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS)
                   or arithmetic or (node.op == "call_method"
                                     and node.target in _ELEMENTWISE_METHODS))
    if elementwise and len(dynamic) == 1 and _constants_broadcast(node, static, dynamic):
        return "pointwise" if value.shape[2:] == source.shape[2:] else None
    if node.op == "call_method" and node.target in ("expand", "repeat") and len(dynamic) == 1:
        sizes = node.args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        keep = -1 if node.target == "expand" else 1
        if len(sizes) == 4 and all(type(s) is int for s in sizes) and (
                sizes[0] == sizes[2] == sizes[3] == keep) and not node.kwargs:
            return "pointwise"
    return None


def _concatenation_kind(node, env, dynamic, value):
    """Concatenating maps along channels: their regions' union (one map: element-wise)."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if dim not in (1, -3) or not isinstance(tensors, (tuple, list)):
        return None
    for tensor in tensors:
        if not (isinstance(tensor, fx.Node) and tensor in dynamic):
            return None
        shape = env[tensor].shape
        if len(shape) != 4 or shape[0] != value.shape[0] or shape[2:] != value.shape[2:]:
            return None
    return "union" if len(dynamic) > 1 else "pointwise"


def _constants_broadcast(node, static, dynamic):
    """Whether every constant tensor operand is per channel at most (no spatial extent)."""
    operands = []
    fx.node.map_arg((node.args, node.kwargs), operands.append)
    for operand in operands:
        if operand in dynamic:
            continue
        value = static.get(operand)
        if not isinstance(value, torch.Tensor):
            if operand in static:
                continue
            return False
        shape = (1,) * (4 - value.ndim) + tuple(value.shape) if value.ndim <= 4 else None
        if shape is None or shape[0] != 1 or shape[2] != 1 or shape[3] != 1:
            return False
    return True


def _static_tensors(args, static):
    return all(not isinstance(args[name], fx.Node) or args[name] in static
               for name in ("weight", "bias"))


def _conv_call_arguments(node):
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    args = dict(defaults, **dict(zip(names, node.args)), **node.kwargs)
    return args


def _constant_padding(node):
    """``F.pad``'s (left, right, top, bottom) where it pads rows and columns with a constant."""
    args = dict(zip(("input", "pad", "mode", "value"), node.args), **node.kwargs)
    pad = args.get("pad")
    if (args.get("mode", "constant") != "constant" or not isinstance(pad, (tuple, list))
            or len(pad) != 4 or not all(type(p) is int and p >= 0 for p in pad)):
        return None
    return tuple(pad)


def _conv_padding(padding, kernel, dilation):
    """The padding before the first row and column, or ``None`` where it is not known."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            return tuple(d * (k - 1) // 2 for k, d in zip(_pair(kernel), _pair(dilation)))
        return None
    return _pair(padding)


def _window_geometry(node, root, static):
    """``(kernel, stride, padding, dilation)`` pairs of a sliding-window node."""
    if node.op == "call_function":
        args = _conv_call_arguments(node)
        kernel = tuple(static[args["weight"]].shape[-2:])
        dilation = _pair(args["dilation"])
        return kernel, _pair(args["stride"]), _conv_padding(args["padding"], kernel,
                                                            dilation), dilation
    module = _module(root, node)
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size, module.stride,
                _conv_padding(module.padding, module.kernel_size, module.dilation),
                module.dilation)
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    return kernel, stride, _pair(module.padding), dilation


def _conv_parameters(node, root, static):
    if node.op == "call_function":
        args = _conv_call_arguments(node)
        bias = args["bias"]
        return (static[args["weight"]], static[bias] if isinstance(bias, fx.Node) else bias,
                args["groups"])
    module = _module(root, node)
    return module.weight, module.bias, module.groups


def _macs_per_output(node, root, static):
    """Multiply-adds per output element of a convolution or linear node, else 0."""
    if node.op == "call_module" and root is not None:
        module = _module(root, node)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return module.weight[0].numel()
    if node.op == "call_function" and node.target in (F.conv2d, F.linear):
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if isinstance(static.get(weight), torch.Tensor):
            return static[weight][0].numel()
    return 0


def _union(starts, sizes, limit):
    """Starts and common size of windows covering all the windows, inside ``0..limit``."""
    low = torch.stack(starts).amin(0)
    high = torch.stack([start + size for start, size in zip(starts, sizes)]).amax(0)
    size = min(limit, int((high - low).max()))
    return low.clamp(max=limit - size), size


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _module(root, node):
    return root.get_submodule(node.target)


def _default_of(node):
    if not node.args:
        raise ValueError(f"the model's input {node.target!r} has no default")
    return node.args[0]


# -- tracing ---------------------------------------------------------------------------------

class _ConcreteShapeProxy(fx.Proxy):
    """A traced tensor whose shape (except the batch size), dtype and device are concrete."""

    def _example(self):
        return self.tracer.concrete(self.node)

    @property
    def shape(self):
        return self.size()

    @property
    def ndim(self):
        return self._example().ndim

    @property
    def dtype(self):
        return self._example().dtype

    @property
    def device(self):
        return self._example().device

    def dim(self):
        return self._example().ndim

    def size(self, dim=None):
        shape = tuple(self._example().shape)
        if shape:
            # The batch size stays symbolic: the engine runs batches of other sizes.
            shape = (self.tracer.create_proxy("call_method", "size", (self, 0), {}),) + shape[1:]
        return shape if dim is None else shape[dim]


class _ConcreteShapeTracer(fx.Tracer):
    """``torch.fx`` tracing that answers shape questions from a run of an example batch."""

    def __init__(self, example):
        super().__init__()
        self.example = example
        self.values = {}

    def proxy(self, node):
        return _ConcreteShapeProxy(node, self)

    def concrete(self, node):
        """The example's value at ``node``, evaluating the graph built so far in order."""
        with _untraced_modules():
            return self._evaluate_up_to(node)

    def _evaluate_up_to(self, node):
        for earlier in self.graph.nodes:
            if earlier not in self.values:
                if earlier.op == "placeholder":
                    first = not any(n.op == "placeholder" for n in self.values)
                    self.values[earlier] = self.example if first else _default_of(earlier)
                else:
                    args, kwargs = fx.node.map_arg((earlier.args, earlier.kwargs),
                                                   self.values.__getitem__)
                    self.values[earlier] = _pure_function(earlier, self.root)(*args, **kwargs)
            if earlier is node:
                return self.values[node]
        raise RuntimeError(f"node {node} is not in the graph")


# Tracing replaces these to record module calls; evaluating the example needs the originals.
_MODULE_CALL, _MODULE_GETATTR = nn.Module.__call__, nn.Module.__getattr__


@contextlib.contextmanager
def _untraced_modules():
    traced = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__, nn.Module.__getattr__ = _MODULE_CALL, _MODULE_GETATTR
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = traced


def _trace(model, example):
    """The model's ``fx.Graph``, or ``None`` where it cannot be traced safely.

    Traced twice, on one and on two images: shapes baked into the graph must not depend on
    the batch size. In-place operations are run out of place, which must not be observable.
    """
    if not isinstance(model, nn.Module):
        return None
    graphs = []
    for copies in (1, 2):
        try:
            tracer = _ConcreteShapeTracer(example.expand(copies, *example.shape[1:]).clone())
            graph = tracer.trace(model)
        except Exception:  # noqa: BLE001 -- whatever stops tracing, whole forwards are exact
            return None
        graphs.append(graph)
    if str(graphs[0]) != str(graphs[1]) or not _mutations_are_local(graphs[1], model):
        return None
    if any(_mutated_argument(n, model) is not None and not _has_pure_form(n)
           for n in graphs[1].nodes):
        return None
    placeholders = [n for n in graphs[1].nodes if n.op == "placeholder"]
    if any(not n.args for n in placeholders[1:]):
        return None
    return graphs[1]


def _whole_model_graph(model):
    """A graph of one node, the whole model: every batch runs as whole forwards."""
    def whole_model(images):
        return model(images)

    graph = fx.Graph()
    graph.output(graph.call_function(whole_model, (graph.placeholder("images"),)))
    return graph


# -- in-place operations -----------------------------------------------------------------------

_IN_PLACE_OPERATORS = {operator.iadd: operator.add, operator.isub: operator.sub,
                       operator.imul: operator.mul, operator.itruediv: operator.truediv,
                       operator.ipow: operator.pow, operator.iand: operator.and_,
                       operator.ior: operator.or_}
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.BatchNorm1d,
                  nn.BatchNorm2d, nn.BatchNorm3d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d,
                  nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LayerNorm, nn.GroupNorm)
_FRESH_FUNCTIONS = (_ELEMENTWISE_FUNCTIONS | _ARITHMETIC_FUNCTIONS | {
    torch.cat, torch.stack, F.conv2d, F.linear, F.adaptive_avg_pool2d, torch.mean, torch.sum})


def _mutated_argument(node, root):
    """The node whose tensor ``node`` modifies in place, or ``None``."""
    if node.op == "call_module" and getattr(_module(root, node), "inplace", False):
        return node.args[0]
    if node.op == "call_method" and node.target.endswith("_") and not node.target.startswith(
            "__"):
        return node.args[0]
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in _IN_PLACE_OPERATORS or (name.endswith("_") and not name.startswith(
                "__")) or _inplace_flag(node):
            return node.args[0] if node.args else None
    return None


def _inplace_flag(node):
    """Whether a call passes ``inplace=True`` (by keyword or position)."""
    if node.kwargs.get("inplace"):
        return True
    position = _inplace_position(node.target)
    return position is not None and len(node.args) > position and bool(node.args[position])


def _inplace_position(function):
    if not inspect.isfunction(function):
        return None
    try:
        names = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


def _mutations_are_local(graph, root):
    """Whether running in-place operations out of place leaves every result unchanged.

    True when no tensor changed in place (or any view of it) is read after the change except
    through the changing operation's result, and no input or parameter is changed. Operations
    not known to return a new tensor count as views of all their inputs.
    """
    nodes = list(graph.nodes)
    mutations = [(n, m) for n in nodes if (m := _mutated_argument(n, root)) is not None]
    if not mutations:
        return True
    parent = {n: n for n in nodes}

    def find(node):
        while parent[node] is not node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for node in nodes:
        mutated = _mutated_argument(node, root)
        if mutated is not None:
            sources = [mutated] if isinstance(mutated, fx.Node) else []
        elif _returns_new_tensor(node, root):
            sources = []
        else:
            sources = node.all_input_nodes
        for source in sources:
            parent[find(node)] = find(source)
    position = {n: i for i, n in enumerate(nodes)}
    for node, mutated in mutations:
        if not isinstance(mutated, fx.Node):
            return False
        group = find(mutated)
        for member in nodes:
            if find(member) is not group or position[member] >= position[node]:
                continue
            if member.op in ("placeholder", "get_attr"):
                return False
            if any(position[user] > position[node] for user in member.users):
                return False
    return True


def _returns_new_tensor(node, root):
    if node.op == "call_module":
        module = _module(root, node)
        if isinstance(module, (_ELEMENTWISE_MODULES + _EVAL_IDENTITY_MODULES)):
            return not isinstance(module, (nn.Identity,) + _EVAL_IDENTITY_MODULES)
        return isinstance(module, _FRESH_MODULES)
    if node.op == "call_function":
        return node.target in _FRESH_FUNCTIONS
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS - {"contiguous"}
    return False


def _has_pure_form(node):
    """Whether an in-place ``node`` has an out-of-place counterpart."""
    if node.op == "call_method":
        return hasattr(torch.Tensor, node.target[:-1]) if node.target.endswith("_") else True
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target in _IN_PLACE_OPERATORS or not name.endswith("_"):
            return True
        return any(callable(getattr(namespace, name[:-1], None)) for namespace in (torch, F))
    return True


def _pure_function(node, root):
    """A callable computing ``node`` from its argument values, never modifying them."""
    if node.op == "get_attr":
        return lambda: _attribute(root, node.target)
    if node.op == "call_module":
        module = _module(root, node)
        if getattr(module, "inplace", False):
            module = copy.copy(module)
            module.inplace = False
        return module
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.startswith("__"):
            name = name[:-1]
        return lambda obj, *args, **kwargs: getattr(obj, name)(*args, **kwargs)
    function = node.target
    if function in _IN_PLACE_OPERATORS:
        return _IN_PLACE_OPERATORS[function]
    name = getattr(function, "__name__", "")
    if name.endswith("_") and not name.startswith("__"):
        for namespace in (torch, F):
            if callable(getattr(namespace, name[:-1], None)):
                return getattr(namespace, name[:-1])
    position = _inplace_position(function)
    if position is None:
        return function

    def out_of_place(*args, **kwargs):
        if len(args) > position:
            args = args[:position] + (False,) + args[position + 1:]
        if "inplace" in kwargs:
            kwargs = dict(kwargs, inplace=False)
        return function(*args, **kwargs)

    return out_of_place


def _attribute(root, target):
    value = root
    for name in target.split("."):
        value = getattr(value, name)
    return value
