"""Shapley effects: closed forms, exact conditional sampling, the given-data estimator.

Known answers used below (normalised effects, Var(Y) = V):

* Independent inputs, additive model Y = sum_j f_j(X_j): c(u) = sum_{j in u} Var(f_j), so
  every marginal contribution of j is Var(f_j) and Sh_j = Var(f_j) / V = S1_j = ST_j.
  For Y = beta^T X: Sh_j = beta_j^2 sigma_j^2 / V.
* Two correlated Gaussian inputs (Owen & Prieur 2017; Iooss & Prieur 2019), Y = b1 X1 + b2 X2,
  sd s1, s2, correlation rho, a_i = b_i s_i, V = a1^2 + 2 rho a1 a2 + a2^2. E[Y | X1] =
  b1 X1 + b2 rho (s2 / s1) X1 + const, so c({1}) = (a1 + rho a2)^2, c({2}) = (a2 + rho a1)^2,
  c({1, 2}) = V, and Sh_1 = [c({1}) + V - c({2})] / 2, which expands to
      Sh_1 V = a1^2 (1 - rho^2 / 2) + rho a1 a2 + a2^2 rho^2 / 2,   and symmetrically Sh_2.
  With b2 = 0 (X2 ignored by the model) Sh_2 = rho^2 / 2 > 0 whenever rho != 0.
* Three inputs, X3 independent of the correlated pair (X1, X2), Y = b1 X1 + b2 X2 + b3 X3:
  Var(E[Y | X_u]) splits as c12(u & {1, 2}) + c3(u & {3}) (the two groups are independent
  and Y is a sum over them). The Shapley value is additive over games, a game of players
  {1, 2} alone gives player 3 nothing (null player) and 1, 2 their two-player values, so
  Sh_1, Sh_2 are the two-input formulas above (over the total V, which now includes
  a3^2 = b3^2 s3^2) and Sh_3 = a3^2 / V.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from lib.kernels import shapley


def correlated(d, rho, sd=None):
    """Equicorrelated covariance with standard deviations ``sd``."""
    sd = np.ones(d) if sd is None else np.asarray(sd, dtype=float)
    corr = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    return corr * np.outer(sd, sd)


def gaussian_rows(cov, n, seed, mean=None):
    rng = np.random.default_rng(seed)
    mean = np.zeros(len(cov)) if mean is None else mean
    return mean + rng.standard_normal((n, len(cov))) @ np.linalg.cholesky(cov).T


def two_input_effects(b1, b2, s1, s2, rho, extra_variance=0.0):
    a1, a2 = b1 * s1, b2 * s2
    V = a1 ** 2 + 2 * rho * a1 * a2 + a2 ** 2 + extra_variance
    sh1 = a1 ** 2 * (1 - rho ** 2 / 2) + rho * a1 * a2 + a2 ** 2 * rho ** 2 / 2
    sh2 = a2 ** 2 * (1 - rho ** 2 / 2) + rho * a1 * a2 + a1 ** 2 * rho ** 2 / 2
    return np.array([sh1, sh2]) / V, V


def assert_near_truth(result, truth, tolerance):
    """Effects that sum to 1, within ``tolerance`` of the truth and within 3 bootstrap
    standard deviations of it (each effect misses that with probability about 0.3 %)."""
    effects, spread = result.effects[:, 0], result.resamples[:, :, 0].std(axis=1)
    assert effects.sum() == pytest.approx(1, abs=1e-12)
    assert np.abs(effects - truth).max() < tolerance
    assert (np.abs(effects - truth) < 3 * spread).all()
    assert ((result.low[:, 0] <= effects) & (effects <= result.high[:, 0])).all()


def permutation_shapley(worth, d):
    """Shapley values of the game ``worth`` (dict bitmask -> value) by all d! orders."""
    values = np.zeros(d)
    for order in itertools.permutations(range(d)):
        before = 0
        for j in order:
            values[j] += worth[before | 1 << j] - worth[before]
            before |= 1 << j
    return values / math.factorial(d)


# ---------------------------------------------------------------------- weights, closed form

def test_weights_give_the_permutation_average_of_any_game():
    d = 4
    rng = np.random.default_rng(0)
    worth = rng.normal(size=2 ** d)
    W = shapley.shapley_weights(d)
    assert W.shape == (d, 2 ** d)
    np.testing.assert_allclose(W.sum(axis=1), 0, atol=1e-15)
    np.testing.assert_allclose(W @ worth, permutation_shapley(dict(enumerate(worth)), d),
                               atol=1e-12)


def test_independent_inputs_give_beta_squared_sigma_squared_over_variance():
    beta, sd = np.array([1.0, -2.0, 0.5, 3.0]), np.array([2.0, 1.0, 3.0, 0.2])
    share = beta ** 2 * sd ** 2
    np.testing.assert_allclose(shapley.linear_gaussian(beta, np.diag(sd ** 2)),
                               share / share.sum(), rtol=1e-12)


@pytest.mark.parametrize("b1, b2, s1, s2, rho", [
    (1.0, 1.0, 1.0, 1.0, 0.5), (1.0, 2.0, 1.5, 0.5, -0.7), (2.0, -1.0, 1.0, 3.0, 0.9),
    (1.0, 0.0, 1.0, 1.0, 0.6)])
def test_two_correlated_inputs_match_owen_prieur(b1, b2, s1, s2, rho):
    cov = np.array([[s1 ** 2, rho * s1 * s2], [rho * s1 * s2, s2 ** 2]])
    expected, _ = two_input_effects(b1, b2, s1, s2, rho)
    np.testing.assert_allclose(shapley.linear_gaussian([b1, b2], cov), expected, rtol=1e-12)


@pytest.mark.parametrize("rho", [-0.8, 0.3, 0.95])
def test_three_inputs_one_correlated_pair_match_iooss_prieur(rho):
    b, s = np.array([1.0, 2.0, 1.5]), np.array([1.0, 0.7, 1.3])
    cov = np.diag(s ** 2)
    cov[0, 1] = cov[1, 0] = rho * s[0] * s[1]
    pair, V = two_input_effects(b[0], b[1], s[0], s[1], rho, extra_variance=(b[2] * s[2]) ** 2)
    expected = np.append(pair, (b[2] * s[2]) ** 2 / V)
    np.testing.assert_allclose(shapley.linear_gaussian(b, cov), expected, rtol=1e-12)


def test_explained_variance_is_variance_minus_conditional_variance():
    """c(u) = Var(Y) - beta_{-u}^T (S_{-u,-u} - S_{-u,u} S_{u,u}^-1 S_{u,-u}) beta_{-u}."""
    d = 5
    rng = np.random.default_rng(1)
    A = rng.normal(size=(d, d))
    cov, beta = A @ A.T + 0.5 * np.eye(d), rng.normal(size=d)
    explained = shapley.linear_gaussian_explained(beta, cov)
    V = beta @ cov @ beta
    for u in range(2 ** d):
        given = [j for j in range(d) if u >> j & 1]
        rest = [j for j in range(d) if not u >> j & 1]
        if not rest:
            conditional = 0.0
        elif not given:
            conditional = V
        else:
            S = cov[np.ix_(rest, rest)] - cov[np.ix_(rest, given)] @ np.linalg.solve(
                cov[np.ix_(given, given)], cov[np.ix_(given, rest)])
            conditional = beta[rest] @ S @ beta[rest]
        assert explained[u] == pytest.approx(V - conditional, rel=1e-10, abs=1e-12)


def test_closed_form_effects_are_nonnegative_and_sum_to_one():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6))
    cov, beta = A @ A.T + 0.1 * np.eye(6), rng.normal(size=6)
    effects = shapley.linear_gaussian(beta, cov)
    assert effects.sum() == pytest.approx(1, abs=1e-12)
    assert (effects >= -1e-12).all()
    raw = shapley.linear_gaussian(beta, cov, normalize=False)
    assert raw.sum() == pytest.approx(beta @ cov @ beta, rel=1e-12)


def test_an_ignored_input_gets_an_effect_through_correlation_only():
    beta = [1.0, 0.0, 1.0]
    cov = np.eye(3)
    assert shapley.linear_gaussian(beta, cov)[1] == 0
    cov[0, 1] = cov[1, 0] = 0.6
    # Two-input formula with b2 = 0 over the total V = 1 + 1: Sh_2 = (rho^2 / 2) / 2.
    assert shapley.linear_gaussian(beta, cov)[1] == pytest.approx(0.36 / 2 / 2, rel=1e-12)


# ------------------------------------------------------------- exact conditional sampling

def linear(beta):
    beta = torch.as_tensor(beta, dtype=torch.float64)
    return lambda x: x @ beta


@pytest.mark.parametrize("beta, cov", [
    ([1.0, 1.0, 1.0], [[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 2.0]]),
    ([1.0, -0.5, 2.0, 0.0, 1.0], correlated(5, 0.6, [1, 2, 0.5, 1, 1]))])
def test_conditional_sampling_matches_the_closed_form(beta, cov):
    truth = shapley.linear_gaussian(beta, cov)
    result = shapley.conditional_sampling(linear(beta), np.ones(len(beta)), cov,
                                          n_outer=2048, num_resamples=300, device="cpu")
    assert_near_truth(result, truth, 0.02)


def test_conditional_sampling_of_an_additive_model_gives_first_order_indices():
    """Independent N(0, 1) inputs: Var(X1) = 1, Var(X2^2) = 2, Var(sin X3) = (1 - e^-2) / 2."""
    parts = np.array([1.0, 2.0, (1 - math.exp(-2)) / 2])

    def model(x):
        return torch.stack([x[:, 0] + x[:, 1] ** 2 + torch.sin(x[:, 2]), 2 * x[:, 0]], dim=1)
    result = shapley.conditional_sampling(model, np.zeros(3), np.eye(3), n_outer=2048,
                                          num_resamples=100, device="cpu")
    assert np.abs(result.effects[:, 0] - parts / parts.sum()).max() < 0.02
    # The second output uses X1 only, independent of X2 and X3: (1, 0, 0) up to MC error.
    assert np.abs(result.effects[:, 1] - [1, 0, 0]).max() < 0.05
    assert result.effects.shape == (3, 2) and result.output_names == ["y0", "y1"]


# ---------------------------------------------------------------------- given-data estimator

@pytest.mark.parametrize("rho, n", [(0.0, 2000), (0.5, 3000), (-0.7, 3000), (0.9, 3000)])
def test_given_data_matches_the_closed_form_in_three_inputs(rho, n):
    beta = np.array([1.0, 2.0, 1.0])
    cov = np.array([[1, rho, 0.3 * rho], [rho, 1, 0], [0.3 * rho, 0, 1.5]])
    truth = shapley.linear_gaussian(beta, cov)
    X = gaussian_rows(cov, n, seed=10, mean=np.array([5.0, -3.0, 100.0]))
    assert_near_truth(shapley.given_data(X, X @ beta, num_resamples=400), truth, 0.03)


def test_given_data_matches_the_closed_form_in_five_inputs():
    beta = np.array([1.0, -0.5, 2.0, 0.0, 1.0])
    cov = correlated(5, 0.6, [1, 2, 0.5, 1, 1])
    cov[3, 4] = cov[4, 3] = 0.2
    truth = shapley.linear_gaussian(beta, cov)
    X = gaussian_rows(cov, 2000, seed=11)
    result = shapley.given_data(X, X @ beta, num_resamples=400)
    assert_near_truth(result, truth, 0.04)
    assert truth[3] > 0.05 and result.low[3, 0] > 0  # X4: unused, correlated with used ones


def test_given_data_of_an_additive_model_gives_first_order_indices():
    parts = np.array([1.0, 2.0, (1 - math.exp(-2)) / 2])
    X = gaussian_rows(np.eye(3), 2000, seed=12)
    Y = X[:, 0] + X[:, 1] ** 2 + np.sin(X[:, 2])
    result = shapley.given_data(X, Y, num_resamples=200)
    assert np.abs(result.effects[:, 0] - parts / parts.sum()).max() < 0.03
    # The closed index of a single input is its first-order index here.
    singles = result.closed[[1, 2, 4], 0]
    assert np.abs(singles - parts / parts.sum()).max() < 0.05


def test_given_data_unused_input_positive_when_correlated_zero_when_independent():
    beta = np.array([1.0, 0.0, 1.0])
    for rho, expected in [(0.8, 0.8 ** 2 / 4), (0.0, 0.0)]:
        cov = np.eye(3)
        cov[0, 1] = cov[1, 0] = rho
        X = gaussian_rows(cov, 2000, seed=13)
        result = shapley.given_data(X, X @ beta, num_resamples=400)
        assert result.effects[1, 0] == pytest.approx(expected, abs=0.03)
        assert result.low[1, 0] <= expected <= result.high[1, 0]
        if rho:
            assert result.low[1, 0] > 0


def brute_force_given_data(X, Y, k, counts=()):
    """The estimator by its definition: every subset, centre and draw of tied rows.

    Returns the effects and, for each row of bootstrap ``counts`` (B, n), the resampled
    effects: Var(Y) from the resampled rows, E[Var(Y | X_u)] moved by (2 / n) sum_i
    (w_i - 1) psi_i, psi_i row i's share of the neighbourhood variances (half of each
    squared difference it is in, / (k (k - 1)), averaged over the draws of tied rows).
    """
    n, d = X.shape
    scale = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(scale > 0, scale, 1)
    variance = Y.var(ddof=1)
    worth = {0: 0.0, 2 ** d - 1: variance}
    moved = {0: np.zeros(n), 2 ** d - 1: np.zeros(n)}
    for u in range(1, 2 ** d - 1):
        columns = [j for j in range(d) if u >> j & 1]
        D2 = np.zeros((n, n))
        for j in columns:  # the same order of additions as the estimator: ties stay ties
            D2 = D2 + (Z[:, None, j] - Z[None, :, j]) ** 2
        total, psi = 0.0, np.zeros(n)
        for s in range(n):
            others = [t for t in range(n) if t != s]
            last = np.sort(D2[s, others])[k - 2]
            tolerance = last * np.sqrt(np.finfo(float).eps)  # rounding of equal spacings
            near = [s] + [t for t in others if D2[s, t] < last - tolerance]
            tied = [t for t in others if abs(D2[s, t] - last) <= tolerance]
            draws = [near + list(c) for c in itertools.combinations(tied, k - len(near))]
            total += np.mean([np.var(Y[rows], ddof=1) for rows in draws])
            for rows in draws:
                for i in rows:
                    psi[i] += sum((Y[i] - Y[b]) ** 2 for b in rows) / (
                        2 * k * (k - 1) * len(draws))
        worth[u] = variance - total / n
        moved[u] = -2 * psi / n  # how the worth moves with each row's weight
    effects = permutation_shapley(worth, d) / variance
    resampled = []
    for w in counts:
        mean = (w * Y).sum() / n
        var_star = (w * (Y - mean) ** 2).sum() / (n - 1)
        star = {u: c + moved[u] @ (w - 1) for u, c in worth.items()}
        star[2 ** d - 1] = var_star
        resampled.append(permutation_shapley(star, d) / var_star)
    return (effects, np.array(resampled).T) if len(counts) else effects


@pytest.mark.parametrize("discrete", [False, True], ids=["some ties", "all tied"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_given_data_equals_its_definition_with_ties_and_duplicates(k, discrete):
    """Rows shared by two outputs and rows given per output; a continuous column with some
    ties, or integer columns only (ties everywhere)."""
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.integers(0, 3, 14), rng.integers(0, 2, 14),
                         rng.normal(size=14).round(0 if discrete else 1)]).astype(float)
    X[5] = X[2]  # a duplicate row
    Y = X[:, 0] ** 2 + 2 * X[:, 1] * X[:, 2] + X[:, 2]
    expected = brute_force_given_data(X, Y, k)
    result = shapley.given_data(X, np.column_stack([Y, -3 * Y + 50]), n_neighbors=k,
                                num_resamples=0)
    np.testing.assert_allclose(result.effects, np.column_stack([expected, expected]),
                               atol=1e-12)
    assert np.isnan(result.low).all() and np.isnan(result.high).all()
    per_output = shapley.given_data(np.stack([X, X]), np.column_stack([Y, Y]), n_neighbors=k,
                                    mask=np.ones((2, 14), dtype=bool), num_resamples=0)
    np.testing.assert_allclose(per_output.effects, np.column_stack([expected, expected]),
                               atol=1e-12)


def test_bootstrap_resamples_equal_their_definition():
    """The resamples, recomputed from the definition with the same resampled rows (the
    estimate draws nothing, so the seeded generator's first draws are the resamples)."""
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.integers(0, 3, 12), rng.normal(size=12).round(1)]).astype(float)
    Y = X[:, 0] + X[:, 1] ** 2
    draws = torch.randint(12, (5, 12), generator=torch.Generator().manual_seed(7))
    counts = torch.zeros(5, 12, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(5, 12, dtype=torch.float64)).numpy()
    expected, resampled = brute_force_given_data(X, Y, 3, counts)
    result = shapley.given_data(X, Y, num_resamples=5, seed=7)
    np.testing.assert_allclose(result.effects[:, 0], expected, atol=1e-12)
    np.testing.assert_allclose(result.resamples[:, :, 0], resampled, atol=1e-12)
    # Rows given per output are resampled per output, from uniform draws.
    uniform = torch.rand(5, 2, 12, generator=torch.Generator().manual_seed(7),
                         dtype=torch.float64)
    result = shapley.given_data(np.stack([X, X]), np.column_stack([Y, Y]), num_resamples=5,
                                seed=7)
    for m in range(2):
        counts = torch.zeros(5, 12, dtype=torch.float64).scatter_add_(
            1, (uniform[:, m] * 12).long(), torch.ones(5, 12, dtype=torch.float64)).numpy()
        _, resampled = brute_force_given_data(X, Y, 3, counts)
        np.testing.assert_allclose(result.resamples[:, :, m], resampled, atol=1e-12)


def test_given_data_with_a_discrete_input():
    """X1 uniform on {0, 1, 2} (variance 2/3), X2 ~ N(0, 1), Y = X1 + X2: Sh = (0.4, 0.6)."""
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.integers(0, 3, 1500), rng.normal(size=1500)]).astype(float)
    result = shapley.given_data(X, X.sum(axis=1), num_resamples=300)
    assert np.abs(result.effects[:, 0] - [0.4, 0.6]).max() < 0.03
    assert ((result.low[:, 0] <= [0.4, 0.6]) & ([0.4, 0.6] <= result.high[:, 0])).all()


def test_batched_outputs_equal_one_output_at_a_time():
    X = gaussian_rows(correlated(4, 0.5), 300, seed=5)
    X[:, 0] = X[:, 0].round()  # ties too
    Y = np.column_stack([X @ [1, 2, 0, 1], np.tanh(X[:, 0] * X[:, 1]), X[:, 3] ** 2])
    batched = shapley.given_data(torch.as_tensor(X), torch.as_tensor(Y), num_resamples=50)
    for m in range(3):
        alone = shapley.given_data(X, Y[:, m], num_resamples=50)
        np.testing.assert_allclose(batched.effects[:, m], alone.effects[:, 0], atol=1e-13)
        np.testing.assert_allclose(batched.low[:, m], alone.low[:, 0], atol=1e-13)
        np.testing.assert_allclose(batched.high[:, m], alone.high[:, 0], atol=1e-13)
        np.testing.assert_allclose(batched.closed[:, m], alone.closed[:, 0], atol=1e-13)


def test_rows_per_output_with_masks_equal_one_call_per_output():
    rng = np.random.default_rng(6)
    M, n = 4, 200
    base = gaussian_rows(correlated(3, 0.4), n, seed=6)
    base[rng.random((n, 3)) < 0.1] = np.nan  # missing values, imputed per output
    mask = rng.random((M, n)) < 0.7
    X = np.empty((M, n, 3))
    for m in range(M):
        median = np.nanmedian(base[mask[m]], axis=0)
        X[m] = np.where(np.isnan(base), median, base)
    Y = np.stack([X[m] @ [1.0, m, 1.0] for m in range(M)], axis=1)
    Y[~mask.T] = np.nan  # outputs at rows not in use are never read
    batched = shapley.given_data(X, Y, mask=torch.as_tensor(mask), num_resamples=20)
    np.testing.assert_array_equal(batched.rows, mask.sum(1))
    for m in range(M):
        alone = shapley.given_data(X[m][mask[m]], Y[mask[m], m], num_resamples=20)
        np.testing.assert_allclose(batched.effects[:, m], alone.effects[:, 0], atol=1e-12)
    # The same rows for every output, given per output or once: the same effects.
    same = shapley.given_data(np.broadcast_to(X[0], (M, n, 3)), np.nan_to_num(Y))
    once = shapley.given_data(X[0], np.nan_to_num(Y))
    np.testing.assert_allclose(same.effects, once.effects, atol=1e-12)


def test_effects_follow_the_inputs_not_their_order_or_units():
    X = gaussian_rows(correlated(3, 0.5), 400, seed=7)
    Y = X[:, 0] + np.exp(X[:, 1] / 2) + X[:, 0] * X[:, 2]
    reference = shapley.given_data(X, Y, num_resamples=0).effects[:, 0]
    order, rows = [2, 0, 1], np.random.default_rng(7).permutation(400)
    permuted = shapley.given_data(X[:, order], Y, num_resamples=0).effects[:, 0]
    np.testing.assert_allclose(permuted, reference[order], atol=1e-12)
    shuffled = shapley.given_data(X[rows], Y[rows], num_resamples=0).effects[:, 0]
    np.testing.assert_allclose(shuffled, reference, atol=1e-12)
    rescaled = shapley.given_data(X * [1, 1000, 0.01] + [3, -50, 7], Y,
                                  num_resamples=0).effects[:, 0]
    np.testing.assert_allclose(rescaled, reference, atol=1e-9)


def test_intervals_cover_the_truth_in_repeated_experiments():
    beta, cov = np.array([1.0, 1.0, 0.5]), correlated(3, 0.5)
    truth = shapley.linear_gaussian(beta, cov)
    covered = []
    for seed in range(30):
        X = gaussian_rows(cov, 600, seed=100 + seed)
        result = shapley.given_data(X, X @ beta, num_resamples=200, seed=seed)
        covered.append((result.low[:, 0] <= truth) & (truth <= result.high[:, 0]))
    # 90 intervals at 95 %: fewer than 75 covering would mean intervals far too narrow.
    assert np.sum(covered) >= 75


def test_seeded_intervals_repeat_and_frames_name_the_inputs():
    X = gaussian_rows(correlated(3, 0.3), 200, seed=8)
    Y = np.column_stack([X.sum(axis=1), X[:, 0]])
    first = shapley.given_data(X, Y, names=["a", "b", "c"], output_names=["sum", "a"], seed=3,
                               num_resamples=100)
    again = shapley.given_data(X, Y, names=["a", "b", "c"], output_names=["sum", "a"], seed=3,
                               num_resamples=100)
    np.testing.assert_array_equal(first.low, again.low)
    assert first.resamples.shape == (3, 100, 2)
    frame = first.to_frame("sum")
    assert list(frame.index) == ["a", "b", "c"] and list(frame.columns) == [
        "Sh", "Sh_low", "Sh_high"]
    np.testing.assert_array_equal(frame["Sh"], first.effects[:, 0])
    wide = first.to_frame()
    assert wide.shape == (3, 6) and wide[("a", "Sh")].tolist() == first.effects[:, 1].tolist()
    import pandas as pd
    framed = shapley.given_data(pd.DataFrame(X, columns=["a", "b", "c"]),
                                pd.DataFrame(Y, columns=["sum", "a"]), seed=3,
                                num_resamples=100)
    assert framed.names == ["a", "b", "c"] and framed.output_names == ["sum", "a"]
    np.testing.assert_array_equal(framed.effects, first.effects)
    tidy = first.tidy()
    assert len(tidy) == 6 and set(tidy["output"]) == {"sum", "a"}
    assert ((first.low <= first.effects) & (first.effects <= first.high)).all()


# ----------------------------------------------------------------------------- bad input

def good_rows(n=20, d=3):
    X = gaussian_rows(np.eye(d), n, seed=9)
    return X, X.sum(axis=1)


def test_too_few_rows_are_refused_with_the_needed_count():
    X, Y = good_rows(n=3, d=3)
    with pytest.raises(ValueError, match=r"uses 3 rows.*at least max\(d, n_neighbors\) \+ 1 = 4"):
        shapley.given_data(X, Y)
    X, Y = good_rows(n=6, d=3)
    with pytest.raises(ValueError, match="at least .* = 7"):
        shapley.given_data(X, Y, n_neighbors=6)
    mask = np.ones((2, 6), dtype=bool)
    mask[1, 2:] = False
    with pytest.raises(ValueError, match="output 1 uses 2 rows"):
        shapley.given_data(X, np.column_stack([Y, Y]), mask=mask)


@pytest.mark.parametrize("k", [0, -1, 1, 2.5, True])
def test_bad_neighbour_counts_are_refused(k):
    X, Y = good_rows()
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 2"):
        shapley.given_data(X, Y, n_neighbors=k)


def test_non_finite_values_are_named_by_row_input_and_output():
    X, Y = good_rows()
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="X holds NaN or inf at row 7, input 'c'"):
        shapley.given_data(bad, Y, names=["a", "b", "c"])
    Y2 = np.column_stack([Y, Y])
    Y2[4, 1] = np.inf
    with pytest.raises(ValueError, match="Y holds NaN or inf at row 4 for output 1"):
        shapley.given_data(X, Y2)
    per_output = np.stack([X, bad])
    with pytest.raises(ValueError, match=r"X\[1\] .* row 7, input 'x3'"):
        shapley.given_data(per_output, np.column_stack([Y, Y]))
    mask = np.ones((2, 20), dtype=bool)
    mask[1, 7] = False  # the bad row is not used by the output that holds it: fine
    shapley.given_data(per_output, np.column_stack([Y, Y]), mask=mask, num_resamples=0)


def test_mismatched_shapes_are_refused():
    X, Y = good_rows()
    with pytest.raises(ValueError, match="X has 20 rows but Y has 19"):
        shapley.given_data(X, Y[:19])
    with pytest.raises(ValueError, match="X holds 3 sets of rows .* Y has 2 outputs"):
        shapley.given_data(np.stack([X] * 3), np.column_stack([Y, Y]))
    with pytest.raises(ValueError, match=r"mask must have shape \(20,\) .* or \(1, 20\)"):
        shapley.given_data(X, Y, mask=np.ones((2, 20), dtype=bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        shapley.given_data(X, Y, mask=np.ones(20))
    with pytest.raises(ValueError, match="X must be"):
        shapley.given_data(X[:, 0], Y)
    with pytest.raises(ValueError, match="names must hold 3 distinct names"):
        shapley.given_data(X, Y, names=["a", "a", "b"])


def test_too_many_inputs_for_exact_enumeration_are_refused():
    limit = shapley.MAX_INPUTS
    X = np.random.default_rng(0).normal(size=(50, limit + 1))
    with pytest.raises(ValueError, match=f"d = {limit + 1} inputs exceed .* {limit}"):
        shapley.given_data(X, X.sum(axis=1))
    with pytest.raises(ValueError, match="exceed"):
        shapley.linear_gaussian(np.ones(limit + 1), np.eye(limit + 1))


def test_other_bad_arguments_are_refused():
    X, Y = good_rows()
    with pytest.raises(ValueError, match="constant"):
        shapley.given_data(X, np.ones(20))
    with pytest.raises(ValueError, match=r"conf_level must be a number in \(0, 1\)"):
        shapley.given_data(X, Y, conf_level=1.0)
    with pytest.raises(ValueError, match="num_resamples"):
        shapley.given_data(X, Y, num_resamples=-1)
    with pytest.raises(ValueError, match="positive definite"):
        shapley.linear_gaussian([1, 1], [[1, 1], [1, 1]])
    with pytest.raises(ValueError, match=r"cov must be a \(2, 2\)"):
        shapley.linear_gaussian([1, 1], np.eye(3))
    with pytest.raises(ValueError, match="Var\\(Y\\)"):
        shapley.linear_gaussian([0, 0], np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        shapley.conditional_sampling(linear([1, 1]), [0, 0], [[1, 0.5], [0.4, 1]])
    with pytest.raises(ValueError, match="NaN or inf .* output 0"):
        shapley.conditional_sampling(lambda x: x[:, 0] / 0 * 0, [0, 0], np.eye(2),
                                     n_outer=8, device="cpu")
    with pytest.raises(ValueError, match="must return"):
        shapley.conditional_sampling(lambda x: x[:1, 0], [0, 0], np.eye(2), n_outer=8,
                                     device="cpu")
