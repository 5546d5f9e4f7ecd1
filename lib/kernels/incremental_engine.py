"""The incremental inference engine: a model's outputs for many small perturbations of a few
images, each layer recomputed only on the region the perturbation changes (see
``lib.kernels.incremental``)."""
import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F

from .incremental_graph import (conv_parameters, constant_padding, default_of,
                                macs_per_output, node_module, pair, pure_function, region_kind,
                                trace, union, whole_model_graph, window_geometry)

# A layer whose changed region covers this share of its output map is computed whole.
WHOLE_MAP_SHARE = 0.75


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
        graph = trace(model, example[:1])
        self.traced = graph is not None
        self._graph = graph if graph is not None else whole_model_graph(model)
        self._nodes = list(self._graph.nodes)
        self._functions = {node: pure_function(node, model if self.traced else None)
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
        self._may_be_region, self._divisors, self.macs_per_output = set(), {}, {}
        self.macs, self.reference_macs = 0, 0
        env, first = {}, True
        for index, node in enumerate(self._nodes):
            if node.op == "placeholder":
                if first:
                    value, self._kind[node], first = images, "input", False
                    self._may_be_region.add(node)
                else:
                    value, self._kind[node] = default_of(node), "static"
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
                    self.macs_per_output[node] = macs_per_output(
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
        kind = region_kind(node, self._model if self.traced else None, env, self._static,
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
        module = node_module(self._model, node)
        kernel, stride, padding = (pair(module.kernel_size), pair(module.stride or
                                   module.kernel_size), pair(module.padding))
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
        pad = constant_padding(node)
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
        top, rows = union([r.top for r in regions], [r.values.shape[-2] for r in regions],
                           height)
        left, cols = union([r.left for r in regions], [r.values.shape[-1] for r in regions],
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
        kernel, stride, padding, dilation = window_geometry(node, self._model, self._static)
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
            weight, bias, groups = conv_parameters(node, self._model, self._static)
            values = F.conv2d(window, weight, bias, stride, 0, dilation, groups)
            self.macs += values.numel() * weight[0].numel()
        elif kind == "maxpool":
            values = F.max_pool2d(window, kernel, stride, 0, dilation)
        else:
            values = F.avg_pool2d(window, kernel, stride, 0, divisor_override=1)
            divisor_override = node_module(self._model, node).divisor_override
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
        per_output = self.macs_per_output.get(node, 0)
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
