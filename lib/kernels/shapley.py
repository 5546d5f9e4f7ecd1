"""Shapley effects of dependent inputs, for many model outputs at once, on the device.

Sobol' indices split Var(Y) over *independent* inputs; with correlated inputs (the columns of
a clinical table) the functional ANOVA terms are no longer orthogonal, S1 and ST stop adding
up, and "the share of input j" has no unique meaning. Shapley effects (Owen 2014) give one:
the Shapley value of the cooperative game whose worth of a coalition u of inputs is its
explained variance c(u) = Var(E[Y | X_u]) = Var(Y) - E[Var(Y | X_u)],

    Sh_j = sum over u not containing j of |u|! (d - |u| - 1)! / d! * (c(u + j) - c(u)),

i.e. the average over all d! orders of the inputs of the variance that j adds when it joins
the inputs before it. The effects are non-negative, sum to c(all) = Var(Y) (normalised by
Var(Y) here, so they sum to 1), need no independence, and reduce to Var(f_j(X_j)) / Var(Y)
for an additive model of independent inputs (then Sh_j = S1_j = ST_j). An input that the
model ignores gets a positive effect when it is correlated with one that the model uses: it
carries information about the output (Owen & Prieur 2017). The game with the "total" value
E[Var(Y | X_{-u})] has the same Shapley values (Song, Nelson & Staum 2016).

Three ways to the effects, each over all 2^d subsets exactly (d <= ``MAX_INPUTS``):

- ``linear_gaussian``: the closed form for Y = beta^T X with X ~ N(mu, Sigma);
- ``conditional_sampling``: Monte Carlo with exact Gaussian conditional sampling for any
  model (the double loop of Song, Nelson & Staum 2016), a cross-check where the input
  distribution is known;
- ``given_data``: the nearest-neighbour estimator of Broto, Bachoc & Depecker (2020), which
  needs only observed input rows and the model's outputs at them: the inputs' joint
  distribution is the data's, however correlated, discrete or odd it is.

Subsets are bitmasks throughout: bit j set means input j is in the subset, so subset u of the
``closed`` arrays is row ``u`` (0 = the empty set, 2^d - 1 = all inputs).

This module gathers the public functions; the code lives in ``shapley_games`` (checks,
weights, the result type, the closed form), ``shapley_sampling`` (conditional sampling) and
``shapley_given`` (the given-data estimator, with its neighbourhood terms in
``shapley_neighbours``).
"""
from .shapley_games import (MAX_INPUTS, ShapleyResult, linear_gaussian,  # noqa: F401
                            linear_gaussian_explained, shapley_weights)
from .shapley_given import DISTANCE_BUDGET_BYTES, given_data  # noqa: F401
from .shapley_sampling import conditional_sampling  # noqa: F401
