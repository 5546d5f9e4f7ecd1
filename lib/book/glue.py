"""Numbers for a chapter's prose: every result reaches ``{glue:text}`` through one call.

``glue_all(n_images=113, accuracy=0.7081, digits=3)`` glues each value under its name, with
numbers formatted in one way: a float (NumPy and torch scalars included) is rounded to
``digits`` decimals, an int stays an int, text stays text. Call it in a cell tagged
``remove-cell``: it still runs and nbval still checks its outputs, but the page shows the
computation, not the bookkeeping.
"""
import numbers

from myst_nb import glue


def formatted(value, digits: int = 3):
    """``value`` as the prose shows it: floats rounded, 0-d tensors and arrays unpacked."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return round(float(value), digits)
    return value


def glue_all(values: dict | None = None, /, *, digits: int = 3, **named) -> None:
    """Glue every entry of ``values`` and of the keyword arguments, not displayed here."""
    for name, value in {**(values or {}), **named}.items():
        glue(name, formatted(value, digits), display=False)
