"""The figures of the diabetes chapters, drawn on axes the chapter creates.

Each function draws one panel and returns what a caller may want to decorate further (the
image of a heatmap for its colour bar); titles, sizes and layout stay in the chapter.
"""
import numpy as np

from .stats import METRIC_LABELS


def index_bars(ax, summary, order, keys=("S1", "ST"),
               colors=("tab:blue", "tab:orange")) -> None:
    """Mean indices per input as bars, side by side per key, with the spread over models.

    ``summary``: ``importance.indices_over_models``'s table (or any with columns
    ``(key, "mean" | "low" | "high")``); ``order``: the inputs from left to right. The
    error bars span ``low`` to ``high`` (clipped at the mean when an interval misses it).
    """
    summary = summary.loc[order]
    positions = np.arange(len(order))
    width = 0.8 / len(keys)
    for number, (key, color) in enumerate(zip(keys, colors)):
        shift = (number - (len(keys) - 1) / 2) * width
        mean = summary[(key, "mean")]
        spread = np.stack([mean - summary[(key, "low")], summary[(key, "high")] - mean])
        ax.bar(positions + shift, mean, width=width, color=color, label=key,
               yerr=np.clip(spread, 0, None), capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(positions, order, rotation=45, ha="right")


def annotated_heatmap(ax, values, labels, *, fmt: str = ".2f", fontsize: float = 7,
                      text_color=None, **imshow):
    """A square matrix as an image with its values written in the cells (NaN left blank).

    ``values`` (D, D), ``labels`` the D names of rows and columns; ``imshow`` keywords go to
    ``ax.imshow`` (colour map, limits). Returns the image, for a colour bar.
    """
    values = np.asarray(values, dtype=float)
    image = ax.imshow(values, **imshow)
    style = {} if text_color is None else {"color": text_color}
    for i, j in zip(*np.where(~np.isnan(values))):
        ax.text(j, i, f"{values[i, j]:{fmt}}", ha="center", va="center",
                fontsize=fontsize, **style)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    return image


def reduction_curves(ax, summary, metric: str, styles: dict) -> None:
    """Mean ``metric`` against k with its corrected interval, one line per ordering.

    ``summary``: ``reduction.reduction_summary``'s table (index ordering, k); ``styles``:
    ``{ordering: colour}``, the orderings drawn and their colours.
    """
    for ordering, color in styles.items():
        part = summary.loc[ordering].sort_index()
        ax.plot(part.index, part[(metric, "mean")], "o-", color=color, label=ordering,
                ms=4)
        ax.fill_between(part.index, part[(metric, "low")], part[(metric, "high")],
                        color=color, alpha=0.15)
    ax.set_xlabel("k (inputs kept)")
    ax.set_ylabel(METRIC_LABELS[metric])


def convergence_lines(ax, study, key: str = "ST", order=None) -> None:
    """One line per input: its ``key`` index against N, with the bootstrap half-width as a
    band. ``study``: ``folds.index_convergence``'s table; ``order``: the inputs drawn."""
    part = study[study["index"] == key]
    for name in (list(order) if order is not None else list(part["input"].unique())):
        rows = part[part["input"] == name].sort_values("N")
        line, = ax.plot(rows["N"], rows["value"], "o-", ms=3, lw=1, label=name)
        ax.fill_between(rows["N"], rows["value"] - rows["conf"],
                        rows["value"] + rows["conf"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (base samples)")
    ax.set_ylabel(key)
