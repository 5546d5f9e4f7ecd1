"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018): does a map depend on the model?

*Model-parameter randomisation.* An explanation of what a network has learned must change when
the learned weights are destroyed. :func:`cascading_randomization` re-initialises the
network's parameterised layers one after another from the output end down to the first layer,
each step keeping the layers randomised before it, and recomputes the maps after every step;
``mode="independent"`` randomises one layer at a time instead, the others intact. A map that
stays the same (an edge detector on the input would) explains the image, not the network.

*Data randomisation.* A network trained on labels permuted across the training set
(:func:`shuffled_labels`) can only memorise; maps of the real network that resemble its maps do
not reflect the relation between images and labels. The chapter retrains one architecture on
shuffled labels (cached like the other networks) and compares the two networks' maps of the
same test images with :func:`compare_maps`, the measures of the cascade.

Similarity of two maps of the same image: ``lib.kernels.similarity`` (Spearman and SSIM).

By default both maps enter by their absolute values (``absolute=True``): the question is
whether the *importance* of each pixel changes, and the book's maps are magnitudes. With signed
maps, a randomised head that merely flips the sign of the class direction would give a rank
correlation near -1 and read as a large change although the pattern of important pixels is
the same; signed comparison is available with ``absolute=False``.

Randomising a layer calls its own ``reset_parameters()`` (the initialisation PyTorch gives a
fresh layer) with the global random state seeded from ``(seed, position of the layer)`` and
restored afterwards, so a layer gets the same random weights in both modes and the caller's
random state is untouched. For batch norm this resets the affine weights (1 and 0) and the
running statistics (0 and 1), which makes the layer nearly an identity. The model passed in
is never modified: the work is done on a deep copy.
"""
import copy
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..progress import progress
from . import checks
from .bootstrap import bootstrap_counts
from .similarity import SIMILARITIES, check_similarity, check_ssim_size, compare_maps

MODES = ("cascading", "independent")
# Default for flag_insensitive: a Spearman correlation above 0.5 with the map of a network
# whose learned weights are gone is more rank agreement than the learned weights can take
# credit for (see flag_insensitive).
INSENSITIVE_SPEARMAN = 0.5
ORIGINAL_LAYER = "(none)"


@dataclass
class RandomizationResult:
    """What :func:`cascading_randomization` found.

    ``table``: one row per step and image, columns ``step`` (0 for the intact model, then 1,
    2, ...), ``layer`` (the layer or block randomised at that step, ``"(none)"`` at step 0),
    ``depth`` (its position counted from the output end, 1 for the last; 0 at step 0),
    ``image`` (index in the batch), then one column per similarity measure, comparing the
    step's maps with ``original``. ``original``: the intact model's maps as ``explain``
    returned them (detached, CPU). ``layers``: the parameterised layers in execution order,
    the first layer first. ``steps``: ``{name in the table: the layers that step randomises}``
    in execution order. ``maps``: ``{step: maps}`` (CPU) when kept, else empty.
    """

    table: pd.DataFrame
    original: torch.Tensor
    layers: list
    steps: dict
    mode: str
    absolute: bool
    similarity: tuple
    maps: dict = field(default_factory=dict)


def parameterised_layers(model, images):
    """Names of the modules of ``model`` with weights of their own (Conv2d, Linear,
    BatchNorm2d, ...), in the order their forward passes finish on ``images[:1]``.

    A module counts when it holds parameters itself, or buffers and a ``reset_parameters()``
    (batch norm without affine weights); buffers alone (e.g. a fixed input normalisation)
    are not learned and do not count. The order is the order of execution, not of
    definition; a module called more than once counts at its first call, and one never called
    (it cannot change the maps) is left out.
    """
    _check_model(model)
    checks.image_batch(images)
    owners = {name: module for name, module in model.named_modules() if _has_weights(module)}
    order, handles = [], []

    def recorder(name):
        def hook(module, inputs, output):
            if name not in order:
                order.append(name)
        return hook
    try:
        for name, module in owners.items():
            handles.append(module.register_forward_hook(recorder(name)))
        with torch.no_grad():
            model(images[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ValueError("the model has no parameterised layer that runs in its forward pass")
    return order


def cascading_randomization(model, explain, images, *, layers=None, seed=0,
                            similarity=SIMILARITIES, absolute=True, mode="cascading",
                            keep_maps=True, show_progress=True):
    """Maps of ``images`` as the model's layers are re-initialised from the top down.

    Args:
        model: a ``torch.nn.Module`` in eval mode on the device of ``images``; never modified.
        explain: ``explain(model, images) -> maps``, ``N x K x H x W`` with ``K`` 1 or the
            images' channels and ``H x W`` the images' size. It receives the (partly
            randomised) copy in eval mode. It should be deterministic, or seed itself: step 0
            recomputes the intact model's maps, so its similarity shows what run-to-run
            variation alone does.
        images: ``N x C x H x W``.
        layers: what each step randomises, or ``None`` for one step per parameterised layer
            (:func:`parameterised_layers`). A name of a layer randomises that layer; a name of
            a module that holds layers (a block, e.g. ``"layer4"`` of a ResNet) randomises
            every parameterised layer inside it in one step. A dict ``{step name: [module
            names]}`` makes a step of several modules (e.g. the convolutions and batch norms
            of one VGG block, which share no parent module). The names must not overlap.
            Steps run from the output end down, by the last-executed layer of each, whatever
            order the names are given in.
        seed: seeds the re-initialisation.
        similarity: names from ``SIMILARITIES``.
        absolute: compare ``|maps|`` (default; see the module docstring) or the signed maps.
        mode: ``"cascading"`` (randomisations accumulate) or ``"independent"`` (one layer at
            a time, the others intact).
        keep_maps: keep every step's maps in the result (for figures).

    Returns:
        A :class:`RandomizationResult`.
    """
    _check_model(model)
    checks.image_batch(images)
    if not callable(explain):
        raise TypeError(f"explain must be a callable explain(model, images) -> maps; got "
                        f"{type(explain).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    similarity = check_similarity(similarity)
    weight = next(model.parameters(), None)
    if weight is not None and weight.device != images.device:
        raise ValueError(f"the model is on {weight.device} and the images on {images.device}; "
                         f"move both to the same device")
    executed = parameterised_layers(model, images)
    groups = _layer_groups(model, executed, layers)
    original = _explain(explain, model, images, "the intact model")
    if "ssim" in similarity:
        check_ssim_size(original)

    working = copy.deepcopy(model).eval()
    modules = dict(working.named_modules())
    steps = [(ORIGINAL_LAYER, 0)] + [(name, depth) for depth, name
                                     in enumerate(reversed(list(groups)), start=1)]
    steps = progress(steps, desc=f"{mode} randomisation", unit="step", leave=False,
                     show=show_progress)
    frames, kept = [], {}
    for step, (name, depth) in enumerate(steps):
        members = groups.get(name, []) if step else []
        saved = ({member: copy.deepcopy(modules[member].state_dict()) for member in members}
                 if mode == "independent" else {})
        for member in members:
            _randomize(modules[member], member, seed, executed.index(member))
        maps = _explain(explain, working, images, f"step {step} (layer {name!r})",
                        expected=original.shape)
        for member, state in saved.items():
            modules[member].load_state_dict(state)
        scores = compare_maps(original, maps, similarity=similarity, absolute=absolute)
        frames.append(pd.DataFrame({"step": step, "layer": name, "depth": depth,
                                    "image": range(images.shape[0]),
                                    **{key: value.tolist() for key, value in scores.items()}}))
        if keep_maps:
            kept[step] = maps
    table = pd.concat(frames, ignore_index=True)
    return RandomizationResult(table, original, executed, groups, mode, absolute, similarity,
                               kept)


def summary(result, *, n_boot=1000, level=0.95, seed=0):
    """Mean similarity per step with a percentile-bootstrap interval over images.

    The images are resampled once and the same resamples serve every step and measure, so the
    curves against depth are compared on the same image sets. Images where a measure is NaN
    (a constant map) are left out of that step's mean. Returns a DataFrame with ``step``,
    ``layer``, ``depth``, ``similarity``, ``mean``, ``ci_low``, ``ci_high``, ``n`` (images
    with a defined value).
    """
    _check_result(result)
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")
    table = result.table
    images = int(table["image"].max()) + 1
    counts = bootstrap_counts(images, n_boot, seed)
    tails = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    rows = []
    for (step, layer, depth), group in table.groupby(["step", "layer", "depth"], sort=False):
        ordered = group.sort_values("image")
        for name in result.similarity:
            values = torch.full((images,), math.nan, dtype=torch.float64)
            values[torch.tensor(ordered["image"].to_numpy())] = torch.tensor(
                ordered[name].to_numpy(dtype=float))
            defined = ~values.isnan()
            filled = torch.where(defined, values, 0.0)
            replicates = (counts @ filled) / (counts @ defined.double())
            n = int(defined.sum())
            low, high = (torch.nanquantile(replicates, tails).tolist() if n
                         else (math.nan, math.nan))
            rows.append({"step": step, "layer": layer, "depth": depth, "similarity": name,
                         "mean": filled.sum().item() / n if n else math.nan,
                         "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(rows)


def flag_insensitive(results, *, threshold=INSENSITIVE_SPEARMAN, measure="spearman",
                     depth=None, n_boot=1000, level=0.95, seed=0):
    """Which methods' maps barely change when the model's layers are randomised.

    For each method, the lowest mean similarity (``measure``) over the randomisation steps
    with ``1 <= depth <= depth`` (all steps when ``depth`` is None; in a cascade usually the
    last, every layer randomised) is compared with ``threshold``: above it, the method is
    flagged as insensitive.

    Default 0.5 (Spearman): two unrelated maps correlate near 0, and maps of a network whose
    learned weights are all gone can still correlate with the real ones through what the
    image alone dictates (edges, the input's intensity in gradient-times-input); a correlation
    above 0.5 means more than a quarter of the rank variance is shared with a map that knows
    nothing of the training, so the map shows mainly the image. The point estimate is used,
    not the interval, so that a method is not let off for lack of images; the interval is in
    the table.

    Args:
        results: a :class:`RandomizationResult` or ``{method: RandomizationResult}``.

    Returns:
        A DataFrame, one row per method: ``method``, ``measure``, ``threshold``, ``depth`` and
        ``layer`` of the step with the lowest mean, ``mean``, ``ci_low``, ``ci_high``,
        ``insensitive`` (bool).
    """
    if isinstance(results, RandomizationResult):
        results = {"map": results}
    if not isinstance(results, dict) or not results:
        raise TypeError(f"results must be a RandomizationResult or a non-empty dict of them; "
                        f"got {type(results).__name__}")
    if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
            or not -1 <= threshold <= 1):
        raise ValueError(f"threshold must be a number in [-1, 1]; got {threshold!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, numbers.Integral)
                              or depth < 1):
        raise ValueError(f"depth must be None or a positive integer; got {depth!r}")
    rows = []
    for method, result in results.items():
        _check_result(result, name=f"results[{method!r}]")
        if measure not in result.similarity:
            raise ValueError(f"measure {measure!r} was not computed for {method!r}; it has "
                             f"{', '.join(result.similarity)}")
        table = summary(result, n_boot=n_boot, level=level, seed=seed)
        table = table[(table["similarity"] == measure) & (table["depth"] >= 1)]
        if depth is not None:
            table = table[table["depth"] <= depth]
        if table.empty or table["mean"].isna().all():
            raise ValueError(f"no randomised step with a defined {measure} for {method!r}")
        lowest = table.loc[table["mean"].idxmin()]
        rows.append({"method": method, "measure": measure, "threshold": float(threshold),
                     "depth": int(lowest["depth"]), "layer": lowest["layer"],
                     "mean": lowest["mean"], "ci_low": lowest["ci_low"],
                     "ci_high": lowest["ci_high"],
                     "insensitive": bool(lowest["mean"] > threshold)})
    return pd.DataFrame(rows)


def shuffled_labels(labels, seed):
    """The training labels permuted at random (seeded): the same classes in the same numbers,
    no longer attached to their images. Returns a tensor like ``labels``."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a vector; got shape {tuple(labels.shape)}")
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(labels.numel(), generator=generator).to(labels.device)]


def _has_weights(module):
    if next(module.parameters(recurse=False), None) is not None:
        return True
    has_buffers = next(module.buffers(recurse=False), None) is not None
    return has_buffers and callable(getattr(module, "reset_parameters", None))


def _randomize(layer, name, seed, position):
    reset = getattr(layer, "reset_parameters", None)
    if not callable(reset):
        raise ValueError(f"layer {name!r} ({type(layer).__name__}) has no reset_parameters(); "
                         f"leave it out with layers=[...]")
    state = np.random.SeedSequence([seed, position]).generate_state(2)
    # manual_seed seeds every CUDA device too: restore them all, not only the layer's.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        with torch.no_grad():
            reset()


def _explain(explain, model, images, when, expected=None):
    maps = explain(model, images)
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"explain must return a floating-point tensor; at {when} it returned "
                        f"{getattr(maps, 'dtype', type(maps).__name__)}")
    count, channels, height, width = images.shape
    if (maps.ndim != 4 or maps.shape[0] != count or maps.shape[1] not in (1, channels)
            or tuple(maps.shape[-2:]) != (height, width)):
        raise ValueError(f"explain must return N x K x H x W maps with N = {count}, K = 1 or "
                         f"{channels} and H x W = {height} x {width} (the images' size); at "
                         f"{when} it returned shape {tuple(maps.shape)}")
    if expected is not None and maps.shape != expected:
        raise ValueError(f"explain returned shape {tuple(maps.shape)} at {when} but "
                         f"{tuple(expected)} for the intact model")
    if not torch.isfinite(maps).all():
        raise ValueError(f"explain returned NaN or infinite values at {when}")
    return maps.detach().cpu()


def _layer_groups(model, executed, layers):
    """``{step name: its parameterised layers}``, ordered by each step's last-executed layer."""
    if layers is None:
        return {name: [name] for name in executed}
    steps = layers if isinstance(layers, dict) else {name: [name] for name in
                                                      ([] if isinstance(layers, str) else layers)}
    if isinstance(layers, str) or not all(
            isinstance(label, str) and not isinstance(parts, str) and parts
            and all(isinstance(part, str) for part in parts) for label, parts in steps.items()):
        raise TypeError(f"layers must be a list of module names, a dict of step names to "
                        f"lists of module names, or None; got {layers!r}")
    if not steps:
        raise ValueError("layers must name at least one module (None: every parameterised "
                         "layer)")
    names = {name for name, _ in model.named_modules()}
    groups, taken = {}, {}
    for label, parts in steps.items():
        members = []
        for name in dict.fromkeys(parts):
            inside = [layer for layer in executed
                      if layer == name or layer.startswith(name + ".")]
            if not inside:
                why = ("no parameterised layer inside it runs in the forward pass"
                       if name in names else "the model has no such module")
                raise ValueError(f"cannot randomise {name!r}: {why}; parameterised layers in "
                                 f"execution order: {', '.join(executed)}")
            members += inside
        for member in members:
            if member in taken:
                raise ValueError(f"layers {taken[member]!r} and {label!r} overlap (both hold "
                                 f"{member!r}); name each layer once")
            taken[member] = label
        groups[label] = sorted(set(members), key=executed.index)
    return dict(sorted(groups.items(), key=lambda item: executed.index(item[1][-1])))


def _check_model(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if model.training:
        raise ValueError("the model is in training mode (dropout and batch statistics would "
                         "change the maps between steps); call model.eval() first")


def _check_result(result, name="result"):
    if not isinstance(result, RandomizationResult):
        raise TypeError(f"{name} must be a RandomizationResult; got {type(result).__name__}")


