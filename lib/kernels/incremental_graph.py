"""The graph side of incremental inference: tracing a model with concrete shapes, and what each
operation of the traced graph can do on a changed region.

``region_kind`` says how a node of a ``torch.fx`` graph treats a rectangle of changed values:
computed on the region (convolutions, pooling windows, element-wise operations), merged from
several inputs (additions, channel concatenations), or only on whole maps (anything else).
``trace`` traces a model at two batch sizes with every other shape concrete, and refuses a
graph that depends on the batch size or whose in-place operations could be observed.
"""
import contextlib
import copy
import inspect
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn


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

def region_kind(node, root, env, static, dynamic, value):
    """``"conv"``, ``"maxpool"``, ``"avgpool"``, ``"pad"``, ``"pointwise"``, ``"union"`` or
    ``None`` (whole maps)."""
    source = env.get(dynamic[0]) if dynamic else None
    if not (isinstance(value, torch.Tensor) and isinstance(source, torch.Tensor)
            and value.ndim == 4 and source.ndim == 4 and value.shape[0] == source.shape[0]):
        return None
    if node.op == "call_module":
        module = node_module(root, node)
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
        return "pad" if constant_padding(node) is not None else None
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

def constant_padding(node):
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
            return tuple(d * (k - 1) // 2 for k, d in zip(pair(kernel), pair(dilation)))
        return None
    return pair(padding)

def window_geometry(node, root, static):
    """``(kernel, stride, padding, dilation)`` pairs of a sliding-window node."""
    if node.op == "call_function":
        args = _conv_call_arguments(node)
        kernel = tuple(static[args["weight"]].shape[-2:])
        dilation = pair(args["dilation"])
        return kernel, pair(args["stride"]), _conv_padding(args["padding"], kernel,
                                                            dilation), dilation
    module = node_module(root, node)
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size, module.stride,
                _conv_padding(module.padding, module.kernel_size, module.dilation),
                module.dilation)
    kernel = pair(module.kernel_size)
    stride = pair(module.stride or module.kernel_size)
    dilation = pair(getattr(module, "dilation", 1))
    return kernel, stride, pair(module.padding), dilation

def conv_parameters(node, root, static):
    if node.op == "call_function":
        args = _conv_call_arguments(node)
        bias = args["bias"]
        return (static[args["weight"]], static[bias] if isinstance(bias, fx.Node) else bias,
                args["groups"])
    module = node_module(root, node)
    return module.weight, module.bias, module.groups

def macs_per_output(node, root, static):
    """Multiply-adds per output element of a convolution or linear node, else 0."""
    if node.op == "call_module" and root is not None:
        module = node_module(root, node)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            return module.weight[0].numel()
    if node.op == "call_function" and node.target in (F.conv2d, F.linear):
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if isinstance(static.get(weight), torch.Tensor):
            return static[weight][0].numel()
    return 0

def union(starts, sizes, limit):
    """Starts and common size of windows covering all the windows, inside ``0..limit``."""
    low = torch.stack(starts).amin(0)
    high = torch.stack([start + size for start, size in zip(starts, sizes)]).amax(0)
    size = min(limit, int((high - low).max()))
    return low.clamp(max=limit - size), size

def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)

def node_module(root, node):
    return root.get_submodule(node.target)

def default_of(node):
    if not node.args:
        raise ValueError(f"the model's input {node.target!r} has no default")
    return node.args[0]

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
                    self.values[earlier] = self.example if first else default_of(earlier)
                else:
                    args, kwargs = fx.node.map_arg((earlier.args, earlier.kwargs),
                                                   self.values.__getitem__)
                    self.values[earlier] = pure_function(earlier, self.root)(*args, **kwargs)
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

def trace(model, example):
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

def whole_model_graph(model):
    """A graph of one node, the whole model: every batch runs as whole forwards."""
    def whole_model(images):
        return model(images)

    graph = fx.Graph()
    graph.output(graph.call_function(whole_model, (graph.placeholder("images"),)))
    return graph

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
    if node.op == "call_module" and getattr(node_module(root, node), "inplace", False):
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
        module = node_module(root, node)
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

def pure_function(node, root):
    """A callable computing ``node`` from its argument values, never modifying them."""
    if node.op == "get_attr":
        return lambda: _attribute(root, node.target)
    if node.op == "call_module":
        module = node_module(root, node)
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
