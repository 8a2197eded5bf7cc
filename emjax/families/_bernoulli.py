"""Bernoulli components: D binary features, independent given the component.

Numerics: a probability of exactly 0 or 1 would make ``log p`` infinite for a point
that contradicts it, and an all-``-inf`` row of the E-step gives NaN
responsibilities. The family therefore keeps every probability in
``[lo, 1 - lo]`` with ``lo = max(eps, 8 * finfo(dtype).eps)`` (``eps=1e-10`` by
default, so ``lo = 1e-10`` in float64 and about ``9.5e-7`` in float32):
``log_prob`` and ``log_prior`` take ``log(max(mu, lo))`` and ``log(max(1 - mu, lo))``,
and the M-step clips its result into ``[lo, 1 - lo]``. The per-coordinate
objective ``A log mu + B log(1 - mu)`` is concave, so the clipped closed form is
the exact maximiser over ``[lo, 1 - lo]``: EM stays monotone for the model whose
probabilities are bounded by ``lo``, and no NaN can ever appear.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import gammaln

from .._checks import (
    as_data_matrix,
    check_number,
    check_probabilities,
    find_first,
    float_dtype,
    is_sharded,
    is_traced,
    raise_first,
)
from ._priors import BetaPrior
from ._base import Family, rows_times

_EXACT = jax.lax.Precision.HIGHEST
_GOLDEN = 0.6180339887498949  # frac((1 + sqrt 5) / 2)
_SQRT2_FRAC = 0.41421356237309515
#: Weight of the data mean, and of the fixed distinct pattern, in ``init_from_centers``.
_SMOOTH = 0.5
_SPREAD = 0.1


def prob_floor(dtype, eps: float) -> float:
    """The smallest probability a family keeps: ``max(eps, 8 * finfo(dtype).eps)``."""
    return max(float(eps), 8.0 * float(jnp.finfo(dtype).eps))


def distinct_pattern(shape: tuple[int, ...], dtype) -> Array:
    """A fixed array in ``[0.1, 0.9]`` whose rows (leading axis) are pairwise distinct.

    ``u[k, ...] = 0.1 + 0.8 frac((k+1) phi + c)`` with ``phi`` the golden ratio and
    ``c`` a per-position offset: ``(k - j) phi`` is never an integer, so no two rows
    coincide. Used to break the symmetry between components deterministically.
    """
    k = shape[0]
    rest = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    kk = jnp.arange(1, k + 1, dtype=dtype)[:, None]
    pos = jnp.arange(1, rest + 1, dtype=dtype)[None, :]
    u = 0.1 + 0.8 * jnp.mod(kk * _GOLDEN + pos * _SQRT2_FRAC, 1.0)
    return u.reshape(shape)


def _smoothing(dtype) -> float:
    """Pseudo-count ``tau`` pulling an (almost) empty component towards a fixed
    distinct fallback, so that 0/0 never occurs and empty components stay distinct.
    Its effect on a component with count ``N_k`` is ``O(tau / N_k)``, at rounding level."""
    return 10.0 * float(jnp.finfo(dtype).eps)


def identifiability_problem(n_components: int, n_features: int, n_categories: int) -> str | None:
    """Why a K-component mixture of D independent S-category features is not
    identifiable, or ``None`` when none of the known obstructions applies.

    The obstructions checked: one feature (a mixture of categoricals for a single
    draw is itself one categorical, with parameter ``sum_k pi_k theta_k``); two
    features (the joint table ``Theta_1^T diag(pi) Theta_2`` has a continuum of
    nonnegative factorisations for K >= 2); and more free parameters than the
    ``S^D - 1`` free cell probabilities of the data's distribution.
    """
    k, d, s = int(n_components), int(n_features), int(n_categories)
    if k < 2:
        return None
    if d == 1:
        return (
            f"a mixture of K={k} > 1 components over a single categorical feature is not identifiable: "
            f"the mixture of categoricals sum_k pi_k Cat(theta_k) is itself one categorical with parameter "
            f"sum_k pi_k theta_k, so infinitely many (pi, theta) give the same likelihood and the fitted "
            f"components are arbitrary. Use K=1, or more features."
        )
    if d == 2:
        return (
            f"a mixture of K={k} > 1 components over two categorical features is not identifiable: the "
            f"joint table Theta_1^T diag(pi) Theta_2 has a continuum of nonnegative factorisations, so the "
            f"fitted components are arbitrary. At least three features are needed."
        )
    n_free = (k - 1) + k * d * (s - 1)
    cells = s**d - 1 if d * np.log(s) < 60 else np.inf
    if n_free > cells:
        return (
            f"a mixture of K={k} components over D={d} features with S={s} categories has {n_free} free "
            f"parameters, more than the {cells} free cell probabilities of the data's distribution: it is not "
            f"identifiable. Use fewer components."
        )
    return None


class BernoulliParams(eqx.Module):
    """Parameters of K Bernoulli components.

    Attributes:
        means: ``(K, D)`` probabilities ``P(x_d = 1 | z = k)``.
    """

    means: Array


class BernoulliStats(eqx.Module):
    """Responsibility-weighted statistics (additive leaf by leaf).

    Attributes:
        counts: ``(K,)`` sum of r.
        s1: ``(K, D)`` sum of r x.
    """

    counts: Array
    s1: Array


class Bernoulli(Family):
    """Components with D independent binary features (multivariate Bernoulli,
    latent class analysis of binary items).

    ``p(x | mu_k) = prod_d mu_kd^x_d (1 - mu_kd)^(1 - x_d)``.

    Args:
        prior: a :class:`BetaPrior` for MAP-EM, or ``None`` for maximum likelihood.
        eps: probabilities are kept in ``[lo, 1 - lo]``, ``lo = max(eps, 8 finfo(dtype).eps)``
            (see the module notes): a fitted 0 or 1 never makes a point impossible.

    Data: ``(N, D)`` of 0/1 values, boolean or numeric; they are returned as floats
    of the working precision (float32 data stay float32).

    Initialisation: ``init_from_centers`` pulls each centre half-way towards the
    data mean and adds a small fixed pattern that differs between components, so
    the initial means are always pairwise distinct (equal means are a fixed point
    of EM: the responsibilities then equal the weights and nothing moves), even
    when the data have fewer than K distinct rows.

    Example:
        >>> model = emjax.Mixture(Bernoulli(prior=BetaPrior(2.0, 2.0)), n_components=3)
    """

    prior: BetaPrior | None
    eps: float = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("means",)

    def __init__(self, prior: BetaPrior | None = None, *, eps: float = 1e-10):
        if prior is not None and not isinstance(prior, BetaPrior):
            raise TypeError(f"prior must be a BetaPrior or None; got {type(prior).__name__}.")
        eps = check_number("eps", eps)  # a TypeError naming eps for a string or None
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be a number in (0, 0.5); got {eps}.")
        self.prior = prior
        self.eps = float(eps)

    # -- densities -------------------------------------------------------------------

    def _logs(self, mu: Array) -> tuple[Array, Array]:
        lo = prob_floor(mu.dtype, self.eps)
        return jnp.log(jnp.maximum(mu, lo)), jnp.log(jnp.maximum(1 - mu, lo))

    # -- missing entries: the missing features left out, imputed at their means in the statistics

    supports_missing: ClassVar[bool] = True

    def feature_log_prob(self, params: BernoulliParams, x: Array) -> Array:
        log1, log0 = self._logs(params.means)
        return jnp.where(x[:, None, :] > 0, log1[None], log0[None])

    def statistics_observed(self, x0, observed, resp, params: BernoulliParams, cache) -> BernoulliStats:
        miss = jnp.matmul(resp.T, (~observed).astype(resp.dtype), precision=_EXACT)  # (K, D)
        s1 = jnp.matmul(resp.T, x0.astype(resp.dtype), precision=_EXACT) + params.means * miss
        return BernoulliStats(jnp.sum(resp, axis=0), s1)

    def impute(self, params: BernoulliParams, x0, observed):
        return jnp.where(observed[:, None, :], x0[:, None, :], params.means[None])

    def log_prob(self, params: BernoulliParams, x: Array) -> Array:
        log1, log0 = self._logs(params.means)  # (K, D)
        dtype = jnp.result_type(x, log1)
        # sum_d x_d log mu_kd + (1 - x_d) log(1 - mu_kd) as one (N, D) x (D, K) product.
        return rows_times(x.astype(dtype), log1 - log0) + jnp.sum(log0, axis=1)[None, :]

    # -- statistics and M-step -------------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: BernoulliParams | None = None) -> BernoulliStats:
        return BernoulliStats(jnp.sum(resp, axis=0), jnp.matmul(resp.T, x.astype(resp.dtype), precision=_EXACT))

    def expected_log_likelihood(self, stats: BernoulliStats, params: BernoulliParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        log1, log0 = self._logs(params.means)
        return jnp.sum(stats.s1 * log1 + (stats.counts[:, None] - stats.s1) * log0)

    def _fallback(self, stats: BernoulliStats) -> Array:
        """Distinct means for (almost) empty components: the pooled data mean moved
        a quarter of the way towards a fixed pattern that differs between components."""
        total = jnp.sum(stats.counts)
        pooled = jnp.sum(stats.s1, axis=0) / jnp.where(total > 0, total, 1.0)
        return 0.75 * pooled[None, :] + 0.25 * distinct_pattern(stats.s1.shape, stats.s1.dtype)

    def maximize(self, stats: BernoulliStats, params=None, frozen: frozenset = frozenset()) -> BernoulliParams:
        if "means" in frozen:
            return BernoulliParams(params.means)
        s1 = stats.s1
        k, d = s1.shape
        dtype = s1.dtype
        num, den = s1, stats.counts[:, None]
        if self.prior is not None:
            a, b = self.prior.broadcast(d, dtype)
            num, den = num + (a - 1), den + (a + b - 2)
        tau = _smoothing(dtype)
        mu = (num + tau * self._fallback(stats)) / (den + tau)
        lo = prob_floor(dtype, self.eps)
        return BernoulliParams(jnp.clip(mu, lo, 1 - lo))

    # -- prior -------------------------------------------------------------------------

    def log_prior(self, params: BernoulliParams) -> Array:
        mu = params.means
        if self.prior is None:
            return jnp.zeros((), mu.dtype)
        a, b = self.prior.broadcast(mu.shape[1], mu.dtype)
        log1, log0 = self._logs(mu)
        log_beta = gammaln(a) + gammaln(b) - gammaln(a + b)
        return jnp.sum((a - 1) * log1 + (b - 1) * log0 - log_beta)

    # -- initialisation, sampling, moments ---------------------------------------------

    def init_from_centers(self, x: Array, centers: Array) -> BernoulliParams:
        k, d = centers.shape
        dtype = float_dtype(centers.dtype)
        xbar = jnp.mean(x.astype(dtype), axis=0)
        c = jnp.clip(centers.astype(dtype), 0, 1)
        # Binary centres that differ anywhere differ by >= 1 - SMOOTH - SPREAD - 0.8 SPREAD > 0
        # in that coordinate; equal centres differ through the pattern.
        mu = (1 - _SMOOTH - _SPREAD) * c + _SMOOTH * xbar[None, :] + _SPREAD * distinct_pattern((k, d), dtype)
        lo = prob_floor(dtype, self.eps)
        return BernoulliParams(jnp.clip(mu, lo, 1 - lo))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "means" in frozen else n_components * n_features

    def sample(self, key, params: BernoulliParams, components: Array) -> Array:
        mu = params.means[components]
        return jax.random.bernoulli(key, mu).astype(mu.dtype)

    def moments(self, params: BernoulliParams):
        mu = params.means
        return mu, jax.vmap(jnp.diag)(mu * (1 - mu))

    # -- diagnostics and validation ------------------------------------------------------

    def unconstrain(self, params: BernoulliParams) -> dict:
        """``{"logits": (K, D)}``, ``log(mu / (1 - mu))`` of the means clipped into
        ``[lo, 1 - lo]`` (the family's floor, see the module notes), so always finite."""
        lo = prob_floor(params.means.dtype, self.eps)
        mu = jnp.clip(params.means, lo, 1 - lo)
        return {"logits": jnp.log(mu) - jnp.log1p(-mu)}

    def constrain(self, u: dict) -> BernoulliParams:
        """The inverse of :meth:`unconstrain`: ``means = sigmoid(logits)``."""
        return BernoulliParams(jax.nn.sigmoid(u["logits"]))

    def degenerate(self, params: BernoulliParams, x: Array) -> Array:
        # No likelihood singularity: bounded probabilities keep the likelihood bounded.
        return ~jnp.all(jnp.isfinite(params.means), axis=-1)

    def check_identifiable(self, n_components: int, n_features: int) -> bool:
        """Warn (``UserWarning``) and return False if a K-component Bernoulli mixture
        over D features is not identifiable (D <= 2 with K >= 2, or more parameters
        than the ``2^D - 1`` cell probabilities)."""
        problem = identifiability_problem(n_components, n_features, 2)
        if problem is not None:
            problem = problem.replace("categoricals", "Bernoullis").replace("Cat(", "Bernoulli(").replace("categorical", "binary")
            warnings.warn(problem, UserWarning, stacklevel=2)
        return problem is None

    def validate_data(self, x) -> Array:
        """2-D data of 0/1 values (bool or numeric), as floats of the working precision.

        :class:`emjax.Mixture` then calls :meth:`check_identifiable` with its K.
        """
        if is_traced(x):
            return as_data_matrix(x)
        # Sharded data stay where they are (checked on their devices); the rest is read once.
        raw = x if is_sharded(x) else np.asarray(x)
        xm = as_data_matrix(raw)  # rank, emptiness, non-numeric, NaN
        if raw.dtype != bool:
            raise_first(
                find_first(_not_binary, raw), "x", "other value(s)", rule="Bernoulli data must be binary (0/1 or bool)"
            )
        d = xm.shape[1]
        if self.prior is not None and self.prior.n_features() not in (None, d):
            raise ValueError(
                f"the BetaPrior has {self.prior.n_features()} per-feature hyperparameters but x has D={d} features."
            )
        return xm

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, BernoulliParams):
            raise TypeError(f"Bernoulli parameters must be a BernoulliParams; got {type(params).__name__}.")
        m = check_probabilities(params.means, (n_components, n_features), "Bernoulli means")
        if m is None:
            return
        _check_distinct(m.reshape(m.shape[0], -1), "means")


def _not_binary(xp, x):
    return (x != 0) & (x != 1)


def _check_distinct(m: np.ndarray, name: str) -> None:
    """Raise if two components have identical parameters: EM can never separate them."""
    k = m.shape[0]
    if k < 2:
        return
    if np.all(m == m[0]):
        raise ValueError(
            f"all {k} component {name} are equal: with equal components the responsibilities equal the "
            f"weights for every point, the M-step gives the same {name} back, and EM never moves "
            f"(a fixed point, not a fit). Start from distinct {name}, or use a string init such as 'kmeans'."
        )
    _, first, inverse = np.unique(m, axis=0, return_index=True, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for j in range(k):
        i = first[inverse[j]]
        if i != j:
            raise ValueError(
                f"components {i} and {j} have equal {name}: their responsibilities stay proportional to "
                f"their weights, so EM can never separate them (they act as one component). Start from "
                f"distinct {name}."
            )
