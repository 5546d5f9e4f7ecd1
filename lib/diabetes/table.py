"""The Pima table as tensors: the raw features (NaN for a missing value) and the 0/1 labels."""
import numpy as np
import pandas as pd
import torch

from ..data import PIMA_FEATURES as FEATURES
from ..data import PIMA_TARGET as TARGET
from ..hardware import device as default_device


def _check_columns(frame: pd.DataFrame, features, target) -> None:
    expected = list(features) + [target]
    unexpected = [c for c in frame.columns if c not in expected]
    missing = [c for c in expected if c not in frame.columns]
    if unexpected or missing:
        raise ValueError(f"the table must have exactly the columns {expected}; "
                         f"unexpected: {unexpected}, missing: {missing}")


def _check_values(frame: pd.DataFrame, features, target) -> None:
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise TypeError(f"columns {non_numeric} are not numeric; every column must hold numbers")
    infinite = [f for f in features if np.isinf(frame[f].to_numpy(dtype=float)).any()]
    if infinite:
        raise ValueError(f"features {infinite} hold inf; give finite values, or NaN for "
                         f"missing ones")
    all_missing = [f for f in features if frame[f].isna().all()]
    if all_missing:
        raise ValueError(f"features {all_missing} have no observed value (all NaN); drop them "
                         f"from the table and from `features`")
    labels = frame[target]
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise ValueError(f"column {target!r} must hold the labels 0 and 1 only, "
                         f"got values {sorted(pd.unique(labels.dropna()))[:10]} "
                         f"and {int(labels.isna().sum())} NaN")
    if labels.nunique() < 2:
        raise ValueError(f"column {target!r} holds one class only; two are needed")


def table_tensors(frame, features=FEATURES, target=TARGET, device=None):
    """The features (rows, D) float32 with NaN for missing values, and the labels (rows,) int64.

    ``frame`` must be a DataFrame with exactly the columns ``features`` + ``target``, numeric,
    with finite or NaN features, no feature entirely missing, and labels 0/1 of both classes;
    anything else raises a ValueError/TypeError naming the problem.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    features = list(features)
    _check_columns(frame, features, target)
    _check_values(frame, features, target)
    dev = torch.device(device) if device is not None else default_device()
    X = torch.tensor(frame[features].to_numpy(dtype=np.float32), device=dev)
    y = torch.tensor(frame[target].to_numpy(dtype=np.int64), device=dev)
    return X, y
