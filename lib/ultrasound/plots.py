"""Figures of images beside their explanation maps (sensitivity, gradient, Grad-CAM, ...)."""
import matplotlib.pyplot as plt
import numpy as np
import torch

SHARES = ("panel", "row")


def show_maps(images, maps, *, masks=None, row_labels=None, share="panel", cmap="RdBu_r",
              panel_size=1.7):
    """A grid with one row per image: the image, then one panel per map.

    Args:
        images: ``N x C x H x W`` tensor in [0, 1], gray (``C = 1``) or RGB (``C = 3``).
        maps: dict ``column title -> N x 1 x H x W`` (or ``N x H x W``) signed maps.
        masks: optional ``N x 1 x H x W`` lesion masks, drawn as a yellow contour on the image.
        row_labels: optional label per row, shown left of the image.
        share: ``"panel"`` scales each map to its own largest absolute value (patterns are
            comparable, magnitudes are not); ``"row"`` uses one scale along each row.
        cmap: a diverging colour map; it is centred at zero, so the colour shows the sign.

    The largest absolute value of every map is printed in its corner. Returns the figure.
    """
    if share not in SHARES:
        raise ValueError(f"share must be one of {', '.join(map(repr, SHARES))}; got {share!r}")
    images = _as_numpy(images)
    maps = {title: _as_numpy(values).reshape(len(images), *images.shape[-2:])
            for title, values in maps.items()}
    rows, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols, panel_size * rows),
                             squeeze=False)
    for row in range(rows):
        _show_image(axes[row, 0], images[row], None if masks is None else _as_numpy(masks)[row])
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=8)
        row_scale = max(np.abs(values[row]).max() for values in maps.values())
        for col, values in enumerate(maps.values(), start=1):
            scale = row_scale if share == "row" else np.abs(values[row]).max()
            _show_map(axes[row, col], values[row], scale, cmap)
    for col, title in enumerate(["image", *maps], start=0):
        axes[0, col].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def _show_image(ax, image, mask):
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
    if mask is not None and mask.any():
        ax.contour(mask.reshape(image.shape[-2:]), levels=[0.5], colors="yellow", linewidths=0.8)
    _bare(ax)


def _show_map(ax, values, scale, cmap):
    scale = scale if scale > 0 else 1.0  # an all-zero map is drawn white
    ax.imshow(values, cmap=cmap, vmin=-scale, vmax=scale)
    ax.text(0.02, 0.02, f"{np.abs(values).max():.2g}", transform=ax.transAxes, fontsize=6,
            color="black", backgroundcolor=(1, 1, 1, 0.6))
    _bare(ax)


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def _as_numpy(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=np.float32)


def show_images(images, *, titles=None, row_labels=None, ncols=None, panel_size=1.6,
                stretch=False):
    """A grid of images (e.g. activation-maximisation results), gray or RGB.

    Args:
        images: ``N x C x H x W`` tensor in [0, 1], ``C`` = 1 (gray) or 3 (RGB).
        titles: optional title per image.
        row_labels: optional label per grid row, shown left of its first image.
        ncols: images per row (default: all in one row).
        stretch: ``False`` shows the values as they are (0 black, 1 white); ``True`` stretches
            each image to its own range, to see faint patterns (the figure should say so).

    Returns the figure.
    """
    pixels = _as_numpy(images)
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(f"images must be N x 1 x H x W or N x 3 x H x W; got {pixels.shape}")
    count = len(pixels)
    ncols = count if ncols is None else ncols
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows),
                             squeeze=False)
    for index, ax in enumerate(axes.flat):
        _bare(ax)
        if index >= count:
            ax.set_axis_off()
            continue
        image = pixels[index]
        if stretch:
            low, high = image.min(), image.max()
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        _show_image(ax, image, None)
        if titles is not None:
            ax.set_title(titles[index], fontsize=8)
    if row_labels is not None:
        for row, label in enumerate(row_labels):
            axes[row, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def show_explanations(images, maps, *, masks=None, row_labels=None, cmap="inferno",
                      panel_size=1.7):
    """A grid with one row per image: the image, then one panel per non-negative map.

    Args:
        images: ``N x 1 x H x W`` (gray) or ``N x 3 x H x W`` tensor in [0, 1].
        maps: dict ``column title -> N x 1 x H x W`` non-negative maps (larger = more
            important), e.g. ``lib.ultrasound.compare.MapSet.maps``.
        masks: optional ``N x 1 x H x W`` lesion masks, outlined on the image (yellow) and on
            every map (cyan).
        row_labels: optional label per row, shown left of the image.
        cmap: a sequential colour map; each map is scaled from 0 to its own maximum, since
            the methods' units differ.

    Returns the figure.
    """
    images = _as_numpy(images)
    maps = {title: _as_numpy(values).reshape(len(images), *images.shape[-2:])
            for title, values in maps.items()}
    if any((values < 0).any() for values in maps.values()):
        raise ValueError("show_explanations draws non-negative maps; pass magnitudes "
                         "(e.g. maps.abs()) or use show_maps for signed ones")
    outlines = None if masks is None else _as_numpy(masks).reshape(len(images),
                                                                    *images.shape[-2:])
    cols = 1 + len(maps)
    fig, axes = plt.subplots(len(images), cols, figsize=(panel_size * cols,
                                                         panel_size * len(images)),
                             squeeze=False)
    for row in range(len(images)):
        mask = None if outlines is None else outlines[row]
        _show_image(axes[row, 0], images[row], mask)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=8)
        for col, values in enumerate(maps.values(), start=1):
            peak = values[row].max()
            axes[row, col].imshow(values[row], cmap=cmap, vmin=0, vmax=peak if peak > 0 else 1)
            if mask is not None and mask.any():
                axes[row, col].contour(mask, levels=[0.5], colors="cyan", linewidths=0.7)
            _bare(axes[row, col])
    for col, title in enumerate(["image", *maps]):
        axes[0, col].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def plot_curves(curves, *, titles=None, panel_size=(3.6, 2.6)):
    """Mean deletion and insertion curves of several methods: a row per group, a column per
    mode.

    Args:
        curves: ``{row label: {method: {mode: lib.kernels.metrics.Curves}}}``, e.g. one row per
            network with the curves of ``lib.ultrasound.compare.score_maps``; each curve is averaged over
            its images.
        titles: optional ``{method: legend label}``.

    Returns the figure.
    """
    modes = list(dict.fromkeys(mode for per_method in curves.values()
                               for per_mode in per_method.values() for mode in per_mode))
    fig, axes = plt.subplots(len(curves), len(modes), figsize=(panel_size[0] * len(modes),
                                                               panel_size[1] * len(curves)),
                             squeeze=False)
    for row, (label, per_method) in enumerate(curves.items()):
        for ax, mode in zip(axes[row], modes):
            for method, per_mode in per_method.items():
                curve = per_mode[mode]
                ax.plot(_as_numpy(curve.fractions), _as_numpy(curve.scores).mean(axis=0),
                        marker=".", label=(titles or {}).get(method, method))
            ax.set_xlabel("share of pixels " + ("removed" if mode == "deletion" else "restored"))
            ax.set_ylabel(f"mean class {curve.output}")
            ax.set_title(f"{label}: {mode}, baseline {curve.baseline}", fontsize=9)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def show_predictions(images, labels, probs, picked, *, classes, count):
    """The picked test images of several networks: per network a row of correct and a row of
    wrong predictions, each titled with the true class, the predicted one and its probability.

    Args:
        images: ``{network: N x 1 x H x W}`` gray images in [0, 1], the same images in the
            same order for every network (sizes may differ).
        labels: ``N`` true classes; ``probs``: ``{network: N x K}`` class probabilities.
        picked: ``{network: {"correct": [indices], "wrong": [indices]}}``, e.g. from
            ``lib.ultrasound.compare.pick_examples``; at most ``count`` of each.
        classes: the class names, in the order of ``probs``' columns.

    Returns the figure.
    """
    fig, axes = plt.subplots(2 * len(images), count,
                             figsize=(1.9 * count, 4.2 * len(images)), squeeze=False)
    for block, name in enumerate(images):
        confidence, predicted = probs[name].max(dim=1)
        for offset, outcome in enumerate(("correct", "wrong")):
            row = axes[2 * block + offset]
            for ax in row:
                ax.axis("off")
            for ax, index in zip(row, picked[name][outcome]):
                ax.imshow(images[name][index, 0], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name}, {outcome}\n"
                             f"true {classes[labels[index]]}\n"
                             f"pred {classes[predicted[index]]} {confidence[index]:.2f}",
                             fontsize=8)
    fig.tight_layout()
    return fig


def show_confusion(matrices, classes):
    """Confusion matrices side by side (rows true classes, columns predicted ones), shaded by
    the share of each row; each cell shows the count and that share.

    Args:
        matrices: ``{title: K x K}`` integer tensors of counts.
        classes: the ``K`` class names.

    Returns the figure.
    """
    fig, axes = plt.subplots(1, len(matrices), figsize=(9, 3.6), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        shares = matrix / matrix.sum(dim=1, keepdim=True)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(matrix.numpy()):
            ax.text(col, row, f"{count}\n{shares[row, col]:.0%}", ha="center", va="center",
                    color="white" if shares[row, col] > 0.6 else "black", fontsize=9)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_step_sweep(sweep, colours):
    """How finite-difference maps depend on the step (``lib.ultrasound.local_maps``).

    Args:
        sweep: a DataFrame with the rows of ``local_maps.step_sweep`` and a ``network``
            column: ``delta``, ``scheme`` (forward or central), ``relative distance to the
            gradient`` and ``largest |s|``.
        colours: ``{network: colour}``.

    Left, the distance to the gradient against the step, solid for one-sided and dashed for
    central differences; right, the largest one-sided sensitivity with the 1/δ decline
    (dotted) of a score that stops changing. Returns the figure.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for (network, scheme), rows in sweep.groupby(["network", "scheme"]):
        style = "-" if scheme == "forward" else "--"
        axes[0].loglog(rows["delta"], rows["relative distance to the gradient"], style,
                       marker="o", color=colours[network], label=f"{network}, {scheme}")
        if scheme == "forward":
            axes[1].loglog(rows["delta"], rows["largest |s|"], marker="o",
                           color=colours[network], label=network)
            tail, steps = rows.iloc[-1], rows["delta"].to_numpy()
            axes[1].loglog(steps, tail["largest |s|"] * tail["delta"] / steps, ":",
                           color="gray")
    for ax, label in zip(axes, ("relative distance to the gradient", "largest |s|")):
        ax.set_xlabel("δ")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def show_sobol_maps(images, result, *, masks=None, row_labels=None, count=None):
    """Sobol maps of image regions beside their images, one colour scale per row.

    Args:
        images: ``N x C x H x W`` in [0, 1]; ``masks``: optional lesion masks.
        result: a ``lib.kernels.sobol_images.SobolMaps`` of the images.
        row_labels: optional label per shown row; ``count``: the first images shown (all by
            default).

    Columns: the first-order index S1, the total index ST, their difference (the share of
    variance from interactions) and the half-width of ST's interval. Returns the figure.
    """
    shown = slice(count)
    size = images.shape[-2:]
    first, total = result.to_image("S1", size), result.to_image("ST", size)
    panels = {"S1": first[shown], "ST": total[shown], "ST − S1": (total - first)[shown],
              "ST interval ±": result.to_image("ST_conf", size)[shown]}
    return show_maps(images[shown], panels, row_labels=row_labels, share="row",
                     masks=None if masks is None else masks[shown])


def plot_randomisation(summaries, *, titles=None, measures=("spearman", "ssim"),
                       panel_size=(3.6, 2.6)):
    """Similarity to the intact network's maps against the randomisation steps: a row per
    network, a column per measure, a line per method with its bootstrap band.

    ``summaries``: ``{network: {method: lib.kernels.sanity.summary(result)}}``. Returns the
    figure.
    """
    fig, axes = plt.subplots(len(summaries), len(measures),
                             figsize=(panel_size[0] * len(measures),
                                      panel_size[1] * len(summaries)), squeeze=False)
    for row, (network, per_method) in enumerate(summaries.items()):
        for ax, measure in zip(axes[row], measures):
            for method, table in per_method.items():
                part = table[table["similarity"] == measure].sort_values("step")
                line, = ax.plot(part["step"], part["mean"], marker=".",
                                label=(titles or {}).get(method, method))
                ax.fill_between(part["step"], part["ci_low"], part["ci_high"], alpha=0.15,
                                color=line.get_color())
            ax.set_xticks(part["step"], part["layer"], rotation=45, ha="right", fontsize=7)
            ax.set_ylabel(measure)
            ax.set_ylim(-0.2 if measure == "spearman" else 0, 1.05)
            ax.set_title(f"{network}: {measure}", fontsize=9)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_convergence(table, *, panel_size=(3.6, 2.6)):
    """A ``sobol_diagnostics.convergence_table`` against N: the mean absolute difference
    from the largest N (left), the rank correlation with it and the mean half-width
    (right). Returns the figure."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(2 * panel_size[0], panel_size[1]))
    sizes = table.index.to_numpy()
    left.plot(sizes, table["mean |difference| from the largest N"], marker=".")
    left.set_ylabel("mean |difference| of ST")
    right.plot(sizes, table["rank correlation with the largest N"], marker=".",
               label="rank correlation")
    right.plot(sizes, table["mean CI half-width"], marker=".", label="CI half-width")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (base samples)")
    fig.tight_layout()
    return fig
