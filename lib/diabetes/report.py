"""The tables of the diabetes chapters: results of the analysis reshaped into readable cells.

Each function takes what ``importance``, ``stats`` or ``reduction`` return and gives a pandas
DataFrame (or a short list) in the shape the chapter shows, so that the chapter's cells hold
the computation, not the reshaping.
"""
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .stats import METRIC_LABELS, interval_table


def index_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """S1 and ST of ``importance.indices_over_models`` as text cells, one row per input.

    Columns ``S1``, ``ST``: "mean [low, high]" over the models; ``S1 ± (bootstrap)``,
    ``ST ± (bootstrap)``: the mean bootstrap half-width, rounded to ``digits``.
    """
    cells = interval_table(summary, names=("S1", "ST"), digits=digits)
    for key in ("S1", "ST"):
        cells[f"{key} ± (bootstrap)"] = summary[(key, "conf")].round(digits)
    return cells[["S1", "S1 ± (bootstrap)", "ST", "ST ± (bootstrap)"]]


def mean_pairs(result, names=None) -> pd.DataFrame:
    """The second-order indices of a multi-output Sobol result averaged over its outputs.

    A (D, D) DataFrame indexed and labelled by the inputs, pairs i < j above the diagonal,
    NaN elsewhere (as ``sobol.analyze`` lays out ``S2``).
    """
    if "S2" not in result:
        raise ValueError("the result holds no second-order indices (S2); analyse a design "
                         "sampled with calc_second_order=True")
    names = list(result.names if names is None else names)
    values = result["S2"].reshape(len(names), len(names), -1).mean(-1).cpu().numpy()
    return pd.DataFrame(values, index=names, columns=names)


def largest_pair(pairs: pd.DataFrame) -> tuple:
    """(("input a", "input b"), value) of the largest entry of ``mean_pairs``'s table."""
    stacked = pairs.stack()
    return stacked.idxmax(), float(stacked.max())


def strongest_correlations(correlation: pd.DataFrame, count: int = 3) -> list:
    """The ``count`` pairs of a correlation matrix with the largest |correlation|.

    A list of ((a, b), rho), pairs above the diagonal, strongest first.
    """
    upper = np.triu(np.ones(correlation.shape, dtype=bool), k=1)
    pairs = correlation.where(upper).stack()
    strongest = pairs.abs().sort_values(ascending=False).index[:count]
    return [(pair, float(pairs[pair])) for pair in strongest]


def agreement_table(measures: pd.DataFrame, reference: str, digits: int = 3) -> tuple:
    """Importance measures side by side, with ranks and their agreement with ``reference``.

    ``measures``: one row per input, one column per measure (larger = more important).
    Returns (table, rho): the table's cells read "value (rank)", rows ordered by the
    ``reference`` column, and a last row with the Spearman rank correlation of every other
    column with the reference; ``rho`` maps each other column to that correlation.
    """
    if reference not in measures.columns:
        raise ValueError(f"unknown reference {reference!r}; the measures are "
                         f"{list(measures.columns)}")
    rho = {column: float(spearmanr(measures[reference], measures[column]).statistic)
           for column in measures.columns if column != reference}
    ranks = measures.rank(ascending=False).astype(int)
    order = measures[reference].sort_values(ascending=False).index
    cells = measures.round(digits).astype(str) + " (" + ranks.astype(str) + ")"
    table = cells.loc[order]
    table.loc[f"Spearman ρ with {reference}"] = [
        "" if column == reference else f"{rho[column]:.2f}" for column in measures.columns]
    return table, rho


def seed_table(rankings: dict) -> pd.DataFrame:
    """``{seed: inputs, most important first}`` -> one column per seed, one row per rank."""
    lengths = {len(order) for order in rankings.values()}
    if len(lengths) != 1:
        raise ValueError(f"every ranking must order the same number of inputs; got lengths "
                         f"{sorted(lengths)}")
    table = pd.DataFrame(rankings, index=pd.RangeIndex(1, lengths.pop() + 1, name="rank"))
    table.columns.name = "seed"
    return table


def stable_prefix(table: pd.DataFrame) -> int:
    """How many leading ranks of ``seed_table``'s table hold the same input in every column."""
    stable = 0
    while stable < len(table) and table.iloc[stable].nunique() == 1:
        stable += 1
    return stable


def reduction_table(tests: pd.DataFrame, summary: pd.DataFrame,
                    ordering: str = "Sobol ST") -> pd.DataFrame:
    """``reduction.reduction_tests`` with the metrics as "mean [low, high]" cells.

    The corrected intervals come from ``reduction.reduction_summary`` for ``ordering``;
    p-values are rounded to 3 digits and the columns named for the reader.
    """
    shown = tests.copy()
    for name in ("accuracy", "roc_auc"):
        shown[name] = interval_table(summary.loc[ordering], names=[name])[name]
        shown[f"p ({name})"] = shown[f"p ({name})"].round(3)
    return shown.rename(columns={"roc_auc": "ROC AUC", "p (roc_auc)": "p (ROC AUC)",
                                 "loss (roc_auc)": "loss (ROC AUC)"})


def _p_text(p: float, digits: int = 3) -> str:
    """A p-value as text: rounded to ``digits``, or "< 0.001" (for 3 digits) below that."""
    smallest = 10 ** -digits
    return f"< {smallest:.{digits}f}" if p < smallest else f"{p:.{digits}f}"


def equivalence_table(tests: dict, digits: int = 3) -> pd.DataFrame:
    """``{metric: stats.EquivalenceTest}`` as one row per metric: the mean difference, its
    (1 - 2 alpha) interval, the margin, the TOST p-value and the verdict."""
    rows = {}
    for name, test in tests.items():
        level = round(100 * (1 - 2 * test.alpha))
        rows[METRIC_LABELS.get(name, name)] = {
            "difference": round(test.difference, digits),
            f"{level} % CI": f"[{test.low:.{digits}f}, {test.high:.{digits}f}]",
            "margin": f"±{test.margin:g}", "p (TOST)": _p_text(test.p, digits),
            "verdict": test.verdict}
    return pd.DataFrame.from_dict(rows, orient="index")
