"""Layers of a network by dotted name, and forward hooks that exist only inside a ``with`` block."""
import contextlib


def layer_names(model):
    """The dotted names of every sub-module of ``model`` (what ``layer=`` accepts)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model, name):
    """The sub-module called ``name`` (dotted, e.g. ``"layer4"`` or ``"features.29"``).

    Raises ``ValueError`` listing the valid names when there is no such layer.
    """
    if not isinstance(name, str):
        raise TypeError(f"layer must be a dotted module name (str); got {type(name).__name__}")
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise ValueError(f"model has no layer {name!r}; valid layers: "
                         f"{', '.join(layer_names(model))}")
    return modules[name]


@contextlib.contextmanager
def hooked(model, hooks):
    """Register forward hooks ``{layer name: hook}`` for the ``with`` block only.

    Every hook is removed when the block ends, by an exception included.
    """
    modules = {name: get_layer(model, name) for name in hooks}  # validate before hooking
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
