"""The tables of the diabetes chapters: results of the analysis reshaped into readable cells.

Each function takes what ``importance``, ``stats`` or ``reduction`` return and gives a pandas
DataFrame (or a short list) in the shape the chapter shows, so that the chapter's cells hold
the computation, not the reshaping.
"""
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .stats import METRIC_LABELS, interval_table
from .table import FEATURES


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


def agreed_prefix(measures: pd.DataFrame) -> int:
    """The largest k such that, for every j <= k, all columns of ``measures`` (one per
    importance measure, larger = more important) have the same j leading inputs as a set."""
    orders = [list(measures[c].sort_values(ascending=False).index) for c in measures]
    k = 0
    while k < len(measures) and len({frozenset(o[:k + 1]) for o in orders}) == 1:
        k += 1
    return k


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


def _metric_cells(table: pd.DataFrame, name: str, digits: int) -> dict:
    return {(METRIC_LABELS[name], "loss"): table[f"loss ({name})"].round(digits),
            (METRIC_LABELS[name], "bound"): table[f"bound ({name})"].round(digits),
            (METRIC_LABELS[name], "p"): [p_text(p, digits) for p in table[f"p ({name})"]]}


def _kept_text(kept: str, features) -> str:
    """"a, b" as it is, or "all but c, d" when that is shorter to read."""
    names = kept.split(", ")
    dropped = [f for f in features if f not in names]
    return kept if len(names) <= len(dropped) else "all but " + ", ".join(dropped)


def sequence_table(sequence, digits: int = 3, features=FEATURES) -> pd.DataFrame:
    """A ``reduction.FixedSequence`` as the chapter shows it, one row per k in test order.

    Columns: the inputs kept, or "all but ..." the ones dropped when that is shorter (with,
    for a nested reduction, how many folds kept that set when not all did),
    per metric the mean loss against all inputs, its one-sided upper bound and the p-value,
    and the decision.
    """
    table = sequence.table
    folds = int(table["folds with it"].max())
    kept = [_kept_text(f, features) + ("" if n == folds else f" ({n} folds)")
            for f, n in zip(table["features"], table["folds with it"])]
    columns = {("", "inputs (most folds)"): kept}
    for name in sequence.margins:
        columns.update(_metric_cells(table, name, digits))
    columns[("", "decision")] = table["decision"]
    shown = pd.DataFrame(columns, index=table.index)
    shown.columns = pd.MultiIndex.from_tuples(shown.columns)
    return shown


def step_words(sequence, k: int) -> str:
    """One k of a ``FixedSequence`` in words: the inputs most folds kept, and per metric
    the mean loss, its upper bound and the p-value, e.g. "k = 2 (Glucose, BMI; accuracy:
    loss 0.009, upper bound 0.037, p = 0.010; ...)"."""
    row = sequence.table.loc[k]
    parts = [f"{METRIC_LABELS[name]}: loss {row[f'loss ({name})']:.3f}, upper bound "
             f"{row[f'bound ({name})']:.3f}, {p_phrase(row[f'p ({name})'])}"
             for name in sequence.margins]
    return f"k = {k} ({row['features']}; " + "; ".join(parts) + ")"


def sequence_comparison(sequences: dict, digits: int = 3) -> pd.DataFrame:
    """Several ``FixedSequence`` of the same ks side by side: per k and metric the mean
    loss of each, and each one's decision. ``sequences``: ``{label: FixedSequence}``."""
    columns = {}
    first = next(iter(sequences.values()))
    for name in first.margins:
        for label, sequence in sequences.items():
            columns[(f"loss of {METRIC_LABELS[name]}", label)] = \
                sequence.table[f"loss ({name})"].round(digits)
    for label, sequence in sequences.items():
        columns[("decision", label)] = sequence.table["decision"]
    shown = pd.DataFrame(columns)
    shown.columns = pd.MultiIndex.from_tuples(shown.columns)
    return shown


def rank_changes(first: pd.Series, second: pd.Series) -> pd.DataFrame:
    """Inputs whose rank (1 = largest) differs between two measures of importance.

    One row per such input: its rank under each measure and ``gain`` (how many places it
    moves up under ``second``), largest gain first; empty when the orders agree.
    """
    ranks = pd.DataFrame({first.name or "first": first.rank(ascending=False, method="min"),
                          second.name or "second": second.rank(ascending=False,
                                                               method="min")}).astype(int)
    ranks["gain"] = ranks.iloc[:, 0] - ranks.iloc[:, 1]
    return ranks[ranks["gain"] != 0].sort_values("gain", ascending=False, kind="stable")


def strongest_partner(correlation: pd.DataFrame, name: str) -> tuple:
    """(partner, rho): the other input most strongly correlated (by |rho|) with ``name``."""
    others = correlation[name].drop(name)
    partner = others.abs().idxmax()
    return partner, float(others[partner])


def shared_credit(changes: pd.DataFrame, correlation: pd.DataFrame) -> pd.DataFrame:
    """For each input that moves up in ``rank_changes``'s table: its most correlated partner.

    Columns ``partner``, ``rho`` and ``partner gain`` (how many places the partner moves up,
    0 when its rank does not change, negative when it moves down: the two traded places).
    """
    rows = {}
    for name in changes.index[changes["gain"] > 0]:
        partner, rho = strongest_partner(correlation, name)
        gain = int(changes.loc[partner, "gain"]) if partner in changes.index else 0
        rows[name] = {"partner": partner, "rho": rho, "partner gain": gain}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["partner", "rho", "partner gain"])


def convergence_check(study: pd.DataFrame, N: int, key: str = "ST") -> dict:
    """How far ``key`` at ``N`` is from its value at the largest N of ``folds.index_convergence``.

    Returns ``largest_change`` (max over inputs of |value(N) - value(N_max)|), ``largest_conf``
    (the largest bootstrap half-width at N), ``N_max`` and ``same_order`` (whether the inputs
    rank the same at N and at N_max).
    """
    part = study[study["index"] == key]
    if N not in set(part["N"]):
        raise ValueError(f"N = {N} is not among the sizes of the study: {sorted(set(part['N']))}")
    N_max = int(part["N"].max())
    at = part[part["N"] == N].set_index("input")
    last = part[part["N"] == N_max].set_index("input").loc[at.index]
    order = list(at["value"].sort_values(ascending=False).index)
    return {"largest_change": float((at["value"] - last["value"]).abs().max()),
            "largest_conf": float(at["conf"].max()), "N_max": N_max,
            "same_order": order == list(last["value"].sort_values(ascending=False).index)}


def p_text(p: float, digits: int = 3) -> str:
    """A p-value as text: rounded to ``digits``, or "< 0.001" (for 3 digits) below that."""
    smallest = 10 ** -digits
    return f"< {smallest:.{digits}f}" if p < smallest else f"{p:.{digits}f}"


def p_phrase(p: float, digits: int = 3) -> str:
    """"p = 0.034", or "p < 0.001" (for 3 digits) when p rounds to 0, for the prose."""
    text = p_text(p, digits)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def equivalence_table(tests: dict, digits: int = 3) -> pd.DataFrame:
    """``{metric: stats.EquivalenceTest}`` as one row per metric: the mean difference, its
    (1 - 2 alpha) interval, the margin, the TOST p-value and the verdict."""
    rows = {}
    for name, test in tests.items():
        level = round(100 * (1 - 2 * test.alpha))
        rows[METRIC_LABELS.get(name, name)] = {
            "difference": round(test.difference, digits),
            f"{level} % CI": f"[{test.low:.{digits}f}, {test.high:.{digits}f}]",
            "margin": f"±{test.margin:g}", "p (TOST)": p_text(test.p, digits),
            "verdict": test.verdict}
    return pd.DataFrame.from_dict(rows, orient="index")
