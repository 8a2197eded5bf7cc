"""Categorical components: D features, each taking one of S categories.

Numerics: a category probability of exactly 0 (a fitted component that never saw
the category) would make ``log p`` ``-inf`` for a point showing it. ``log_prob``
and ``log_prior`` therefore take ``log(max(theta, lo))`` with
``lo = max(eps, 8 finfo(dtype).eps)`` (``eps = 1e-30`` by default, so ``lo`` is
about ``1.8e-15`` in float64 and ``9.5e-7`` in float32): no row of the E-step is
ever all ``-inf``, so no NaN can appear. The M-step itself is the exact closed
form (probabilities below ``lo`` arise only from counts below ``lo N_k``).
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
    not_integer,
    outside,
    raise_first,
)
from ._priors import Dirichlet
from ._base import Family, rows_times
from ._bernoulli import _SMOOTH, _SPREAD, _check_distinct, _smoothing, distinct_pattern, identifiability_problem, prob_floor

_EXACT = jax.lax.Precision.HIGHEST


class CategoricalParams(eqx.Module):
    """Parameters of K categorical components.

    Attributes:
        probs: ``(K, D, S)`` probabilities ``P(x_d = s | z = k)``, summing to 1 over ``s``.
    """

    probs: Array


class CategoricalStats(eqx.Module):
    """Responsibility-weighted category counts (additive leaf by leaf).

    Attributes:
        counts: ``(K, D, S)`` sum of r one_hot(x).
    """

    counts: Array


def _distinct_simplex(shape: tuple[int, int, int], dtype) -> Array:
    """``(K, D, S)`` distributions over ``S``, pairwise distinct between components."""
    u = distinct_pattern(shape, dtype)
    return u / jnp.sum(u, axis=-1, keepdims=True)


class Categorical(Family):
    """Components with D independent categorical features of S categories each
    (latent class analysis).

    ``p(x | theta_k) = prod_d theta_{k, d, x_d}``.

    Args:
        n_categories: S >= 2; the data are integer codes in ``0..S-1``.
        prior: Dirichlet pseudo-counts for MAP-EM: an :class:`emjax.Dirichlet` or its
            ``alpha`` directly, a scalar, an ``(S,)`` or a ``(D, S)`` array, all
            ``>= 1``: ``theta_kd ~ Dirichlet(alpha_d)``, and the MAP M-step is
            ``theta_kds = (N_kds + alpha_ds - 1) / (N_kd + sum_s alpha_ds - S)``.
            ``None`` (or ``alpha = 1``) is maximum likelihood.
        eps: log probabilities are floored at ``log(max(eps, 8 finfo(dtype).eps))``
            (see the module notes).

    Data: ``(N, D)`` integer codes (integer, boolean, or integer-valued floats). They
    are returned as floats of the working precision (float32 codes stay float32;
    the runner takes the precision of a fit from the data).

    Moments: ``moments`` describes the one-hot encoding ``e(x)`` of length ``D S``
    (feature-major: entry ``d S + s`` is ``1[x_d = s]``): the means are
    ``theta_k`` flattened to ``(K, D S)`` and the covariances the block-diagonal
    ``(K, D S, D S)`` matrices with blocks ``diag(theta_kd) - theta_kd theta_kd^T``
    (features are independent given the component). ``Mixture.mean`` and
    ``Mixture.covariance`` are therefore those of the one-hot encoding.

    Seeding: k-means and random-point seeding run on the one-hot encoding
    (``seed_points``); ``init_from_centers`` mixes each centre with the data's
    category frequencies and a small pattern that differs between components, so
    the initial components are always distinct.

    Identifiability: with one feature a K > 1 mixture is not identifiable.
    :meth:`check_identifiable` (called by ``Mixture.validate_data``) warns for K and D, also for D == 2 and for
    more parameters than cells.

    Example:
        >>> model = emjax.Mixture(Categorical(4, prior=2.0), n_components=3)
    """

    n_categories: int = eqx.field(static=True)
    prior: Dirichlet | None
    eps: float = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("probs",)

    def __init__(self, n_categories: int, prior=None, *, eps: float = 1e-30):
        if not isinstance(n_categories, (int, np.integer)) or isinstance(n_categories, bool) or n_categories < 2:
            raise ValueError(f"n_categories must be an integer >= 2; got {n_categories!r}.")
        if prior is not None and not isinstance(prior, Dirichlet):
            try:
                prior = Dirichlet(prior)
            except (TypeError, ValueError) as err:
                raise type(err)(f"prior must be a Dirichlet, or its alpha (>= 1), or None: {err}") from None
        if prior is not None:
            prior.check_interior("Categorical")
            shape = tuple(np.shape(prior.alpha))
            if not (shape == () or shape == (n_categories,) or (len(shape) == 2 and shape[1] == n_categories)):
                raise ValueError(
                    f"the Dirichlet alpha of a Categorical with S={n_categories} categories must be a scalar, "
                    f"({n_categories},) or (D, {n_categories}); got shape {shape}."
                )
        eps = check_number("eps", eps)  # a TypeError naming eps for a string or None
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be a number in (0, 0.5); got {eps}.")
        self.n_categories = int(n_categories)
        self.prior = prior
        self.eps = float(eps)

    # -- helpers ---------------------------------------------------------------------

    def _one_hot(self, x: Array, dtype) -> Array:
        """``(N, D * S)`` one-hot encoding of codes ``(N, D)``."""
        n, d = x.shape
        return jax.nn.one_hot(x.astype(jnp.int32), self.n_categories, dtype=dtype).reshape(n, d * self.n_categories)

    def _alpha(self, n_features: int, dtype) -> Array:
        return jnp.broadcast_to(jnp.asarray(self.prior.alpha, dtype), (n_features, self.n_categories))

    def _log(self, probs: Array) -> Array:
        return jnp.log(jnp.maximum(probs, prob_floor(probs.dtype, self.eps)))

    # -- densities -------------------------------------------------------------------

    # -- missing entries: left out, imputed by their category probabilities in the statistics

    supports_missing: ClassVar[bool] = True

    def feature_log_prob(self, params: CategoricalParams, x: Array) -> Array:
        logp = self._log(params.probs)  # (K, D, S)
        picked = logp[:, jnp.arange(x.shape[1])[None, :], x.astype(jnp.int32)]  # (K, N, D)
        return jnp.swapaxes(picked, 0, 1)

    def statistics_observed(self, x0, observed, resp, params: CategoricalParams, cache) -> CategoricalStats:
        k, d, s = params.probs.shape
        m = observed.astype(resp.dtype)
        onehot = self._one_hot(x0, resp.dtype) * jnp.repeat(m, s, axis=1)
        counts = jnp.matmul(resp.T, onehot, precision=_EXACT).reshape(k, d, s)
        miss = jnp.matmul(resp.T, 1.0 - m, precision=_EXACT)  # (K, D)
        return CategoricalStats(counts + params.probs * miss[:, :, None])

    def impute(self, params: CategoricalParams, x0, observed):
        """Each component's most probable category where a code is missing."""
        mode = jnp.argmax(params.probs, axis=-1).astype(x0.dtype)  # (K, D)
        return jnp.where(observed[:, None, :], x0[:, None, :], mode[None])

    def impute_mixture(self, params: CategoricalParams, x0, observed, posterior):
        # The posterior predictive's most probable category, not a mean of codes.
        predictive = jnp.einsum("nk,kds->nds", posterior, params.probs)
        return jnp.where(observed, x0, jnp.argmax(predictive, axis=-1).astype(x0.dtype))

    def log_prob(self, params: CategoricalParams, x: Array) -> Array:
        k, d, s = params.probs.shape
        logt = self._log(params.probs).reshape(k, d * s)
        dtype = jnp.result_type(logt.dtype, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else logt.dtype
        return rows_times(self._one_hot(x, dtype), logt.astype(dtype))

    # -- statistics and M-step -------------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: CategoricalParams | None = None) -> CategoricalStats:
        n, d = x.shape
        counts = jnp.matmul(resp.T, self._one_hot(x, resp.dtype), precision=_EXACT)
        return CategoricalStats(counts.reshape(resp.shape[1], d, self.n_categories))

    def expected_log_likelihood(self, stats: CategoricalStats, params: CategoricalParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        return jnp.sum(stats.counts * self._log(params.probs))

    def _fallback(self, counts: Array) -> Array:
        """Distinct distributions for (almost) empty components: the pooled category
        frequencies moved a quarter of the way towards a per-component pattern."""
        pooled = jnp.sum(counts, axis=0)
        tot = jnp.sum(pooled, axis=-1, keepdims=True)
        freq = jnp.where(tot > 0, pooled / jnp.where(tot > 0, tot, 1.0), 1.0 / self.n_categories)
        return 0.75 * freq[None] + 0.25 * _distinct_simplex(counts.shape, counts.dtype)

    def maximize(self, stats: CategoricalStats, params=None, frozen: frozenset = frozenset()) -> CategoricalParams:
        if "probs" in frozen:
            return CategoricalParams(params.probs)
        c = stats.counts
        num = c if self.prior is None else c + (self._alpha(c.shape[1], c.dtype) - 1)
        den = jnp.sum(num, axis=-1, keepdims=True)  # N_kd + sum_s alpha_ds - S
        tau = _smoothing(c.dtype)
        return CategoricalParams((num + tau * self._fallback(c)) / (den + tau))

    # -- prior -------------------------------------------------------------------------

    def log_prior(self, params: CategoricalParams) -> Array:
        probs = params.probs
        if self.prior is None:
            return jnp.zeros((), probs.dtype)
        alpha = self._alpha(probs.shape[1], probs.dtype)
        log_norm = gammaln(jnp.sum(alpha, axis=-1)) - jnp.sum(gammaln(alpha), axis=-1)  # (D,)
        return jnp.sum((alpha - 1) * self._log(probs)) + probs.shape[0] * jnp.sum(log_norm)

    # -- initialisation, sampling, moments ---------------------------------------------

    def seed_points(self, x: Array) -> Array:
        """The one-hot encoding ``(N, D S)``: k-means on it is k-modes-like (Hamming distance)."""
        return self._one_hot(x, float_dtype(x.dtype))

    def init_from_centers(self, x: Array, centers: Array) -> CategoricalParams:
        """Components from centres that are rows of ``seed_points(x)`` ``(K, D S)``
        (or, accepted as well, rows of the codes ``x`` ``(K, D)``)."""
        n, d = x.shape
        s = self.n_categories
        k = centers.shape[0]
        dtype = float_dtype(x.dtype)
        if centers.shape[1] == d * s:
            c = jnp.clip(centers.astype(dtype).reshape(k, d, s), 0, None)
            tot = jnp.sum(c, axis=-1, keepdims=True)
            c = jnp.where(tot > 0, c / jnp.where(tot > 0, tot, 1.0), 1.0 / s)
        elif centers.shape[1] == d:
            c = jax.nn.one_hot(jnp.round(centers).astype(jnp.int32), s, dtype=dtype)
        else:
            raise ValueError(f"centers must have D*S={d * s} (one-hot) or D={d} (codes) columns; got {centers.shape}.")
        freq = jnp.mean(self._one_hot(x, dtype), axis=0).reshape(d, s)
        probs = (1 - _SMOOTH - _SPREAD) * c + _SMOOTH * freq[None] + _SPREAD * _distinct_simplex((k, d, s), dtype)
        return CategoricalParams(probs)

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "probs" in frozen else n_components * n_features * (self.n_categories - 1)

    def sample(self, key, params: CategoricalParams, components: Array) -> Array:
        probs = params.probs[components]  # (M, D, S)
        codes = jax.random.categorical(key, jnp.log(probs), axis=-1)
        return codes.astype(params.probs.dtype)

    def moments(self, params: CategoricalParams):
        """Mean ``(K, D S)`` and block-diagonal covariance ``(K, D S, D S)`` of the one-hot encoding."""
        p = params.probs
        k, d, s = p.shape
        blocks = jax.vmap(jax.vmap(jnp.diag))(p) - p[..., :, None] * p[..., None, :]  # (K, D, S, S)
        cov = jnp.einsum("de,kdst->kdset", jnp.eye(d, dtype=p.dtype), blocks).reshape(k, d * s, d * s)
        return p.reshape(k, d * s), cov

    # -- diagnostics and validation ------------------------------------------------------

    def unconstrain(self, params: CategoricalParams) -> dict:
        """``{"log_probs": (K, D, S)}``, the (floored, see the module notes) log
        probabilities, defined up to a constant per feature (``constrain`` takes a
        softmax over the S categories), so any real array is valid."""
        return {"log_probs": self._log(params.probs)}

    def constrain(self, u: dict) -> CategoricalParams:
        """The inverse of :meth:`unconstrain`: ``probs = softmax(log_probs)`` over the last axis."""
        return CategoricalParams(jax.nn.softmax(u["log_probs"], axis=-1))

    def degenerate(self, params: CategoricalParams, x: Array) -> Array:
        # No likelihood singularity: the likelihood of categorical data is bounded by 1.
        return ~jnp.all(jnp.isfinite(params.probs), axis=(-2, -1))

    def check_identifiable(self, n_components: int, n_features: int) -> bool:
        """Warn (``UserWarning``) and return False if a K-component mixture over D
        features is not identifiable: D == 1 (a mixture of categoricals for a single
        draw is one categorical with parameter ``sum_k pi_k theta_k``), D == 2 (a
        non-unique nonnegative matrix factorisation), or more free parameters than
        the ``S^D - 1`` cell probabilities."""
        problem = identifiability_problem(n_components, n_features, self.n_categories)
        if problem is not None:
            warnings.warn(problem, UserWarning, stacklevel=2)
        return problem is None

    def validate_data(self, x) -> Array:
        """Integer codes ``(N, D)`` in ``0..S-1``, returned as floats of the working precision.

        :class:`emjax.Mixture` then calls :meth:`check_identifiable` with its K.
        """
        s = self.n_categories
        if is_traced(x):
            return as_data_matrix(x)
        # Sharded data stay where they are (checked on their devices); the rest is read once.
        # The codes are searched as given, so an integer code is reported as an integer.
        raw = x if is_sharded(x) else np.asarray(x)
        xm = as_data_matrix(raw)  # rank, emptiness, non-numeric, NaN / inf
        if jnp.issubdtype(raw.dtype, jnp.floating):
            raise_first(
                find_first(not_integer, raw), "x", "non-integer value(s)",
                rule=f"Categorical data must be integer category codes in 0..{s - 1}",
            )
        raise_first(
            find_first(outside(0, s - 1), raw), "x", "value(s) out of range",
            rule=f"Categorical data must be codes in 0..{s - 1} (n_categories={s})",
        )
        d = xm.shape[1]
        if self.prior is not None and np.ndim(self.prior.alpha) == 2 and np.shape(self.prior.alpha)[0] != d:
            raise ValueError(f"the Dirichlet alpha has shape {np.shape(self.prior.alpha)} but x has D={d} features.")
        return xm

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, CategoricalParams):
            raise TypeError(f"Categorical parameters must be a CategoricalParams; got {type(params).__name__}.")
        p = check_probabilities(params.probs, (n_components, n_features, self.n_categories), "Categorical probs")
        if p is None:
            return
        sums = p.sum(axis=-1, dtype=np.float64)
        if np.any(np.abs(sums - 1) > 1e-5):
            raise ValueError(f"Categorical probs must sum to 1 over the categories (last axis); sums range "
                             f"from {sums.min()} to {sums.max()}.")
        _check_distinct(p.reshape(p.shape[0], -1), "probs")
