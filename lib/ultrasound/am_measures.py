"""Numbers about activation-maximisation images (:mod:`lib.kernels.am`): does a pattern
survive random transformations, and how rough is it? Whether it convinces another network is
:mod:`lib.ultrasound.am_transfer`."""
import torch

from ..kernels import am


def transformed_values(model, result, transforms, *, draws: int = 8, seed: int = 0):
    """Each target's mean value over ``draws`` random ``transforms`` of its final image.

    ``result`` is an ``AMResult``; the draws come from a generator seeded with ``seed``.
    Returns a tensor with one value per target.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive integer; got {draws!r}")
    generator = torch.Generator().manual_seed(seed)
    values = [am.target_values(model, transforms(result.images, generator), result.targets)
              for _ in range(draws)]
    return torch.stack(values).mean(dim=0)


def mean_scores(model, result, transforms, *, draws: int = 8, seed: int = 0) -> dict:
    """Means over the targets of ``result``: the value on the final image (``"logit"``), over
    random transformations of it (``"logit, transformed"``, :func:`transformed_values`) and
    the image's total variation."""
    robust = transformed_values(model, result, transforms, draws=draws, seed=seed)
    return {"logit": result.final_values.mean().item(),
            "logit, transformed": robust.mean().item(),
            "total variation": am.total_variation(result.images).mean().item()}



def _kept(row) -> str:
    """A setting's logit under random transformations, with the share of its logit kept."""
    value = f"{row['logit, transformed']:.2f}"
    if row["logit"] <= 0:
        return f"{value} (no share: the logit is not positive)"
    return f"{value} ({100 * row['logit, transformed'] / row['logit']:.0f} % of its logit)"


def grid_story(table) -> str:
    """What a grid of :func:`mean_scores` rows says (rows ``"pixels"``, ``"pixels + L2"``,
    ``"pixels + TV"``, ``"pixels + blur"``, ``"pixels + transforms"``, ``"Fourier"``,
    ``"Fourier + transforms"``, ``"Fourier + transforms + TV"``), every comparison computed
    from the table, so that the prose states whatever a run measured."""
    logit, rough = table["logit"], table["total variation"]
    base = table.loc["pixels"]

    def compared(value, reference):
        return ("lower than" if value < reference else "higher than" if value > reference
                else "equal to")

    penalties = ["pixels + L2", "pixels + TV", "pixels + blur"]
    smoother = [name[9:] for name in penalties if rough[name] < base["total variation"]]
    cheaper = [name[9:] for name in penalties if logit[name] < base["logit"]]
    listed = ", ".join(f"{name[9:]} {rough[name]:.2f}" for name in penalties)
    choice = table.loc["Fourier + transforms + TV"]
    rank = list(rough.sort_values().index).index("Fourier + transforms + TV") + 1
    highest = "the highest of the grid" if logit.idxmax() == "Fourier" else "not the highest"
    return (
        f"Plain pixel ascent reaches a logit of {base['logit']:.2f} with a total variation "
        f"of {base['total variation']:.2f}; on shifted, zoomed and turned copies of the "
        f"image its logit is {_kept(base)}. The penalties give total variations of "
        f"{listed}: lower than plain pixels' for {_joined(smoother)}, at a lower logit for "
        f"{_joined(cheaper)}. The Fourier parameterisation alone reaches a logit of "
        f"{logit['Fourier']:.2f} ({highest}) with a total variation "
        f"{compared(rough['Fourier'], base['total variation'])} plain pixels' "
        f"({rough['Fourier']:.2f}). With random transformations during the ascent, the "
        f"logit on new transformed copies is {_kept(table.loc['Fourier + transforms'])} for "
        f"Fourier and {_kept(table.loc['pixels + transforms'])} for pixels. Adding TV to "
        f"Fourier and transformations gives {_kept(choice)}, with {_smoothest(rank)} image "
        f"of the {len(table)} settings (total variation {choice['total variation']:.2f}).")


def _joined(names) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``; ``"none of them"`` for no name."""
    names = list(names)
    if not names:
        return "none of them"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _smoothest(rank: int) -> str:
    """``"the smoothest"``, ``"the second smoothest"``, ... for a rank from 1."""
    words = {2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh"}
    return "the smoothest" if rank == 1 else f"the {words.get(rank, f'{rank}th')} smoothest"
