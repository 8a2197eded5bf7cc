"""Binomial components: D independent success counts out of a known number of trials.

``p(x | p_k) = prod_d C(n, x_d) p_kd^x_d (1 - p_kd)^(n - x_d)``, the full
normalised pmf, with ``n = n_trials`` the same for every point and feature.
Statistics are the responsibility-weighted successes ``S_kd = sum r x`` and
failures ``F_kd = sum r (n - x)`` (kept separately, so ``n N_k - S_kd`` is never
formed by a cancelling subtraction); the ML M-step is ``p_kd = S_kd / (n N_k)``
and the MAP M-step under a ``Beta(a, b)`` prior (``a, b >= 1``) is
``p_kd = (S_kd + a - 1) / (n N_k + a + b - 2)``.

Numerics: ``log_prob`` clips ``p`` to ``[tiny, 1 - eps/2]`` (``tiny`` the
smallest normal number, ``1 - eps/2`` the largest number below 1), so an ML
probability of exactly 0 or 1 gives ``log p = 0`` for the outcome it allows and
a very negative but finite value elsewhere, never NaN.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import betaln, gammaln, xlog1py, xlogy

from .._checks import check_shape, is_traced
from .._priors import BetaPrior
from ._base import Family
from ._poisson import _check_finite, count_matrix

_EXACT = jax.lax.Precision.HIGHEST


def _clip_prob(p: Array) -> Array:
    """``p`` clipped into ``[tiny, 1 - eps/2]``: both ``log p`` and ``log(1 - p)`` finite."""
    fi = jnp.finfo(p.dtype)
    return jnp.clip(p, fi.tiny, 1 - fi.eps / 2)


class BinomialParams(eqx.Module):
    """Parameters of K binomial components: success ``probs`` ``(K, D)`` in ``[0, 1]``."""

    probs: Array


class BinomialStats(eqx.Module):
    """Statistics of K binomial components (plain sums, additive leaf-wise).

    Attributes:
        counts: ``(K,)`` sum of responsibilities ``N_k``.
        successes: ``(K, D)`` ``S_kd = sum_n r_nk x_nd``.
        failures: ``(K, D)`` ``F_kd = sum_n r_nk (n_trials - x_nd)``.
    """

    counts: Array
    successes: Array
    failures: Array


class Binomial(Family):
    """Components of D independent binomial counts with a known number of trials.

    Args:
        n_trials: the number of trials ``n``, a positive int, the same for every
            point and feature (data are success counts in ``0..n``).
        prior: a :class:`BetaPrior` on every probability for MAP-EM, or ``None``
            for maximum likelihood.

    Example:
        >>> model = emjax.Mixture(Binomial(10), 3)   # the three-coin problem
    """

    n_trials: int = eqx.field(static=True)
    prior: BetaPrior | None

    param_groups: ClassVar[tuple[str, ...]] = ("probs",)

    def __init__(self, n_trials: int, prior: BetaPrior | None = None):
        if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)):
            raise TypeError(f"n_trials must be a positive int; got {n_trials!r}.")
        if n_trials < 1:
            raise ValueError(f"n_trials must be a positive int; got {n_trials}.")
        if prior is not None and not isinstance(prior, BetaPrior):
            raise TypeError(f"prior must be a BetaPrior or None; got {type(prior).__name__}.")
        self.n_trials = int(n_trials)
        self.prior = prior

    def log_prob(self, params: BinomialParams, x: Array) -> Array:
        n = self.n_trials
        p = _clip_prob(params.probs)
        lp = jnp.matmul(x, jnp.log(p).T, precision=_EXACT) + jnp.matmul(n - x, jnp.log1p(-p).T, precision=_EXACT)
        log_binom = gammaln(jnp.asarray(n + 1, x.dtype)) - gammaln(x + 1) - gammaln(n - x + 1)
        return lp + jnp.sum(log_binom, axis=1)[:, None]

    def statistics(self, x: Array, resp: Array, params: BinomialParams | None = None) -> BinomialStats:
        return BinomialStats(
            jnp.sum(resp, axis=0),
            jnp.matmul(resp.T, x, precision=_EXACT),
            jnp.matmul(resp.T, self.n_trials - x, precision=_EXACT),
        )

    def maximize(self, stats: BinomialStats, params=None, frozen: frozenset = frozenset()) -> BinomialParams:
        if "probs" in frozen:
            return BinomialParams(params.probs)
        s, f = stats.successes, stats.failures
        if self.prior is None:
            num, den = s, s + f
        else:
            d = s.shape[1]
            a = jnp.broadcast_to(self.prior.a.astype(s.dtype), (d,))
            b = jnp.broadcast_to(self.prior.b.astype(s.dtype), (d,))
            num, den = s + a - 1, s + f + a + b - 2
        # An empty component without prior pseudo-counts gets 1/2 rather than 0/0.
        safe = jnp.where(den > 0, den, 1.0)
        return BinomialParams(jnp.clip(jnp.where(den > 0, num / safe, 0.5), 0.0, 1.0))

    def log_prior(self, params: BinomialParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.probs.dtype)
        return jnp.sum(self.prior.log_prob(params.probs))

    def seed_points(self, x: Array) -> Array:
        """k-means / random-point seeding runs on the counts themselves (all out of ``n``)."""
        return x

    def init_from_centers(self, x: Array, centers: Array) -> BinomialParams:
        # The centres' success fractions, shrunk 10% towards the pooled fraction so
        # that a 0 or n in a centre does not give a probability of exactly 0 or 1.
        mean = jnp.mean(x, axis=0)
        p = (0.9 * centers + 0.1 * mean[None, :]) / self.n_trials
        return BinomialParams(jnp.clip(p, 0.0, 1.0).astype(x.dtype))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "probs" in frozen else n_components * n_features

    def sample(self, key, params: BinomialParams, components: Array) -> Array:
        p = params.probs[components]
        n = jnp.full(p.shape, self.n_trials, p.dtype)
        return jax.random.binomial(key, n, p, p.shape, dtype=p.dtype)

    def moments(self, params: BinomialParams):
        p = params.probs
        n = self.n_trials
        return n * p, jax.vmap(jnp.diag)(n * p * (1 - p))

    def degenerate(self, params: BinomialParams, x: Array) -> Array:
        # The binomial likelihood is bounded: only non-finite parameters are flagged.
        return ~jnp.all(jnp.isfinite(params.probs), axis=1)

    def validate_data(self, x) -> Array:
        arr = count_matrix(x, what="success counts")
        if not is_traced(arr):
            host = np.asarray(arr)
            over = host > self.n_trials
            if over.any():
                row, col = np.argwhere(over)[0]
                raise ValueError(
                    f"x must hold success counts in 0..n_trials={self.n_trials}; {int(over.sum())} value(s) "
                    f"exceed it, the first {host[row, col]} at row {row}, column {col}."
                )
        return arr

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, BinomialParams):
            raise TypeError(f"Binomial parameters must be a BinomialParams; got {type(params).__name__}.")
        check_shape(params.probs, (n_components, n_features), "probs")
        p = _check_finite(params.probs, "probs")
        if p is not None and (np.any(p < 0) or np.any(p > 1)):
            raise ValueError(f"Binomial probs must lie in [0, 1]; got values in [{np.min(p)}, {np.max(p)}].")
