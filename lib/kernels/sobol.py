"""Sobol' sensitivity indices in SALib's language, for many model outputs at once, on the device.

The workflow is SALib's: a problem dict (``num_vars``, ``names``, ``bounds``, optional
``dists``), then ``sample`` -> ``evaluate`` -> ``analyze``. ``sample`` builds the same
Saltelli design as ``SALib.sample.sobol.sample`` row for row (``lib.kernels.saltelli``);
``analyze`` gives the same numbers as ``SALib.analyze.sobol.analyze`` for every output column
at once (``lib.kernels.sobol_estimators``).

Sobol' indices decompose the output variance over *independent* inputs. Correlated inputs
(e.g. the columns of a clinical data set) are sampled here from their marginals, independently;
the indices then describe the model on that independent input space, not on the data's joint
distribution.
"""
import math
import numbers
import warnings

import numpy as np
import pandas as pd
import torch

from ..hardware import device as default_device
from ..progress import progress
from .saltelli import (DISTRIBUTIONS, check_problem, problem_from_data,  # noqa: F401
                       rows_per_base_sample, sample, scale_to_inputs, unit_design)
from .sobol_estimators import (SaltelliBlocks, bootstrap_weights,  # noqa: F401
                               estimate_indices, resample_indices, split_blocks)

EVALUATE_CHUNK_ROWS = 1 << 18


def _module_dtype_and_device(model):
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if not params:
        return None, None
    return params[0].dtype, params[0].device


def _check_model_device(model_device, dev: torch.device) -> None:
    if model_device is not None and model_device.type != dev.type:
        raise ValueError(f"the model's parameters are on {model_device} but the design is "
                         f"evaluated on {dev}; move the model with model.to({str(dev)!r}) "
                         f"or pass device={str(model_device)!r}")


def _forward(model, rows, dev, dtype) -> torch.Tensor:
    chunk = torch.as_tensor(rows).to(dev, dtype)
    values = torch.as_tensor(model(chunk), device=dev)
    if values.ndim == 0 or values.shape[0] != chunk.shape[0]:
        raise ValueError(f"the model returned shape {tuple(values.shape)} for a chunk of "
                         f"{chunk.shape[0]} rows; it must return one output (or one row of "
                         f"outputs) per design row")
    return values


def _evaluate_chunks(model, X, chunk_size: int, dev, dtype, bar) -> torch.Tensor:
    """Fill the output chunk by chunk; on CUDA out-of-memory, halve the chunk and go on."""
    rows, start, out = X.shape[0], 0, None
    while start < rows:
        try:
            values = _forward(model, X[start:start + chunk_size], dev, dtype)
        except torch.cuda.OutOfMemoryError:
            if chunk_size == 1:
                raise
            chunk_size //= 2
            torch.cuda.empty_cache()
            warnings.warn(f"out of GPU memory; evaluating in chunks of {chunk_size} rows")
            continue
        if out is None:
            out = torch.empty((rows,) + tuple(values.shape[1:]), dtype=values.dtype, device=dev)
        out[start:start + values.shape[0]] = values
        start += values.shape[0]
        bar.update(values.shape[0])
    return out


@torch.no_grad()
def evaluate(model, X, *, chunk_size: int | None = None, device=None, dtype=None,
             show_progress: bool | None = None) -> torch.Tensor:
    """Run ``model`` on every row of the design ``X``, in chunks, on the device.

    ``model`` is a torch module (run in eval mode, its previous mode restored) or a vectorised
    function of a (rows, D) tensor. ``X`` is a NumPy array or a tensor; its rows are moved to
    ``device`` (default ``lib.device()``) one chunk at a time and cast to ``dtype`` (default:
    the module's parameter dtype, else float64). Returns a tensor on ``device`` of shape
    (rows,) or (rows, K...), as the model returns per row, in the model's output dtype.

    ``chunk_size`` rows go through the model at once (default 262144); on a CUDA out-of-memory
    error the chunk is halved and evaluation goes on. A progress bar appears once the run has
    taken ``lib.progress.LONG_RUN_SECONDS`` (``show_progress`` forces it on or off).
    """
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a (rows, D) design with at least one row, got shape "
                         f"{tuple(X.shape)}")
    chunk_size = EVALUATE_CHUNK_ROWS if chunk_size is None else chunk_size
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    dev = torch.device(device) if device is not None else default_device()
    module_dtype, module_device = _module_dtype_and_device(model)
    _check_model_device(module_device, dev)
    bar = progress(total=X.shape[0], desc="evaluate", unit="row", leave=False,
                   show=show_progress)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        return _evaluate_chunks(model, X, int(chunk_size), dev,
                                dtype or module_dtype or torch.float64, bar)
    finally:
        bar.close()
        if isinstance(model, torch.nn.Module):
            model.train(was_training)


# --------------------------------------------------------------------------------- analyze

def _check_output_rows(Y: torch.Tensor, D: int, calc_second_order: bool) -> int:
    """N from the length of Y, or a ValueError saying which lengths the design allows."""
    step = rows_per_base_sample(D, calc_second_order)
    rows = Y.shape[0]
    if rows % step == 0 and rows >= step:
        return rows // step
    below = rows // step
    hint = ""
    other = rows_per_base_sample(D, not calc_second_order)
    if rows % other == 0:
        hint = (f" It is a multiple of {other}: was the design sampled with "
                f"calc_second_order={not calc_second_order}?")
    raise ValueError(
        f"Y has {rows} rows, but a Saltelli design with D={D} inputs and calc_second_order="
        f"{calc_second_order} has N*{step} rows (N*(2D+2) with second order, N*(D+2) "
        f"without); the nearest valid lengths are {below * step} (N={below}) and "
        f"{(below + 1) * step} (N={below + 1}).{hint}")


def _check_finite(Y: torch.Tensor) -> None:
    if torch.isfinite(Y).all():
        return
    bad = ~torch.isfinite(Y.reshape(Y.shape[0], -1)).all(dim=1)
    rows = torch.nonzero(bad).flatten().tolist()
    raise ValueError(f"Y has NaN or inf in {len(rows)} row(s): {rows[:10]}"
                     f"{' ...' if len(rows) > 10 else ''}; every design row needs a finite "
                     f"output (dropping rows would break the Saltelli blocks)")


def _as_output_tensor(Y) -> torch.Tensor:
    if isinstance(Y, torch.Tensor):
        tensor = Y
    else:
        array = np.asarray(Y)
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise TypeError(f"Y must hold real numbers, got dtype {array.dtype}")
        tensor = torch.as_tensor(array, device=default_device())
    if tensor.ndim == 0:
        raise ValueError("Y must have one row per design row, got a scalar")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"Y must hold real numbers, got dtype {tensor.dtype}")
    return tensor


def _output_names(out_shape: tuple, output_names) -> list:
    K = math.prod(out_shape)
    if output_names is None:
        if not out_shape:
            return ["y"]
        return [f"y{'_'.join(map(str, i))}" for i in np.ndindex(*out_shape)]
    names = list(output_names)
    if len(names) != K:
        raise ValueError(f"output_names has {len(names)} names but Y has {K} outputs per row")
    return names


def analyze(problem, Y, calc_second_order: bool = True, num_resamples: int = 100,
            conf_level: float = 0.95, seed=None, *, output_names=None,
            chunk_size: int | None = None) -> "SobolResult":
    """Sobol' indices of every output column of ``Y``, equal to ``SALib.analyze.sobol.analyze``.

    ``Y`` (NumPy array or tensor) holds the model outputs in the row order of ``sample``:
    shape (rows,) for one output, or (rows, K...) for several, each analysed as SALib would
    analyse it alone. With the same ``seed`` (an int or Generator), the bootstrap uses SALib's
    resamples, so ``S1``, ``ST``, ``S2`` and their ``*_conf`` agree with SALib to rounding;
    ``seed=None`` draws from NumPy's global generator as SALib does (SALib also treats
    ``seed=0`` that way; here 0 is an ordinary seed). Indices assume independent inputs.

    Returns a ``SobolResult``: a dict of float64 tensors on ``Y``'s device (``lib.device()``
    for arrays), ``S1``, ``S1_conf``, ``ST``, ``ST_conf`` of shape (D, K...) and with second
    order ``S2``, ``S2_conf`` (D, D, K...), upper triangle, NaN elsewhere; ``to_df()`` and
    ``tidy()`` turn it into tables. See ``estimate_indices`` for the estimators and memory.
    """
    names = check_problem(problem)["names"]
    Y = _as_output_tensor(Y)
    _check_output_rows(Y, len(names), calc_second_order)
    _check_finite(Y)
    out_shape = tuple(Y.shape[1:])
    output_names = _output_names(out_shape, output_names)
    blocks = split_blocks(Y, len(names), calc_second_order)
    indices = estimate_indices(blocks, num_resamples=num_resamples, conf_level=conf_level,
                               seed=seed, chunk_size=chunk_size)
    return SobolResult(indices, names, output_names, out_shape)


class SobolResult(dict):
    """Sobol' indices (tensors, see ``analyze``) with the names needed to tabulate them."""

    def __init__(self, indices: dict, names: list, output_names: list, out_shape: tuple = ()):
        super().__init__(indices)
        self.names = list(names)
        self.output_names = list(output_names)
        self.out_shape = tuple(out_shape)

    def _values(self, key: str) -> np.ndarray:
        """``key`` for every output as a NumPy array (D, K) or (D, D, K)."""
        values = self[key].detach().cpu().numpy()
        leading = 2 if key.startswith("S2") else 1
        return values.reshape(values.shape[:leading] + (-1,))

    def output_index(self, output) -> int:
        """The flat position of ``output`` (an index or a name; None when there is one)."""
        if output is None:
            if len(self.output_names) > 1:
                raise ValueError(f"this result has {len(self.output_names)} outputs; choose "
                                 f"one with output=<index or name>: {self.output_names[:10]}")
            return 0
        if isinstance(output, str):
            if output not in self.output_names:
                raise ValueError(f"unknown output {output!r}; valid: {self.output_names[:10]}")
            return self.output_names.index(output)
        return int(output)

    def to_df(self, output=None) -> list:
        """SALib's tables for one output: [total (ST, ST_conf), first (S1, S1_conf), second]."""
        k = self.output_index(output)
        frames = [pd.DataFrame({key: self._values(key)[:, k] for key in keys}, index=self.names)
                  for keys in (("ST", "ST_conf"), ("S1", "S1_conf"))]
        if "S2" in self:
            first, second = np.triu_indices(len(self.names), 1)
            index = [(self.names[i], self.names[j]) for i, j in zip(first, second)]
            frames.append(pd.DataFrame({key: self._values(key)[first, second, k]
                                        for key in ("S2", "S2_conf")}, index=index))
        return frames

    def tidy(self) -> pd.DataFrame:
        """One row per output and index: output, index (S1/ST/S2), input, input_2, value, conf.

        ``input_2`` is the second input of a pair (S2), None for S1 and ST.
        """
        names = np.array(self.names, dtype=object)
        first, second = np.triu_indices(len(names), 1)
        parts = []
        for key in ("S1", "ST", "S2"):
            if key not in self:
                continue
            value, conf = self._values(key), self._values(key + "_conf")
            inputs, inputs_2 = names, np.full(len(names), None)
            if key == "S2":
                value, conf = value[first, second], conf[first, second]
                inputs, inputs_2 = names[first], names[second]
            count, K = value.shape
            parts.append(pd.DataFrame({
                "k": np.repeat(np.arange(K), count), "index": key,
                "input": np.tile(inputs, K), "input_2": np.tile(inputs_2, K),
                "value": value.T.ravel(), "conf": conf.T.ravel()}))
        table = pd.concat(parts).sort_values("k", kind="stable")
        outputs = np.array(self.output_names, dtype=object)[table.pop("k").to_numpy()]
        table.insert(0, "output", outputs)
        return table.reset_index(drop=True)
