"""Finite mixtures of any component family: the first EMModel."""

from __future__ import annotations

from typing import Any

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import logsumexp, xlogy

from . import _seeding as _init
from .._checks import check_n_components, check_shape, concrete
from ..data._chunks import chunked_map, chunked_sum, default_chunk_size, n_features, n_rows
from .._model import add_stats, scale_stats
from ..families._priors import Dirichlet
from ..families._base import Family

INIT_METHODS = ("kmeans", "kmeans++", "random", "random_resp")


class MixtureParams(eqx.Module):
    """Parameters of a finite mixture.

    Attributes:
        weights: ``(K,)`` mixing proportions, non-negative, summing to 1.
        components: the family's parameters, leading axis ``K``.
    """

    weights: Array
    components: Any


class MixtureStats(eqx.Module):
    """Expected sufficient statistics of a mixture: counts ``(K,)`` and the family's statistics."""

    counts: Array
    components: Any

    def __add__(self, other: "MixtureStats") -> "MixtureStats":
        return MixtureStats(self.counts + other.counts, add_stats(self.components, other.components))

    def __mul__(self, c) -> "MixtureStats":
        return MixtureStats(self.counts * c, scale_stats(self.components, c))


class Mixture(eqx.Module):
    """A finite mixture ``p(x) = sum_k pi_k p(x | theta_k)`` of one component family.

    Implements the EMModel kernels (``e_step``, ``m_step``, ``log_prior``) and the
    everyday API of a fitted mixture. It is a pytree: it goes through ``jit``,
    ``grad`` and ``vmap``.

    Args:
        family: the component family, e.g. ``Gaussian("full")``.
        n_components: K.
        weights_prior: a :class:`Dirichlet` prior on the weights, or ``None``.
        frozen: parameter groups held at their initial values during a fit:
            ``"weights"`` and any of the family's ``param_groups`` (for Gaussians
            ``"means"``, ``"covariances"``). The other groups are maximised
            conditionally on the frozen ones.
        collapse_count: a component whose effective count ``pi_k N`` falls below
            this is reported as collapsed (and re-initialised by
            ``fit(..., reinit_collapsed=True)``), like one whose variance falls
            below the family's ``collapse_tol``; 0 (the default) turns the count
            test off.

    Example:
        >>> model = Mixture(Gaussian("full"), n_components=2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> model.predict(result.params, x)
    """

    family: Family
    n_components: int = eqx.field(static=True)
    weights_prior: Dirichlet | None
    frozen: frozenset = eqx.field(static=True)
    collapse_count: float = eqx.field(static=True)

    def __init__(
        self,
        family: Family,
        n_components: int,
        *,
        weights_prior: Dirichlet | None = None,
        frozen=(),
        collapse_count: float = 0.0,
    ):
        if not isinstance(family, Family):
            raise TypeError(f"family must be an emjax Family, e.g. Gaussian('full'); got {type(family).__name__}.")
        check_n_components(n_components)
        if weights_prior is not None and not isinstance(weights_prior, Dirichlet):
            raise TypeError(f"weights_prior must be a Dirichlet or None; got {type(weights_prior).__name__}.")
        if isinstance(frozen, str):
            frozen = (frozen,)
        allowed = ("weights",) + tuple(family.param_groups)
        unknown = [g for g in frozen if g not in allowed]
        if unknown:
            raise ValueError(f"cannot freeze {unknown}: the parameter groups of this mixture are {allowed}.")
        self.family = family
        self.n_components = int(n_components)
        self.weights_prior = weights_prior
        self.frozen = frozenset(frozen)
        if not (np.isfinite(collapse_count) and collapse_count >= 0):
            raise ValueError(f"collapse_count must be a finite number >= 0; got {collapse_count!r}.")
        self.collapse_count = float(collapse_count)

    # -- EMModel kernels -------------------------------------------------------------

    def log_joint(self, params: MixtureParams, x: Array) -> Array:
        """``log pi_k + log p(x_n | theta_k)``: ``(N, K)``."""
        return self.family.log_prob(params.components, x) + jnp.log(params.weights)[None, :]

    def e_step(self, params: MixtureParams, x: Array, weights: Array | None = None):
        """Responsibility-weighted statistics and the log-likelihood of ``x``.

        Args:
            params: current parameters.
            x: data ``(N, D)``.
            weights: optional ``(N,)`` non-negative per-point weights (repetition counts).

        Returns:
            ``(MixtureStats, loglik)``, ``loglik`` the (weighted) sum over points.
        """
        lj = self.log_joint(params, x)
        ll = logsumexp(lj, axis=1)
        resp = jnp.exp(lj - ll[:, None])
        if weights is not None:
            resp = resp * weights[:, None]
            total = jnp.sum(weights * ll)
        else:
            total = jnp.sum(ll)
        stats = MixtureStats(jnp.sum(resp, axis=0), self.family.statistics(x, resp, params.components))
        return stats, total

    def m_step(self, stats: MixtureStats, params: MixtureParams | None = None) -> MixtureParams:
        """MAP (or ML) parameters from summed statistics; frozen groups keep ``params``' values."""
        frozen = self.frozen if params is not None else frozenset()
        if "weights" in frozen:
            w = params.weights
        elif self.weights_prior is not None:
            w = self.weights_prior.mode(stats.counts)
        else:
            w = stats.counts / jnp.sum(stats.counts)
        family_frozen = frozen - {"weights"}
        comps = self.family.maximize(stats.components, None if params is None else params.components, family_frozen)
        for group in family_frozen:
            comps = eqx.tree_at(lambda p: getattr(p, group), comps, getattr(params.components, group))
        return MixtureParams(w, comps)

    def log_prior(self, params: MixtureParams) -> Array:
        lp = self.family.log_prior(params.components)
        if self.weights_prior is not None:
            lp = lp + self.weights_prior.log_prob(params.weights)
        return lp

    def expected_log_joint(self, stats: MixtureStats, params: MixtureParams) -> Array:
        """``E_q[log p(x, z | params)]`` for the responsibilities that produced ``stats``.

        Linear in ``stats``, exact up to terms free of ``params``: what
        :class:`emjax.IncrementalEM` needs to track its free energy.
        """
        weight_term = jnp.sum(xlogy(stats.counts, params.weights))
        return weight_term + self.family.expected_log_likelihood(stats.components, params.components)

    # -- unconstrained coordinates (gradient ascent) -----------------------------------

    def unconstrain(self, params: MixtureParams) -> dict:
        """``{"log_weights": (K,), "components": family.unconstrain(...)}``.

        The coordinates :class:`emjax.algorithms.GradientAscent` optimises over.
        The log weights are defined up to an additive constant (:meth:`constrain`
        takes a softmax); see the family's ``unconstrain`` for the components.
        """
        log_w = jnp.log(jnp.maximum(params.weights, jnp.finfo(params.weights.dtype).tiny))
        return {"log_weights": log_w, "components": self.family.unconstrain(params.components)}

    def constrain(self, u: dict) -> MixtureParams:
        """The inverse of :meth:`unconstrain`: valid parameters from any real ``u``
        (weights ``softmax(log_weights)``)."""
        return MixtureParams(jax.nn.softmax(u["log_weights"]), self.family.constrain(u["components"]))

    # -- initialisation --------------------------------------------------------------

    def init(self, key, x: Array, method: str = "kmeans") -> MixtureParams:
        """Initial parameters, a pure function of ``key`` (vmap it over restarts).

        Args:
            key: PRNG key.
            x: data ``(N, D)``.
            method: ``"kmeans"`` (k-means++ seeding, 10 Lloyd iterations, then one
                M-step from the hard labels, as scikit-learn's default),
                ``"kmeans++"`` (k-means++ centres as locations, the data's spread),
                ``"random"`` (random distinct points as locations, the data's
                spread) or ``"random_resp"`` (one M-step from random responsibilities).
        """
        k = self.n_components
        seeds = self.family.seed_points(x)
        if method == "kmeans":
            _, labels = _init.kmeans(key, seeds, k)
            return self.init_from_labels(x, labels)
        if method == "random_resp":
            return self.init_from_resp(x, _init.random_responsibilities(key, n_rows(x), k, seeds.dtype))
        if method == "kmeans++":
            centers = _init.kmeans_plus_plus(key, seeds, k)
        elif method == "random":
            centers = _init.random_points(key, seeds, k)
        else:
            raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
        weights = jnp.full((k,), 1.0 / k, dtype=seeds.dtype)
        return MixtureParams(weights, self.family.init_from_centers(x, centers))

    def init_from_resp(self, x: Array, resp: Array) -> MixtureParams:
        """Parameters from one M-step on given responsibilities ``(N, K)``."""
        check_shape(resp, (n_rows(x), self.n_components), "resp")
        resp = jnp.asarray(resp, self.family.seed_points(x).dtype)

        def chunk_stats(xc, rc):
            return MixtureStats(jnp.sum(rc, axis=0), self.family.statistics(xc, rc, None)), jnp.zeros(())

        stats, _ = chunked_sum(chunk_stats, x, resp, self._chunk_size(x))
        return self.m_step(stats, None)

    def init_from_labels(self, x: Array, labels: Array) -> MixtureParams:
        """Parameters from one M-step on hard labels ``(N,)`` in ``0..K-1``."""
        return self.init_from_resp(x, jax.nn.one_hot(labels, self.n_components))

    # -- validation (host side, before compiling) ------------------------------------

    def validate_data(self, x) -> Array:
        x = self.family.validate_data(x)
        check_n_components(self.n_components, n_rows(x))
        if hasattr(self.family, "check_identifiable"):
            # Warns where K components over these features are not identifiable.
            self.family.check_identifiable(self.n_components, n_features(x))
        return x

    def validate_params(self, params, x) -> None:
        if not isinstance(params, MixtureParams):
            raise TypeError(f"mixture parameters must be a MixtureParams; got {type(params).__name__}.")
        k = self.n_components
        check_shape(params.weights, (k,), "weights")
        w = concrete(params.weights)
        if w is not None:
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights must be finite and non-negative; got {w}.")
            if abs(float(np.sum(w, dtype=np.float64)) - 1.0) > 1e-5:
                raise ValueError(f"weights must sum to 1; they sum to {float(np.sum(w, dtype=np.float64))}.")
        self.family.validate_params(params.components, k, n_features(x))

    def collapsed(self, params: MixtureParams, x: Array) -> Array:
        """``(K,)`` booleans: components at a likelihood singularity (the family's
        test, e.g. a variance below ``collapse_tol`` times the data's) or with an
        effective count ``pi_k N`` below ``collapse_count``."""
        few = params.weights * n_rows(x) < self.collapse_count
        return self.family.degenerate(params.components, x) | few

    def reinitialize(self, key, params: MixtureParams, x: Array, mask: Array) -> MixtureParams:
        """``params`` with the components in ``mask`` ``(K,)`` started afresh: a
        random data point as location, the data's spread, weight ``1/K`` (the
        weights renormalised). Frozen groups keep their values.

        Example:
            >>> params = model.reinitialize(key, params, x, model.collapsed(params, x))
        """
        k = self.n_components
        centers = _init.random_points(key, self.family.seed_points(x), k)
        fresh = self.family.init_from_centers(x, centers)
        comps = self.family.replace_components(mask, fresh, params.components)
        for group in self.frozen - {"weights"}:
            comps = eqx.tree_at(lambda p: getattr(p, group), comps, getattr(params.components, group))
        weights = params.weights
        if "weights" not in self.frozen:
            weights = jnp.where(mask, 1.0 / k, weights)
            weights = weights / jnp.sum(weights)
        return MixtureParams(weights, comps)

    # -- the fitted mixture ----------------------------------------------------------

    def _chunk_size(self, x) -> int:
        return default_chunk_size(n_rows(x), self.n_components * n_features(x))

    def _map(self, fn, x):
        x = jax.tree.map(jnp.asarray, x)
        return chunked_map(fn, x, self._chunk_size(x))

    def log_prob(self, params: MixtureParams, x: Array) -> Array:
        """Log density of each point under the mixture: ``(N,)``."""
        return self._map(lambda xc: logsumexp(self.log_joint(params, xc), axis=1), x)

    def posterior(self, params: MixtureParams, x: Array) -> Array:
        """Responsibilities ``p(z = k | x_n)``: ``(N, K)``."""
        return self._map(lambda xc: jax.nn.softmax(self.log_joint(params, xc), axis=1), x)

    def predict(self, params: MixtureParams, x: Array) -> Array:
        """Most probable component of each point: ``(N,)``."""
        return self._map(lambda xc: jnp.argmax(self.log_joint(params, xc), axis=1), x)

    def score(self, params: MixtureParams, x: Array, weights: Array | None = None) -> Array:
        """Mean log-likelihood per point (weighted mean with ``weights``)."""
        lp = self.log_prob(params, x)
        if weights is None:
            return jnp.mean(lp)
        return jnp.sum(weights * lp) / jnp.sum(weights)

    def sample(self, key, params: MixtureParams, n: int) -> tuple[Array, Array]:
        """Ancestral sampling: a component for each point, then the point.

        Returns:
            ``(x (n, D), z (n,))``.
        """
        kz, kx = jax.random.split(key)
        z = jax.random.categorical(kz, jnp.log(params.weights), shape=(n,))
        return self.family.sample(kx, params.components, z), z

    def mean(self, params: MixtureParams) -> Array:
        """``E[x] = sum_k pi_k mu_k``: ``(D,)``."""
        means, _ = self.family.moments(params.components)
        return params.weights @ means

    def covariance(self, params: MixtureParams) -> Array:
        """``cov[x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T``: ``(D, D)``.

        Computed as ``sum_k pi_k (Sigma_k + (mu_k - E[x])(mu_k - E[x])^T)``, the
        same quantity without the cancellation.
        """
        means, covs = self.family.moments(params.components)
        dev = means - params.weights @ means
        return jnp.einsum("k,kde->de", params.weights, covs + dev[:, :, None] * dev[:, None, :])

    def n_parameters(self, n_features: int) -> int:
        """Number of free parameters (frozen groups are not estimated, so not counted)."""
        k = self.n_components
        n_weights = 0 if "weights" in self.frozen else k - 1
        return n_weights + self.family.n_parameters(k, n_features, self.frozen - {"weights"})

    def bic(self, params: MixtureParams, x: Array) -> Array:
        """Bayesian information criterion ``-2 log L + p log N`` (lower is better)."""
        ll = jnp.sum(self.log_prob(params, x))
        return -2 * ll + self.n_parameters(n_features(x)) * jnp.log(n_rows(x))

    def aic(self, params: MixtureParams, x: Array) -> Array:
        """Akaike information criterion ``-2 log L + 2 p`` (lower is better)."""
        return -2 * jnp.sum(self.log_prob(params, x)) + 2 * self.n_parameters(n_features(x))
