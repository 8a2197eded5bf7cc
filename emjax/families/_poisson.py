"""Poisson components: D independent counts per point.

``p(x | lambda_k) = prod_d lambda_kd^x_d exp(-lambda_kd) / x_d!``, the full
normalised pmf. Statistics are the responsibility-weighted counts and sums
``S_kd = sum_n r_nk x_nd``; the ML M-step is ``lambda_kd = S_kd / N_k`` and the
MAP M-step under a ``Gamma(a, b)`` prior (shape ``a >= 1``, rate ``b > 0``) is
``lambda_kd = (S_kd + a - 1) / (N_k + b)``.

Numerics: ``log_prob`` takes ``max(lambda, tiny)`` (``tiny`` the smallest
normal number of the dtype), so a zero rate (an ML estimate for a feature a
component has only seen zeros of) gives ``log p = 0`` at ``x = 0`` and a very
negative but finite ``log p`` elsewhere, never NaN. It is computed without
cancellation, so float32 agrees with float64 for counts of any size: as
``-sum_d [x_d h((lambda_kd - x_d) / x_d) + c(x_d)]`` with
``h(t) = t - log1p(t)`` (the Poisson deviance over two) and
``c(x) = log x! - x log x + x`` by Stirling's series, instead of
``x log lambda - lambda - log x!``, whose terms grow like ``x log x`` while
their sum grows like ``log x`` (with rates near 1e6, float32 lost 3% of it).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import gammaln

from .._checks import check_finite, check_shape, count_matrix, safe_log
from ._priors import GammaPrior
from ._base import Family

_EXACT = jax.lax.Precision.HIGHEST


def stirling_remainder(x: Array) -> Array:
    """``log x! - (x log x - x)`` for counts ``x >= 0`` (0 at 0), without cancellation.

    Stirling's series ``log(2 pi x) / 2 + 1/(12x) - 1/(360x^3) + 1/(1260x^5) - 1/(1680x^7)``
    from ``x = 15`` (error below 1e-13); the direct formula below, where its
    terms are small.
    """
    big = x >= 15
    xb = jnp.where(big, x, 15.0)
    inv = 1.0 / xb
    inv2 = inv * inv
    series = 0.5 * jnp.log(2 * np.pi * xb) + inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680)))
    xs = jnp.where(big, 0.0, x)
    direct = gammaln(xs + 1) - jax.scipy.special.xlogy(xs, xs) + xs
    return jnp.where(big, series, direct)


class PoissonParams(eqx.Module):
    """Parameters of K Poisson components: ``rates`` ``(K, D)``, non-negative."""

    rates: Array


class PoissonStats(eqx.Module):
    """Statistics of K Poisson components (plain sums, additive leaf-wise).

    Attributes:
        counts: ``(K,)`` sum of responsibilities ``N_k``.
        sums: ``(K, D)`` ``S_kd = sum_n r_nk x_nd``.
    """

    counts: Array
    sums: Array


class Poisson(Family):
    """Components of D independent Poisson counts.

    Args:
        prior: a :class:`GammaPrior` on every rate for MAP-EM, or ``None`` for
            maximum likelihood.

    Example:
        >>> model = emjax.Mixture(Poisson(prior=GammaPrior(2.0, 0.1)), 3)
    """

    prior: GammaPrior | None

    param_groups: ClassVar[tuple[str, ...]] = ("rates",)

    def __init__(self, prior: GammaPrior | None = None):
        if prior is not None and not isinstance(prior, GammaPrior):
            raise TypeError(f"prior must be a GammaPrior or None; got {type(prior).__name__}.")
        self.prior = prior

    def _prior_arrays(self, d: int, dtype):
        a = jnp.broadcast_to(self.prior.shape.astype(dtype), (d,))
        b = jnp.broadcast_to(self.prior.rate.astype(dtype), (d,))
        return a, b

    def log_prob(self, params: PoissonParams, x: Array) -> Array:
        return -jnp.sum(self._deviance(params, x), axis=-1) - jnp.sum(stirling_remainder(x), axis=-1)[:, None]

    def _deviance(self, params: PoissonParams, x: Array) -> Array:
        """``(N, K, D)`` ``lambda - x - x log(lambda / x)``: minus the log density less
        the Stirling remainder of ``log x!`` (no cancellation for large counts)."""
        rates = jnp.maximum(params.rates, jnp.finfo(params.rates.dtype).tiny)[None, :, :]  # (1, K, D)
        xx = x[:, None, :]  # (N, 1, D)
        positive = xx > 0
        safe_x = jnp.where(positive, xx, 1.0)
        t = (rates - xx) / safe_x  # lambda / x - 1, exact to rounding
        # log(lambda / x): log1p near 1 (no cancellation), a plain difference far
        # below it (where log1p(-1 + tiny) would round to -inf). Both branches finite.
        log_ratio = jnp.where(t > -0.5, jnp.log1p(jnp.maximum(t, -0.5)), jnp.log(rates) - jnp.log(safe_x))
        return jnp.where(positive, xx * (t - log_ratio), rates)  # lambda - x - x log(lambda / x) >= 0

    # -- missing entries: the missing features left out, imputed at their means in the statistics

    supports_missing: ClassVar[bool] = True

    def feature_log_prob(self, params: PoissonParams, x: Array) -> Array:
        return -self._deviance(params, x) - stirling_remainder(x)[:, None, :]

    def statistics_observed(self, x0, observed, resp, params: PoissonParams, cache) -> PoissonStats:
        miss = jnp.matmul(resp.T, (~observed).astype(resp.dtype), precision=_EXACT)
        return PoissonStats(jnp.sum(resp, axis=0), jnp.matmul(resp.T, x0, precision=_EXACT) + params.rates * miss)

    def impute(self, params: PoissonParams, x0, observed):
        return jnp.where(observed[:, None, :], x0[:, None, :], params.rates[None])

    def statistics(self, x: Array, resp: Array, params: PoissonParams | None = None) -> PoissonStats:
        return PoissonStats(jnp.sum(resp, axis=0), jnp.matmul(resp.T, x, precision=_EXACT))

    def expected_log_likelihood(self, stats: PoissonStats, params: PoissonParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        rates = params.rates
        return jnp.sum(stats.sums * safe_log(rates)) - jnp.sum(stats.counts * jnp.sum(rates, axis=1))

    def maximize(self, stats: PoissonStats, params=None, frozen: frozenset = frozenset()) -> PoissonParams:
        if "rates" in frozen:
            return PoissonParams(params.rates)
        n = stats.counts[:, None]
        s = stats.sums
        if self.prior is None:
            num, den = s, n
        else:
            a, b = self._prior_arrays(s.shape[1], s.dtype)
            num, den = s + a - 1, n + b
        # An empty component (N_k = 0, ML) gets rate 0 rather than 0/0.
        safe = jnp.where(den > 0, den, 1.0)
        return PoissonParams(jnp.where(den > 0, num / safe, 0.0))

    def log_prior(self, params: PoissonParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.rates.dtype)
        return jnp.sum(self.prior.log_prob(params.rates))

    def seed_points(self, x: Array) -> Array:
        """k-means / random-point seeding runs on the counts themselves."""
        return x

    def init_from_centers(self, x: Array, centers: Array) -> PoissonParams:
        # The centres as rates, shrunk 10% towards the pooled mean so that a zero
        # in a centre does not give a zero rate where the data have counts, and
        # kept above a floor (1e-3 of the mean count, or 1 for all-zero data):
        # a feature without counts must still start inside a Gamma prior's
        # support, where the rate is positive.
        mean = jnp.mean(x, axis=0)
        overall = jnp.mean(mean)
        floor = jnp.where(overall > 0, 1e-3 * overall, 1.0)
        return PoissonParams(jnp.maximum(0.9 * centers + 0.1 * mean[None, :], floor).astype(x.dtype))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "rates" in frozen else n_components * n_features

    def sample(self, key, params: PoissonParams, components: Array) -> Array:
        rates = params.rates[components]
        return jax.random.poisson(key, rates, rates.shape).astype(rates.dtype)

    def moments(self, params: PoissonParams):
        rates = params.rates
        return rates, jax.vmap(jnp.diag)(rates)

    def unconstrain(self, params: PoissonParams) -> dict:
        """``{"log_rates": (K, D)}`` (a zero rate maps to the log of the smallest normal number)."""
        return {"log_rates": safe_log(params.rates)}

    def constrain(self, u: dict) -> PoissonParams:
        """The inverse of :meth:`unconstrain`: ``rates = exp(log_rates)``."""
        return PoissonParams(jnp.exp(u["log_rates"]))

    def degenerate(self, params: PoissonParams, x: Array) -> Array:
        # The Poisson likelihood is bounded (a pmf is <= 1): no singularity, only
        # non-finite parameters are flagged.
        return ~jnp.all(jnp.isfinite(params.rates), axis=1)

    def validate_data(self, x) -> Array:
        return count_matrix(x)

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, PoissonParams):
            raise TypeError(f"Poisson parameters must be a PoissonParams; got {type(params).__name__}.")
        check_shape(params.rates, (n_components, n_features), "rates")
        r = check_finite(params.rates, "rates")
        if r is not None and np.any(r < 0):
            raise ValueError(f"Poisson rates must be non-negative; the smallest is {np.min(r)}.")
