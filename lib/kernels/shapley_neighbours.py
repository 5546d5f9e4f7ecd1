"""The neighbourhood terms of the given-data Shapley estimator, for one block of rows.

For every subset u of the inputs, ``visit_subsets`` builds the squared distances between rows
in the coordinates u; ``_subset_terms`` finds each centre's nearest rows and returns the sum
of the neighbourhood variances of Y and each row's share of them (its influence, for the
bootstrap). Neighbourhoods whose last neighbour ties with other rows get the exact
expectation over the draws of the tied rows (``_tie_terms``). See ``lib.kernels.shapley_given``.
"""
import math

import torch


def _visit_subsets(delta: torch.Tensor, process) -> None:
    """``process(u, D2)`` for every subset u but the empty and the full one, D2 the sum of
    ``delta[j]`` over j in u, depth-first so that each D2 costs one addition (into one buffer
    per subset size).

    The sum always runs over u's inputs in increasing order, so rows with equal coordinates
    in u get bit-for-bit equal distances: ties stay ties.
    """
    d = delta.shape[0]
    full = (1 << d) - 1
    buffers = torch.empty((max(d - 2, 0),) + tuple(delta.shape[1:]), dtype=delta.dtype,
                          device=delta.device)

    def visit(parent: int, partial, start: int, size: int) -> None:
        for j in range(start, d):
            u = parent | 1 << j
            if u == full:
                continue
            total = delta[j] if partial is None else \
                torch.add(partial, delta[j], out=buffers[size - 1])
            process(u, total)
            visit(u, total, j + 1, size + 1)
    visit(0, None, 0, 0)

def _clear_terms(Y, index, weight, k: int) -> tuple:
    """Neighbourhoods of exactly k rows: (sum of local variances (outputs,), shares (outputs,
    n)). ``Y`` (outputs, n); ``index`` (groups, centres, k) with groups = 1 or outputs;
    ``weight`` (groups, centres) 1 for a centre in use, else 0."""
    outputs, centres = Y.shape[0], index.shape[1]
    flat = index.reshape(index.shape[0], -1).expand(outputs, -1)
    values = Y.gather(1, flat).reshape(outputs, centres, k)
    spread = (values - values.mean(-1, keepdim=True)) ** 2
    biased = spread.mean(-1, keepdim=True)
    local = biased[..., 0] * (k / (k - 1)) * weight  # unbiased variance of each neighbourhood
    # Each member's share: half of every squared difference it is in, / (k (k - 1)); the
    # shares of a neighbourhood sum to its variance.
    share = (spread + biased) / (2 * (k - 1)) * weight[..., None]
    psi = torch.zeros_like(Y).scatter_add_(1, flat, share.reshape(outputs, -1))
    return local.sum(-1), psi

def _tie_terms(n_near, s1_near, s2_near, n_within, s1_within, s2_within, k: int) -> tuple:
    """Expected variance and shares of neighbourhoods whose k-th nearest row ties with others.

    The neighbourhood holds the rows F strictly nearer than the k-th (the centre among them)
    and t = k - |F| of the rows T tied with it. Instead of drawing those at random, the local
    variance and the shares are their expectation over all equally likely draws: the
    variance is the mean of (Y_a - Y_b)^2 / 2 over the neighbourhood's pairs, and a pair
    (f, r) or (r, r') with tied r, r' is drawn with probability t / |T| or
    t (t - 1) / (|T| (|T| - 1)). With t = |T| (no tie) this is the plain sample variance.

    Inputs: the counts and the sums of Y and Y^2 over F and over F + T ("within"), counts
    broadcastable to the sums (..., m). Returns the local variances (..., m) and, for a row
    of F and a row of T, the coefficients (c0, c1, c2) of its share c0 + c1 Y + c2 Y^2
    (each (..., m)); a row's shares over all neighbourhoods sum to its influence.
    """
    n_tied, s1_tied, s2_tied = n_within - n_near, s1_within - s1_near, s2_within - s2_near
    drawn = k - n_near
    mean_near, mean_tied = s1_near / n_near, s1_tied / n_tied
    ss_near = (s2_near - s1_near * mean_near).clamp(min=0)  # sum of squares about the mean
    var_tied = (s2_tied / n_tied - mean_tied ** 2).clamp(min=0)  # ddof 0
    # (t - 1) |T| / (|T| - 1): the tied-tied pairs' weight, 0 when one tied row is drawn.
    rho = torch.where(n_tied > 1, (drawn - 1) * n_tied / (n_tied - 1).clamp(min=1), 0.0)
    pairs = k * (k - 1) / 2
    local = (n_near * ss_near / 2
             + drawn * (ss_near + n_near * (mean_near - mean_tied) ** 2 + n_near * var_tied) / 2
             + drawn * rho * var_tied / 2) / pairs

    def quadratic(A, B, C, scale):
        """scale (A (Y - mean_near)^2 + B + C ((Y - mean_tied)^2 + var_tied)) / (4 pairs)."""
        scale = scale / (4 * pairs)
        return torch.broadcast_tensors(
            scale * (A * mean_near ** 2 + B + C * (mean_tied ** 2 + var_tied)),
            -2 * scale * (A * mean_near + C * mean_tied), scale * (A + C))
    near = quadratic(n_near, ss_near, drawn, 1.0)
    tied = quadratic(n_near, ss_near, rho, drawn / n_tied)
    return local, near, tied

def _masked_terms(D2, Y, last, tolerance, weight, k: int) -> tuple:
    """Neighbourhoods with ties, summed through masks and matrix products.

    ``D2`` (groups, centres, n) as in ``_subset_terms``, ``last`` and ``tolerance``
    (groups, centres) the k-th distance and the width of a tie, ``weight`` (groups, centres)
    0 for centres to leave out. Returns as ``_subset_terms``.
    """
    shared = D2.shape[0] == 1
    groups, centres, n = D2.shape
    # Masks in the distances' dtype: float32 data get float32 products, whose rounding
    # (relative 1e-7 of sums of Y^2) is far below the estimator's sampling error.
    masks = torch.empty(groups, 2 * centres, n, dtype=D2.dtype, device=D2.device)
    torch.lt(D2, (last - tolerance)[..., None], out=masks[:, :centres])  # F: nearer
    torch.le(D2, (last + tolerance)[..., None], out=masks[:, centres:])  # F + T: within
    column = Y.T[None] if shared else Y[:, :, None]  # (groups, n, m)
    m = column.shape[-1]
    powers = torch.cat([torch.ones_like(column[..., :1]), column, column ** 2], dim=-1)
    sums = torch.bmm(masks, powers.to(D2.dtype)).to(torch.float64)  # (groups, 2c, 1 + 2m)
    near, within = sums[:, :centres], sums[:, centres:]
    local, coef_near, coef_tied = _tie_terms(
        near[..., :1], near[..., 1:1 + m], near[..., 1 + m:],
        within[..., :1], within[..., 1:1 + m], within[..., 1 + m:], k)
    w = weight[..., None]
    coef_near, coef_tied = torch.cat(coef_near, -1) * w, torch.cat(coef_tied, -1) * w
    # Tied rows are "within" but not "near": each row's coefficients summed over centres.
    coefs = torch.cat([coef_near - coef_tied, coef_tied], dim=1).to(D2.dtype)
    summed = torch.bmm(masks.transpose(1, 2), coefs).to(torch.float64)  # (groups, n, 3m)
    psi = summed[..., :m] + column * summed[..., m:2 * m] + column ** 2 * summed[..., 2 * m:]
    total = (local * w).sum(1)  # (groups, m)
    return (total[0], psi[0].T.contiguous()) if shared else (total[:, 0], psi[..., 0])

def _subset_terms(D2, Y, centre_in_use, k: int) -> tuple:
    """Sum of the local variances (outputs,) and each row's share (outputs, n) for one subset.

    ``D2`` (groups, centres, n): squared distances, the centre's own negative, rows not in
    use infinite; groups = 1 (rows shared by all outputs) or one per output. ``Y`` (outputs,
    n); ``centre_in_use`` (groups, centres) float.
    """
    values, index = D2.topk(k + 1, dim=-1, largest=False, sorted=True)
    last = values[..., k - 1]
    # Equal spacings (integer data) give distances equal up to rounding only: distances
    # within a relative sqrt(machine epsilon) of the k-th count as ties with it.
    tolerance = last * math.sqrt(torch.finfo(D2.dtype).eps)
    tied = (values[..., k] <= last + tolerance) & (centre_in_use > 0)
    total, psi = _clear_terms(Y, index[..., :k], centre_in_use * ~tied, k)
    if not tied.any():
        return total, psi
    # The tied centres of each group first (compacted), the rest padding of weight 0.
    width = int(tied.sum(1).max())
    order = torch.sort((~tied).to(torch.int8), dim=1, stable=True).indices[:, :width]
    rows = D2.gather(1, order[..., None].expand(-1, -1, D2.shape[-1]))
    local, shares = _masked_terms(rows, Y, last.gather(1, order), tolerance.gather(1, order),
                                  (centre_in_use * tied).gather(1, order), k)
    return total + local, psi + shares
