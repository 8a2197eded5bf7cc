"""Multinomial components: each point a vector of counts over D categories.

``p(x | theta_k) = T! / prod_d x_d! * prod_d theta_kd^x_d`` with ``T = sum_d x_d``
the point's total, which may differ from point to point (a document's word
counts, a sample's allele counts). Statistics are the responsibility-weighted
category counts ``S_kd = sum_n r_nk x_nd``; the ML M-step is
``theta_kd = S_kd / sum_d S_kd`` and the MAP M-step under a Dirichlet prior
with pseudo-counts ``alpha >= 1`` (scalar or ``(D,)``; :class:`emjax.Dirichlet`)
is ``theta_kd = (S_kd + alpha_d - 1) / (sum_d S_kd + sum_d alpha_d - D)``.

Numerics: ``log_prob`` takes ``log(max(theta, tiny))``, so a category an ML
component has never seen gives a very negative but finite ``log p``, never NaN.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import gammaln

from ._priors import Dirichlet
from ._base import Family, rows_times
from ._bernoulli import prob_floor
from .._checks import check_probabilities, count_matrix, safe_log

_EXACT = jax.lax.Precision.HIGHEST


class MultinomialParams(eqx.Module):
    """Parameters of K multinomial components: category ``probs`` ``(K, D)``, rows on the simplex."""

    probs: Array


class MultinomialStats(eqx.Module):
    """Statistics of K multinomial components (plain sums, additive leaf-wise).

    Attributes:
        counts: ``(K,)`` sum of responsibilities ``N_k`` (points, not draws).
        sums: ``(K, D)`` ``S_kd = sum_n r_nk x_nd``.
    """

    counts: Array
    sums: Array


class Multinomial(Family):
    """Components of multinomial count vectors over D categories.

    Args:
        prior: a :class:`emjax.Dirichlet` on every component's probabilities
            (``alpha`` a scalar or ``(D,)``, ``>= 1``) for MAP-EM, or ``None`` for
            maximum likelihood.
        n_draws: the total used by :meth:`sample` and :meth:`moments` (a
            component alone does not say how many draws a point has); fitting
            accepts any totals. ``1`` gives one-hot categorical samples.

    Example:
        >>> model = emjax.Mixture(Multinomial(prior=emjax.Dirichlet(1.5)), 4)
    """

    prior: Dirichlet | None
    n_draws: int = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("probs",)

    def __init__(self, prior: Dirichlet | None = None, *, n_draws: int = 1):
        if prior is not None and not isinstance(prior, Dirichlet):
            raise TypeError(f"prior must be an emjax.Dirichlet or None; got {type(prior).__name__}.")
        if prior is not None:
            prior.check_interior("Multinomial")
        if prior is not None and np.ndim(prior.alpha) > 1:
            raise ValueError(f"the Dirichlet alpha must be a scalar or (D,); got shape {np.shape(prior.alpha)}.")
        if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
            raise ValueError(f"n_draws must be a positive int; got {n_draws!r}.")
        self.prior = prior
        self.n_draws = int(n_draws)

    def log_prob(self, params: MultinomialParams, x: Array) -> Array:
        lp = rows_times(x, safe_log(params.probs))
        log_coef = gammaln(jnp.sum(x, axis=1) + 1) - jnp.sum(gammaln(x + 1), axis=1)
        return lp + log_coef[:, None]

    def statistics(self, x: Array, resp: Array, params: MultinomialParams | None = None) -> MultinomialStats:
        return MultinomialStats(jnp.sum(resp, axis=0), jnp.matmul(resp.T, x, precision=_EXACT))

    def expected_log_likelihood(self, stats: MultinomialStats, params: MultinomialParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        return jnp.sum(stats.sums * safe_log(params.probs))

    def maximize(self, stats: MultinomialStats, params=None, frozen: frozenset = frozenset()) -> MultinomialParams:
        if "probs" in frozen:
            return MultinomialParams(params.probs)
        s = stats.sums
        d = s.shape[1]
        num = s if self.prior is None else s + self.prior.concentration(d, s.dtype) - 1
        den = jnp.sum(num, axis=1, keepdims=True)
        # A component with no draws (and no pseudo-counts) gets the uniform 1/D rather than 0/0.
        safe = jnp.where(den > 0, den, 1.0)
        return MultinomialParams(jnp.where(den > 0, num / safe, 1.0 / d))

    def log_prior(self, params: MultinomialParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.probs.dtype)
        return jnp.sum(jax.vmap(self.prior.log_prob)(params.probs))

    def seed_points(self, x: Array) -> Array:
        """Seeding runs on each point's category proportions (its totals may differ)."""
        total = jnp.sum(x, axis=1, keepdims=True)
        return x / jnp.where(total > 0, total, 1.0)

    def init_from_centers(self, x: Array, centers: Array) -> MultinomialParams:
        # Rows of the centres normalised (so raw count rows and proportions both
        # work), shrunk 10% towards the pooled proportions so that no category
        # starts at probability 0 where the data have draws.
        total = jnp.sum(centers, axis=1, keepdims=True)
        c = centers / jnp.where(total > 0, total, 1.0)
        pooled = jnp.sum(x, axis=0)
        pooled = pooled / jnp.maximum(jnp.sum(pooled), 1.0)
        p = 0.9 * c + 0.1 * pooled[None, :]
        p_total = jnp.sum(p, axis=1, keepdims=True)
        d = x.shape[1]
        p = jnp.where(p_total > 0, p / jnp.where(p_total > 0, p_total, 1.0), 1.0 / d)
        # Every category above a floor, so that one never drawn still starts where a
        # Dirichlet prior's density is finite.
        p = jnp.maximum(p, prob_floor(p.dtype, 0.0))
        return MultinomialParams((p / jnp.sum(p, axis=1, keepdims=True)).astype(x.dtype))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "probs" in frozen else n_components * (n_features - 1)

    def sample(self, key, params: MultinomialParams, components: Array) -> Array:
        """``n_draws`` draws per point, by conditional binomials over the categories."""
        p = params.probs[components]  # (M, D)
        m, d = p.shape
        # theta_d / (1 - sum_{j<d} theta_j): the conditional probability of category d.
        tail = jnp.flip(jnp.cumsum(jnp.flip(p, axis=1), axis=1), axis=1)  # sum_{j>=d} theta_j
        cond = jnp.clip(p / jnp.where(tail > 0, tail, 1.0), 0.0, 1.0)
        keys = jax.random.split(key, d)

        def step(remaining, inp):
            k, q = inp
            draw = jax.random.binomial(k, remaining, q, (m,), dtype=p.dtype)
            draw = jnp.minimum(draw, remaining)
            return remaining - draw, draw

        remaining0 = jnp.full((m,), self.n_draws, p.dtype)
        last, draws = jax.lax.scan(step, remaining0, (keys[: d - 1], cond[:, : d - 1].T))
        return jnp.concatenate([draws.T, last[:, None]], axis=1)

    def moments(self, params: MultinomialParams):
        """Mean ``n theta`` and covariance ``n (diag(theta) - theta theta^T)`` of ``n_draws`` draws."""
        p = params.probs
        n = self.n_draws
        cov = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
        return n * p, n * cov

    def unconstrain(self, params: MultinomialParams) -> dict:
        """``{"log_probs": (K, D)}``, defined up to a constant per row (``constrain``
        takes a softmax over the categories), so any real row is valid."""
        return {"log_probs": safe_log(params.probs)}

    def constrain(self, u: dict) -> MultinomialParams:
        """The inverse of :meth:`unconstrain`: ``probs = softmax(log_probs)`` over the categories."""
        return MultinomialParams(jax.nn.softmax(u["log_probs"], axis=-1))

    def degenerate(self, params: MultinomialParams, x: Array) -> Array:
        # The multinomial likelihood is bounded: only non-finite parameters are flagged.
        return ~jnp.all(jnp.isfinite(params.probs), axis=1)

    def validate_data(self, x) -> Array:
        arr = count_matrix(x, what="category counts")
        if arr.shape[1] < 2:
            raise ValueError(
                f"Multinomial data need at least 2 categories (columns); got shape {arr.shape}. "
                f"For one count per point use Poisson or Binomial."
            )
        if self.prior is not None and np.ndim(self.prior.alpha) == 1 and np.shape(self.prior.alpha)[0] != arr.shape[1]:
            raise ValueError(
                f"the Dirichlet alpha has {np.shape(self.prior.alpha)[0]} entries but the data have "
                f"{arr.shape[1]} categories."
            )
        return arr

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, MultinomialParams):
            raise TypeError(f"Multinomial parameters must be a MultinomialParams; got {type(params).__name__}.")
        p = check_probabilities(params.probs, (n_components, n_features), "Multinomial probs")
        if p is None:
            return
        sums = p.sum(axis=1, dtype=np.float64)
        if np.any(np.abs(sums - 1) > 1e-5):
            raise ValueError(f"every row of Multinomial probs must sum to 1; the row sums are {sums}.")
