"""Finite mixtures of any component family: the first EMModel."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import logsumexp

from . import _seeding as _init
from ._gating import ConstantGating, Gating
from .._checks import (
    as_data_matrix,
    as_sample_weights,
    check_dense,
    check_key,
    check_labels,
    check_n_components,
    check_number,
    check_responsibilities,
    concrete,
    float_dtype,
    is_traced,
)
from .._chunks import chunked_sum, compiled, default_chunk_size, n_features, n_rows, rowwise
from .._model import EMModel, add_stats, scale_stats
from ..families._priors import Dirichlet
from ..families._base import Family
from ..families._covariance import MatrixStructure

INIT_METHODS = ("kmeans", "kmeans++", "random", "random_resp")


class MixtureParams(eqx.Module):
    """Parameters of a finite mixture.

    Attributes:
        weights: the gating's parameters: for constant weights (the default
            gating) the ``(K,)`` mixing proportions, non-negative, summing to 1.
        components: the family's parameters, leading axis ``K``.
    """

    weights: Array
    components: Any


class MixtureStats(eqx.Module):
    """Expected sufficient statistics of a mixture.

    Attributes:
        counts: ``(K,)`` effective counts ``sum_n r_nk``.
        components: the family's statistics.
        gating: the gating's statistics; ``None`` when the counts are all it
            needs (constant weights).
    """

    counts: Array
    components: Any
    gating: Any = None

    def __add__(self, other: "MixtureStats") -> "MixtureStats":
        return MixtureStats(
            self.counts + other.counts,
            add_stats(self.components, other.components),
            add_stats(self.gating, other.gating),
        )

    def __mul__(self, c) -> "MixtureStats":
        return MixtureStats(self.counts * c, scale_stats(self.components, c), scale_stats(self.gating, c))


def _log_normalize(lj: Array) -> tuple[Array, Array]:
    """``(logsumexp_k lj, softmax_k lj)`` of an ``(N, K)`` log joint with one ``exp``
    per element (logsumexp then ``exp(lj - ll)`` takes two; the exponential is a
    diagonal or spherical E-step's largest cost on a CPU). Rows that are all
    ``-inf`` give ``-inf`` and NaN responsibilities, as logsumexp then exp does."""
    top = jax.lax.stop_gradient(jnp.max(lj, axis=1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.exp(lj - top)
    total = jnp.sum(e, axis=1, keepdims=True)
    return top[:, 0] + jnp.log(total[:, 0]), e / total


class Mixture(EMModel):
    """A finite mixture ``p(x) = sum_k pi_k p(x | theta_k)`` of one component family.

    Implements the :class:`emjax.EMModel` contract and the everyday API of a
    fitted mixture. It is a pytree: it goes through ``jit``, ``grad`` and ``vmap``.
    The weights come from a gating component (:class:`ConstantGating`, one
    weight vector, by default); ``MixtureParams.weights`` holds its parameters.

    Args:
        family: the component family, e.g. ``Gaussian("full")``.
        n_components: K.
        gating: where the weights come from, a :class:`Gating`; ``None`` means
            ``ConstantGating(weights_prior)``.
        weights_prior: a :class:`Dirichlet` prior on constant weights, or
            ``None``: a shortcut for ``gating=ConstantGating(weights_prior)``
            (give one of the two).
        frozen: parameter groups held at their initial values during a fit:
            ``"weights"`` (the gating's parameters) and any of the family's
            ``param_groups`` (for Gaussians ``"means"``, ``"covariances"``). The
            other groups are maximised conditionally on the frozen ones.
        collapse_count: a component whose effective count ``pi_k N`` falls below
            this is reported as collapsed (and re-initialised by
            ``fit(..., reinit_collapsed=True)``), like one whose variance falls
            below the family's ``collapse_tol``; 0 (the default) turns the count
            test off.
        missing: treat NaN entries as missing at random (Gaussian, Student-t,
            Bernoulli, Categorical, Poisson, Binomial components). The likelihood
            is that of each point's observed entries; the E-step adds each
            component's conditional expectations of the missing entries (and, for
            Gaussian and Student-t, their conditional covariances) to the
            statistics, so the M-step is the complete-data one (the lecture's
            missing-data EM). Rows with every entry missing are refused. The
            initialisations run on the data with each missing entry replaced by
            its column's observed mean. Without it, NaN is refused. Costs: an
            ``(N, K, D, D)`` Cholesky per chunk for full and tied covariances.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()   # eruption and waiting times, (272, 2)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), n_components=2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> print(np.asarray(result.params.components.means).round(2))
        [[ 4.29 79.97]
         [ 2.04 54.48]]
        >>> np.bincount(model.predict(result.params, x))
        array([175,  97])
    """

    family: Family
    n_components: int = eqx.field(static=True)
    gating: Gating
    frozen: frozenset = eqx.field(static=True)
    collapse_count: float = eqx.field(static=True)
    missing: bool = eqx.field(static=True)

    init_methods: ClassVar[tuple[str, ...]] = INIT_METHODS
    e_step_options: ClassVar[tuple[str, ...]] = ("temperature", "assignment", "key", "n_samples")
    assignments: ClassVar[tuple[str, ...]] = ("soft", "hard", "sample")

    def __init__(
        self,
        family: Family,
        n_components: int,
        *,
        gating: Gating | None = None,
        weights_prior: Dirichlet | None = None,
        frozen=(),
        collapse_count: float = 0.0,
        missing: bool = False,
    ):
        if not isinstance(family, Family):
            raise TypeError(f"family must be an emjax Family, e.g. Gaussian('full'); got {type(family).__name__}.")
        check_n_components(n_components)
        if weights_prior is not None and not isinstance(weights_prior, Dirichlet):
            raise TypeError(f"weights_prior must be a Dirichlet or None; got {type(weights_prior).__name__}.")
        if gating is None:
            gating = ConstantGating(weights_prior)
        elif weights_prior is not None:
            raise ValueError(
                "give either gating= or weights_prior=, not both: weights_prior=p is a shortcut for "
                "gating=ConstantGating(p)."
            )
        elif not isinstance(gating, Gating):
            raise TypeError(f"gating must be an emjax Gating, e.g. ConstantGating(); got {type(gating).__name__}.")
        if isinstance(getattr(gating, "prior", None), Dirichlet):
            # A (K',) alpha for K != K' would fail only as a broadcasting error while tracing.
            gating.prior.check_components(int(n_components))
        if isinstance(frozen, str):
            frozen = (frozen,)
        if not isinstance(frozen, (tuple, list, set, frozenset)) or not all(isinstance(g, str) for g in frozen):
            raise TypeError(f"frozen must be a group name or a sequence of group names; got {frozen!r}.")
        allowed = ("weights",) + tuple(family.param_groups)
        unknown = [g for g in frozen if g not in allowed]
        if unknown:
            raise ValueError(f"cannot freeze {unknown}: the parameter groups of this mixture are {allowed}.")
        self.family = family
        self.n_components = int(n_components)
        self.gating = gating
        self.frozen = frozenset(frozen)
        self.collapse_count = check_number("collapse_count", collapse_count, low=0.0)
        if not isinstance(missing, (bool, np.bool_)):
            raise TypeError(f"missing must be True or False; got {missing!r}.")
        if missing and not family.supports_missing:
            raise ValueError(
                f"{type(family).__name__} components do not support missing entries (missing=True): "
                "Gaussian, StudentT, Bernoulli, Categorical, Poisson and Binomial(n_trials) do."
            )
        self.missing = bool(missing)

    @property
    def weights_prior(self) -> Dirichlet | None:
        """The gating's prior on the weights (``None`` without one, or for a gating that has none)."""
        return getattr(self.gating, "prior", None)

    # -- EMModel kernels -------------------------------------------------------------

    def log_joint(self, params: MixtureParams, x: Array) -> Array:
        """``log pi_k + log p(x_n | theta_k)``: ``(N, K)``."""
        return self._log_joint_and_cache(params, x)[0]

    def _log_joint_and_cache(self, params: MixtureParams, x: Array):
        if self.missing:
            observed = ~jnp.isnan(x)
            x0 = jnp.where(observed, x, 0.0)
            lp, cache = self.family.log_prob_observed(params.components, x0, observed)
            cache = (x0, observed, cache)
            x = x0  # a covariate-dependent gating sees 0 at the missing entries
        else:
            lp, cache = self.family.log_prob_and_cache(params.components, x)
        log_w = self.gating.log_weights(params.weights, x)
        if log_w.ndim == 1:
            log_w = log_w[None, :]
        return lp + log_w, cache

    def _fitting_log_joint(self, params: MixtureParams, x: Array):
        """The log joint of the fitting density (less the family's ``fit_penalty``) and the cache."""
        lj, cache = self._log_joint_and_cache(params, x)
        return lj - self.family.fit_penalty(params.components)[None, :], cache

    def _statistics(self, x, resp, components, cache):
        if self.missing:
            x0, observed, cache = cache
            return self.family.statistics_observed(x0, observed, resp, components, cache)
        return self.family.cached_statistics(x, resp, components, cache)

    def e_step(
        self,
        params: MixtureParams,
        x: Array,
        weights: Array | None = None,
        *,
        temperature=1.0,
        assignment: str = "soft",
        key=None,
        n_samples=1,
    ):
        """Responsibility-weighted statistics and the log-likelihood of ``x``.

        Args:
            params: current parameters.
            x: data ``(N, D)``.
            weights: optional ``(N,)`` non-negative per-point weights (repetition counts).
            temperature: the responsibilities are ``softmax(log_joint / temperature)``,
                a tempered posterior (deterministic annealing, Ueda & Nakano 1998);
                a positive scalar, traced or not. 1 is the posterior itself.
            assignment: how the latent classes enter the statistics: ``"soft"``
                (the posterior probabilities: EM), ``"hard"`` (each point wholly
                in its most probable class: classification EM, Celeux & Govaert
                1992) or ``"sample"`` (classes drawn from the posterior:
                stochastic and Monte-Carlo EM).
            key: the PRNG key of ``assignment="sample"``.
            n_samples: draws per point under ``"sample"``, averaged (a positive
                count, traced or not: Monte-Carlo EM grows it).

        Returns:
            ``(MixtureStats, loglik)``, ``loglik`` the (weighted) sum over points
            of the log-likelihood ``logsumexp_k log_joint``, whatever the
            temperature; under ``assignment="hard"`` the classification
            log-likelihood ``max_k log_joint`` instead, which classification EM
            increases. Both use the fitting density: each component's log
            density less the family's ``fit_penalty`` (a Gaussian's
            ``reg_covar``; none for the other families), so that EM increases
            exactly the objective it reports.

        Example:
            >>> import equinox as eqx
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> params = model.init(jax.random.key(0), x)
            >>> e_step = eqx.filter_jit(model.e_step)   # compiled, as a fit runs it
            >>> stats, loglik = e_step(params, x)
            >>> stats, tempered = e_step(params, x, temperature=4.0)   # flatter responsibilities
            >>> bool(jnp.isclose(loglik, tempered))   # the log-likelihood whatever the temperature
            True
            >>> stats, _ = e_step(params, x, assignment="sample", key=jax.random.key(1))
            >>> print(stats.counts.sum())   # one class drawn per point
            272.0
        """
        lj, cache = self._fitting_log_joint(params, x)
        ll, resp = latent_posterior(lj, temperature=temperature, assignment=assignment, key=key, n_samples=n_samples)
        if weights is not None:
            resp = resp * weights[:, None]
            total = jnp.sum(weights * ll)
        else:
            total = jnp.sum(ll)
        xg = cache[0] if self.missing else x
        gating_stats = None if self.gating.counts_suffice else self.gating.statistics(xg, resp, params.weights)
        components = self._statistics(x, resp, params.components, cache)
        return MixtureStats(jnp.sum(resp, axis=0), components, gating_stats), total

    def _gating_stats(self, stats: MixtureStats):
        # A gating whose statistics are the counts stores none of its own (see Gating.counts_suffice).
        return stats.counts if self.gating.counts_suffice else stats.gating

    def m_step(self, stats: MixtureStats, params: MixtureParams | None = None) -> MixtureParams:
        """MAP (or ML) parameters from summed statistics; frozen groups keep ``params``' values."""
        frozen = self.frozen if params is not None else frozenset()
        family_frozen = frozen - {"weights"}
        weights = self.gating.maximize(self._gating_stats(stats), None if params is None else params.weights)
        comps = self.family.maximize(stats.components, None if params is None else params.components, family_frozen)
        if params is not None:
            comps = self._keep_dropped(weights, comps, params.components)
        new = MixtureParams(weights, comps)
        return new if params is None else self.hold_frozen(new, params)

    def _keep_dropped(self, weights, new, old):
        """``new`` components, except that a component whose constant weight is exactly 0
        (dropped: it takes no point, as the components beyond K of :func:`emjax.select`)
        keeps ``old``'s parameters rather than an M-step from no data."""
        if not isinstance(self.gating, ConstantGating):
            return new
        # The kept components from the M-step, the dropped ones as they were: a shared
        # parameter (a tied covariance) comes from the M-step whenever any component is kept.
        return self.family.replace_components(weights > 0, new, old)

    @property
    def param_groups(self) -> tuple[str, ...]:
        """The groups a fit estimates: ``"weights"`` and the family's ``param_groups``, less the frozen ones."""
        return tuple(g for g in ("weights",) + tuple(self.family.param_groups) if g not in self.frozen)

    def conditional_m_step(self, stats: MixtureStats, params: MixtureParams, groups) -> MixtureParams:
        """The M-step over ``groups`` (names from :attr:`param_groups`), every other
        group held at ``params``' values (e.g. a Gaussian's covariances about the
        given means when only ``"covariances"`` is maximised)."""
        groups = tuple(groups)
        unknown = [g for g in groups if g not in self.param_groups]
        if unknown:
            raise ValueError(f"cannot maximise {unknown}: this mixture's parameter groups are {self.param_groups}.")
        held = frozenset(("weights",) + tuple(self.family.param_groups)) - set(groups)
        weights = (
            params.weights if "weights" in held
            else self.gating.maximize(self._gating_stats(stats), params.weights)
        )
        comps = self.family.maximize(stats.components, params.components, held - {"weights"})
        return MixtureParams(weights, self._keep_dropped(weights, comps, params.components))

    @property
    def refine_passes(self) -> int:
        """The family's passes over the data after each M-step (a Student-t's ECME; else 0)."""
        return getattr(self.family, "refine_passes", 0)

    def refine(self, params: MixtureParams, new: MixtureParams, data) -> MixtureParams:
        """The family's conditional maximisations over the data (:meth:`emjax.StudentT.refine`)."""
        if not self.refine_passes:
            return new
        comps = self.family.refine(self, params, new.components, data, self.frozen - {"weights"})
        return MixtureParams(new.weights, self._keep_dropped(new.weights, comps, new.components))

    def responsibilities(self, params: MixtureParams, x: Array) -> Array:
        """``(N, K)`` the E-step's responsibilities (of the fitting density; see :meth:`e_step`)."""
        return _log_normalize(self._fitting_log_joint(params, x)[0])[1]

    def hold_frozen(self, params: MixtureParams, reference: MixtureParams) -> MixtureParams:
        """``params`` with the frozen groups (``frozen``: the weights, the family's
        ``param_groups``) taken from ``reference``, and the components dropped in
        ``reference`` (constant weight exactly 0) kept at weight 0.

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2, frozen="means")
            >>> old = model.init(jax.random.key(0), x)
            >>> new = model.init(jax.random.key(1), x, "random")
            >>> model.hold_frozen(new, old).components.means is old.components.means
            True
        """
        ref = concrete(reference.weights)
        if isinstance(self.gating, ConstantGating) and "weights" not in self.frozen and (ref is None or np.any(ref == 0)):
            # A dropped component (weight exactly 0 in ``reference``) stays dropped: a
            # softmax of unconstrained coordinates would give it 1e-308 instead of 0.
            dropped = reference.weights == 0
            kept = jnp.where(dropped, 0.0, params.weights)
            weights = jnp.where(jnp.any(dropped), kept / jnp.sum(kept), params.weights)
            params = MixtureParams(weights, params.components)
        if not self.frozen:
            return params
        weights = reference.weights if "weights" in self.frozen else params.weights
        comps = params.components
        for group in sorted(self.frozen - {"weights"}):
            comps = eqx.tree_at(lambda p: getattr(p, group), comps, getattr(reference.components, group))
        return MixtureParams(weights, comps)

    def log_prior(self, params: MixtureParams) -> Array:
        """The family's log prior plus the gating's (0 without priors); with constant
        weights, of the kept components only (a dropped one, of weight exactly 0, is
        not in the model: :meth:`emjax.families.Family.kept_log_prior`)."""
        if isinstance(self.gating, ConstantGating) and getattr(self.family, "prior", None) is not None:
            components = self.family.kept_log_prior(params.components, params.weights > 0)
        else:
            components = self.family.log_prior(params.components)
        return components + self.gating.log_prior(params.weights)

    def expected_log_joint(self, stats: MixtureStats, params: MixtureParams) -> Array:
        """``E_q[log p(x, z | params)]`` for the responsibilities that produced ``stats``.

        Linear in ``stats``, exact up to terms free of ``params``: what
        :class:`emjax.IncrementalEM` needs to track its free energy.
        """
        weight_term = self.gating.expected_log_likelihood(self._gating_stats(stats), params.weights)
        return weight_term + self.family.expected_log_likelihood(stats.components, params.components)

    def provides(self, name: str) -> bool:
        """:meth:`EMModel.provides`; ``expected_log_joint`` only where the family and
        the gating both compute their expected log-likelihoods from the statistics
        (not a :class:`emjax.LogisticExpert` or a :class:`emjax.SoftmaxGating`, whose
        statistics are gradients at the E-step's parameters)."""
        if name == "expected_log_joint":
            return _overrides(self.family, Family, "expected_log_likelihood") and _overrides(
                self.gating, Gating, "expected_log_likelihood"
            )
        if name in ("unconstrain", "constrain"):
            return self.family.has_unconstrained_coordinates
        return super().provides(name)

    def adapt(self, x: Array, weights: Array | None = None) -> "Mixture":
        """The mixture with its family's data-measured constants set from ``x``
        (an :class:`emjax.data.Data`, or ``(N, D)`` data with optional ``(N,)``
        weights; :meth:`emjax.Gaussian.adapt`: the regularisation's scale)."""
        return eqx.tree_at(lambda m: m.family, self, self.family.adapt(x, weights))

    # -- unconstrained coordinates (gradient ascent) -----------------------------------

    def unconstrain(self, params: MixtureParams) -> dict:
        """``{"weights": gating.unconstrain(...), "components": family.unconstrain(...)}``.

        The coordinates :class:`emjax.algorithms.GradientAscent` optimises over.
        Constant weights map to their logs, defined up to an additive constant
        (:meth:`constrain` takes a softmax); see the family's ``unconstrain`` for
        the components.
        """
        return {
            "weights": self.gating.unconstrain(params.weights),
            "components": self.family.unconstrain(params.components),
        }

    def constrain(self, u: dict) -> MixtureParams:
        """The inverse of :meth:`unconstrain`: valid parameters from any real ``u``
        (constant weights ``softmax(u["weights"])``)."""
        return MixtureParams(self.gating.constrain(u["weights"]), self.family.constrain(u["components"]))

    # -- initialisation --------------------------------------------------------------

    def init(self, key, x: Array, method: str = "kmeans") -> MixtureParams:
        """Initial parameters, a pure function of ``key`` (vmap it over restarts).

        Args:
            key: PRNG key.
            x: data ``(N, D)``, a JAX or NumPy array.
            method: ``"kmeans"`` (k-means++ seeding, 10 Lloyd iterations, then one
                M-step from the hard labels, as scikit-learn's default),
                ``"kmeans++"`` (k-means++ centres as locations, the data's spread),
                ``"random"`` (random distinct points as locations, the data's
                spread) or ``"random_resp"`` (one M-step from random responsibilities).
        """
        if method not in INIT_METHODS:
            raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
        return self._init(key, x, method)

    @compiled
    def _init(self, key, x, method: str) -> MixtureParams:
        # One program per configuration and shape: run op by op, the seeding loops were
        # traced and compiled again on every call (and their programs never freed).
        x = self._filled(x)
        k = self.n_components
        seeds = self.family.seed_points(x)
        if method == "kmeans":
            _, labels = _init.kmeans(key, seeds, k)
            return self._m_step_from_resp(x, labels=labels)
        if method == "random_resp":
            return self._m_step_from_resp(x, _init.random_responsibilities(key, n_rows(x), k, seeds.dtype))
        if method == "kmeans++":
            centers = _init.kmeans_plus_plus(key, seeds, k)
        else:
            centers = _init.random_points(key, seeds, k)
        return MixtureParams(self.gating.init(k, seeds.dtype, x), self.family.init_from_centers(x, centers))

    def init_active(self, key, x: Array, active: Array, method: str = "kmeans") -> MixtureParams:
        """Initial parameters of a mixture of the first ``K'`` components only: the others
        get weight exactly 0 (dropped; :meth:`m_step` keeps them so), a pure function of
        ``key`` and the traced ``(K,)`` mask ``active`` (its first ``K'`` entries true).

        :func:`emjax.select` vmaps it over ``K'`` and restarts, so one compiled fit
        serves every ``K' <= K``. ``"kmeans"`` clusters with the active centres only
        (the first ``K'`` of a k-means++ sequence are a k-means++ seeding of ``K'``);
        the other methods start the active components as :meth:`init` does.

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 5)
            >>> p = model.init_active(jax.random.key(0), x, jnp.arange(5) < 2)   # 2 of 5 components
            >>> print(p.weights > 0)
            [ True  True False False False]
        """
        if not isinstance(self.gating, ConstantGating):
            raise TypeError("init_active needs constant weights (ConstantGating): dropped components have weight 0.")
        if method not in INIT_METHODS:
            raise ValueError(f"unknown init method {method!r}; choose one of {INIT_METHODS}.")
        return self._init_active(key, x, active, method)

    @compiled
    def _init_active(self, key, x, active, method: str) -> MixtureParams:
        if method == "kmeans":
            x = self._filled(x)
            _, labels = _init.kmeans(key, self.family.seed_points(x), self.n_components, active=active)
            params = self._m_step_from_resp(x, labels=labels)
        else:
            params = self._init(key, x, method)
        weights = jnp.where(active, params.weights, 0.0)
        return MixtureParams(weights / jnp.sum(weights), params.components)

    def init_from_resp(self, x: Array, resp: Array) -> MixtureParams:
        """Parameters from one M-step on given responsibilities ``(N, K)``.

        Args:
            x: data ``(N, D)``.
            resp: ``(N, K)`` non-negative, finite weights of every point over the
                components; each row must have a positive sum (rows need not sum to 1).

        Raises:
            TypeError / ValueError: invalid ``x`` (as for :meth:`log_prob`), or
                ``resp`` of the wrong shape, with a negative or non-finite entry,
                or with a row of zeros (checked on concrete values; under tracing
                only the shapes).
        """
        x = self._filled(self._concrete_rows(x))
        check_responsibilities(resp, n_rows(x), self.n_components)
        return self._m_step_from_resp(x, resp)

    def _concrete_rows(self, x):
        """``x`` checked by :meth:`validate_rows` when concrete; traced data (``init``
        inside the compiled fit, already checked) pass as they are."""
        if any(is_traced(a) for a in jax.tree.leaves(x)):
            return x
        return self.validate_rows(x)

    @compiled
    def _m_step_from_resp(self, x, resp=None, *, labels=None) -> MixtureParams:
        """One M-step from responsibilities ``(N, K)`` or hard ``labels`` ``(N,)``, whose
        one-hot rows are built chunk by chunk (never ``(N, K)`` at once)."""
        dtype = self.family.seed_points(x).dtype
        k = self.n_components
        chunk = self._chunk_size(x)
        if labels is None:
            rows = jnp.asarray(resp, dtype)
            counts = jnp.sum(rows, axis=0)
            as_resp = lambda rc: rc  # noqa: E731
        else:
            rows = jnp.asarray(labels)
            as_resp = lambda lc: jax.nn.one_hot(lc, k, dtype=dtype)  # noqa: E731
            # Chunked too: a scatter-add of the labels builds two (N,) temporaries.
            counts, _ = chunked_sum(lambda lc, _: (jnp.sum(as_resp(lc), axis=0), jnp.zeros(())), rows, None, chunk)
        # A component no point is responsible for (an empty k-means cluster when the
        # data have fewer distinct rows than K) would start at weight 0, never
        # revive in EM and give gradient ascent log 0: it starts instead as a
        # broad component, 1/K of every point (the data's mean and spread).
        empty = counts <= jnp.finfo(dtype).eps * jnp.sum(counts)

        def chunk_stats(xc, rows_c):
            rc = jnp.where(empty[None, :], 1.0 / k, as_resp(rows_c))
            gating_stats = None if self.gating.counts_suffice else self.gating.statistics(xc, rc, None)
            return MixtureStats(jnp.sum(rc, axis=0), self.family.statistics(xc, rc, None), gating_stats), jnp.zeros(())

        stats, _ = chunked_sum(chunk_stats, x, rows, chunk)
        return self.m_step(stats, None)

    def init_from_labels(self, x: Array, labels: Array) -> MixtureParams:
        """Parameters from one M-step on hard labels ``(N,)`` in ``0..K-1``.

        Raises:
            TypeError / ValueError: labels of the wrong shape, non-integer, or
                outside ``0..K-1`` (a label ``>= K`` would otherwise leave its point
                out and give NaN weights); checked on concrete labels.
        """
        x = self._filled(self._concrete_rows(x))
        check_labels(labels, n_rows(x), self.n_components)
        return self._m_step_from_resp(x, labels=jnp.asarray(labels))

    # -- validation (host side, before compiling) ------------------------------------

    def validate_data(self, x) -> Array:
        """``x`` checked as :meth:`validate_rows` does, with at least ``K`` rows;
        warns where ``K`` components are not identifiable on these features."""
        x = self.validate_rows(x)
        check_n_components(self.n_components, n_rows(x))
        if hasattr(self.family, "check_identifiable"):
            # Warns where K components over these features are not identifiable.
            self.family.check_identifiable(self.n_components, n_features(x))
        return x

    def validate_rows(self, x) -> Array:
        """``x`` checked by the family (rank, dtype, NaN, the family's support), as
        :meth:`validate_data` but without the whole-data checks (``N >= K``: a
        stream's last chunk may be short, one point can be predicted)."""
        check_dense(x)
        x = self._validate_with_missing(x) if self.missing else self.family.validate_data(x)
        # A per-feature prior of another width would fail only while tracing.
        self.family.validate_width(n_features(x))
        return x

    def validate_params(self, params, x) -> None:
        if not isinstance(params, MixtureParams):
            raise TypeError(f"mixture parameters must be a MixtureParams; got {type(params).__name__}.")
        self.gating.validate_params(params.weights, self.n_components)
        self.family.validate_params(params.components, self.n_components, n_features(x))

    def collapsed(self, params: MixtureParams, x: Array) -> Array:
        """``(K,)`` booleans: components at a likelihood singularity (the family's
        test, e.g. a variance below ``collapse_tol`` times the data's) or with an
        effective count ``pi_k N`` below ``collapse_count``."""
        x = self._filled(x)
        weights = self.gating.weights(params.weights, x)
        expected = weights * n_rows(x) if weights.ndim == 1 else jnp.sum(weights, axis=0)
        # A component of weight exactly 0 was dropped (it takes no point): not a collapse.
        alive = expected > 0
        return alive & (self.family.degenerate(params.components, x) | (expected < self.collapse_count))

    def reinitialize(self, key, params: MixtureParams, x: Array, mask: Array) -> MixtureParams:
        """``params`` with the components in ``mask`` ``(K,)`` started afresh: a
        random data point as location, the data's spread, weight ``1/K`` (the
        weights renormalised). Frozen groups keep their values.

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> result = emjax.fit(model, x, key=jax.random.key(0))
            >>> model.collapsed(result.params, x)   # none here
            Array([False, False], dtype=bool)
            >>> mask = jnp.array([False, True])
            >>> params = model.reinitialize(jax.random.key(1), result.params, x, mask)   # restart the second
            >>> print(np.asarray(params.weights).round(3))
            [0.563 0.437]
        """
        x = self._filled(x)
        centers = _init.random_points(key, self.family.seed_points(x), self.n_components)
        fresh = self.family.init_from_centers(x, centers)
        comps = self.family.replace_components(mask, fresh, params.components)
        new = MixtureParams(self.gating.reinitialize(params.weights, mask), comps)
        return self.hold_frozen(new, params)

    def permute(self, params: MixtureParams, perm) -> MixtureParams:
        """The same mixture with its components reordered: component ``perm[k]`` becomes
        component ``k`` (the weights' or gating's rows and the family's parameters).

        Args:
            params: one set of parameters.
            perm: ``(K,)`` a permutation of ``0..K-1``.

        Raises:
            ValueError: ``perm`` is not a permutation of ``0..K-1``.

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> result = emjax.fit(model, x, key=jax.random.key(0))
            >>> swapped = model.permute(result.params, jnp.array([1, 0]))
            >>> print(np.asarray(result.params.weights).round(3), np.asarray(swapped.weights).round(3))
            [0.644 0.356] [0.356 0.644]
        """
        self._check_param_layout(params)
        p = np.asarray(perm)
        if p.shape != (self.n_components,) or sorted(p.tolist()) != list(range(self.n_components)):
            raise ValueError(f"perm must be a permutation of 0..{self.n_components - 1}; got {p.tolist()}.")
        p = jnp.asarray(p)
        weights = jax.tree.map(lambda a: a[p], params.weights)
        return MixtureParams(weights, self.family.permute_components(params.components, p))

    # -- the fitted mixture ----------------------------------------------------------

    def row_width(self, x) -> int:
        """The family's :meth:`~emjax.Family.row_width` (``K x D`` unless its density
        is a product of ``D``-wide rows); with missing entries ``K x D`` (a conditional
        mean per point and component), ``K x D x D`` for covariance matrices (a
        ``(D, D)`` conditional covariance per point and component)."""
        d = n_features(x)
        if self.missing:
            matrices = isinstance(getattr(self.family, "structure", None), MatrixStructure)
            return self.n_components * d * (d if matrices else 1)
        return int(self.family.row_width(self.n_components, d))

    # -- missing entries -------------------------------------------------------------

    def _filled(self, x):
        """``x`` with each missing entry (NaN) replaced by its column's observed mean
        (0 for a column with none): what the initialisations and the collapse test
        see under ``missing=True``; ``x`` itself otherwise."""
        if not self.missing:
            return x
        observed = ~jnp.isnan(x)
        count = jnp.sum(observed, axis=0)
        mean = jnp.sum(jnp.where(observed, x, 0.0), axis=0) / jnp.maximum(count, 1)
        return jnp.where(observed, x, mean)

    def _validate_with_missing(self, x):
        """The family's checks on the observed entries; NaN kept as the missing mark;
        infinities and rows with nothing observed refused."""
        if any(is_traced(a) for a in jax.tree.leaves(x)):
            return as_data_matrix(x, allow_nan=True)
        if not (hasattr(x, "dtype") and hasattr(x, "ndim")):
            x = np.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return self.family.validate_data(x)  # integer or boolean data: nothing is missing
        xm = as_data_matrix(x, allow_nan=True)  # rank, emptiness, infinities
        xp = np if isinstance(xm, np.ndarray) else jnp
        nan = xp.isnan(xm)
        empty = xp.all(nan, axis=1)
        if bool(xp.any(empty)):
            row = int(xp.argmax(empty))
            raise ValueError(
                f"x row {row} has every entry missing (NaN){' (and more rows)' if int(xp.sum(empty)) > 1 else ''}: "
                "a row with no observed entry carries no information about the mixture; drop it."
            )
        checked = self.family.validate_data(xp.where(nan, xp.zeros((), xm.dtype), xm))
        return jnp.where(jnp.asarray(nan), jnp.nan, checked) if xp is jnp else np.where(nan, np.nan, np.asarray(checked)).astype(checked.dtype)

    def _require_missing(self, name: str) -> None:
        if not self.missing:
            raise ValueError(f"{name} needs a mixture built with missing=True (NaN entries as missing values).")

    def impute(self, params: MixtureParams, x: Array) -> Array:
        """Missing entries (NaN) replaced by their conditional means given each row's
        observed entries: ``sum_k p(k | x_o) E[x_m | x_o, k]``, ``(N, D)``.

        For Categorical components the posterior predictive's most probable
        category replaces a missing code.

        Raises:
            ValueError: the mixture was not built with ``missing=True``, or ``x`` is
                not valid data (see :meth:`log_prob`).

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> x_with_nan = x.copy()
            >>> x_with_nan[::10, 1] = np.nan   # every tenth waiting time missing
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2, missing=True)
            >>> result = emjax.fit(model, x_with_nan, key=jax.random.key(0))
            >>> filled = model.impute(result.params, x_with_nan)
            >>> print(np.asarray(filled[:2]).round(1))   # the first row's waiting time filled in
            [[ 3.6 76. ]
             [ 1.8 54. ]]
        """
        self._require_missing("impute")
        return self._map("_rows_impute", params, x)

    def _rows_impute(self, params, x):
        lj, (x0, observed, _) = self._log_joint_and_cache(params, x)
        return self.family.impute_mixture(params.components, x0, observed, jax.nn.softmax(lj, axis=1))

    def sample_missing(self, key, params: MixtureParams, x: Array) -> Array:
        """One draw of the missing entries from their posterior given each row's
        observed entries: a component from ``p(k | x_o)``, then the missing entries
        from that component's conditional law. ``(N, D)``; observed entries kept.

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> x_with_nan = x.copy()
            >>> x_with_nan[::10, 1] = np.nan   # every tenth waiting time missing
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2, missing=True)
            >>> result = emjax.fit(model, x_with_nan, key=jax.random.key(0))
            >>> completed = model.sample_missing(jax.random.key(1), result.params, x_with_nan)
            >>> bool(np.isnan(completed).any()), bool((completed[1:10] == x[1:10]).all())
            (False, True)
        """
        self._require_missing("sample_missing")
        return self._sample_missing(key, params, self.validate_prediction(params, x))

    @compiled
    def _sample_missing(self, key, params, x):
        k_z, k_x = jax.random.split(key)
        lj, (x0, observed, _) = self._log_joint_and_cache(params, x)
        components = jax.random.categorical(k_z, lj, axis=1)
        return self.family.sample_missing(k_x, params.components, x0, observed, components)

    def _chunk_size(self, x) -> int:
        return default_chunk_size(n_rows(x), self.row_width(x))

    def validate_prediction(self, params: MixtureParams, x):
        """``x`` validated for prediction as ``fit`` validates it (rank, dtype, NaN,
        the family's support), and its width checked against ``params``; ``params``
        must be one set of this mixture's parameters (not a FitResult, not a restart batch).

        Under tracing only the static checks run. No ``N >= K`` check: one point
        can be predicted. :func:`emjax.score_chunks` and :func:`emjax.predict_chunks`
        check every chunk with it.

        Raises:
            TypeError / ValueError: as described, naming the problem.
        """
        self._check_param_layout(params)
        x = self.validate_rows(x)
        width = self.family.n_features(params.components)
        if width is not None and n_features(x) != width:
            raise ValueError(
                f"x has {n_features(x)} features but the mixture's components have {width}; "
                "pass data with the columns the mixture was fitted on."
            )
        return x

    def _check_param_layout(self, params) -> None:
        """Raise unless ``params`` is one :class:`MixtureParams` with a leading axis of ``K``
        components (static shapes only: values are the caller's, e.g. for gradients)."""
        if not isinstance(params, MixtureParams):
            fitted = "restart_params" in getattr(type(params), "__dataclass_fields__", ())  # a FitResult
            hint = " (this is a FitResult: pass result.params)" if fitted else ""
            raise TypeError(f"params must be a MixtureParams{hint}; got {type(params).__name__}.")
        k = self.n_components
        # Component leaves lead with K (a shared leaf such as a tied covariance is the exception).
        shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(params.components)]
        weights = jnp.shape(params.weights)
        if (shapes and not any(s[:1] == (k,) for s in shapes)) or (
            isinstance(self.gating, ConstantGating) and weights != (k,)
        ):
            raise ValueError(
                f"params must describe n_components={k} components (weights of shape ({k},)); got weights of "
                f"shape {weights} and component parameters of shapes {shapes}. The parameters of all restarts "
                "(result.restart_params) have a leading restart axis: pass result.params."
            )

    def _map(self, name: str, params: MixtureParams, x):
        """``self.<name>(params, rows)`` over chunks of ``x`` once ``x`` is checked: one compiled program."""
        x = self.validate_prediction(params, x)
        return rowwise(self, name, params, x, self._chunk_size(x))

    def _rows_log_prob(self, params, x):
        return logsumexp(self.log_joint(params, x), axis=1)

    def _rows_posterior(self, params, x):
        return jax.nn.softmax(self.log_joint(params, x), axis=1)

    def _rows_predict(self, params, x):
        return jnp.argmax(self.log_joint(params, x), axis=1)

    def _rows_criteria_terms(self, params, x):
        """``log p(x)`` and ``log max_k p(k | x)`` per row (:meth:`information_criteria`)."""
        lj = self.log_joint(params, x)
        ll = logsumexp(lj, axis=1)
        return ll, jnp.max(lj, axis=1) - ll

    def log_prob(self, params: MixtureParams, x: Array) -> Array:
        """Log density of each point under the mixture: ``(N,)``.

        Raises:
            TypeError / ValueError: ``x`` is not valid data for the family, or its
                number of features differs from the components'.
        """
        return self._map("_rows_log_prob", params, x)

    def posterior(self, params: MixtureParams, x: Array) -> Array:
        """Responsibilities ``p(z = k | x_n)``: ``(N, K)``; ``x`` checked as in :meth:`log_prob`."""
        return self._map("_rows_posterior", params, x)

    def predict(self, params: MixtureParams, x: Array) -> Array:
        """Most probable component of each point: ``(N,)``; ``x`` checked as in :meth:`log_prob`."""
        return self._map("_rows_predict", params, x)

    def outlier_scores(self, params: MixtureParams, x: Array) -> tuple[Array, Array]:
        """Each point's ``(weight, distance)``, both ``(N,)``: its posterior expected
        precision weight ``sum_k p(k | x) E[u | x, k]`` (Student-t components, where
        a small weight marks an outlier; 1 for Gaussian ones) and its squared
        Mahalanobis distance to its most probable component's location (with
        ``missing=True``, of the observed entries under their marginal).

        Raises:
            TypeError: the family has no Mahalanobis distance (not a Gaussian or Student-t).

        Example:
            >>> x, _, _ = emjax.datasets.bankruptcy()
            >>> model = emjax.Mixture(emjax.StudentT("full"), 2)
            >>> result = emjax.fit(model, x, key=jax.random.key(0))
            >>> weight, distance = model.outlier_scores(result.params, x)
            >>> outliers = weight < 0.2
            >>> int(outliers.sum())
            4
        """
        if not hasattr(self.family, "mahalanobis"):
            raise TypeError(
                f"outlier_scores needs Gaussian or Student-t components; the family is {type(self.family).__name__}.")
        return self._map("_rows_outlier_scores", params, x)

    def _rows_outlier_scores(self, params, x):
        family = self.family
        lj = self.log_joint(params, x)
        maha, d = family.distances(params.components, x, self.missing)
        if hasattr(family, "precision_weights"):
            u = family.precision_weights(params.components, maha, d)
            weight = jnp.sum(jax.nn.softmax(lj, axis=1) * u, axis=1)
        else:
            weight = jnp.ones(lj.shape[:1], lj.dtype)
        best = jnp.argmax(lj, axis=1)
        return weight, jnp.take_along_axis(maha, best[:, None], axis=1)[:, 0]

    def score(self, params: MixtureParams, x: Array, weights: Array | None = None) -> Array:
        """Mean log-likelihood per point (weighted mean with ``weights``).

        Raises:
            TypeError / ValueError: invalid ``x`` (see :meth:`log_prob`), or
                ``weights`` that are not ``(N,)``, finite, non-negative, not all zero.
        """
        lp = self.log_prob(params, x)
        if weights is None:
            return jnp.mean(lp)
        weights = as_sample_weights(weights, lp.shape[0], float_dtype(lp.dtype))
        return jnp.sum(weights * lp) / jnp.sum(weights)

    def sample(self, key, params: MixtureParams, n: int) -> tuple[Array, Array]:
        """Ancestral sampling: a component for each point, then the point.

        Args:
            key: PRNG key.
            params: the mixture's parameters.
            n: number of points, a positive integer.

        Returns:
            ``(x (n, D), z (n,))``.

        Raises:
            ValueError: ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"n, the number of points to sample, must be a positive integer; got {n!r}.")
        key = check_key(key)
        self._check_param_layout(params)
        return self._sample(key, params, int(n))

    @compiled
    def _sample(self, key, params: MixtureParams, n: int):
        kz, kx = jax.random.split(key)
        z = jax.random.categorical(kz, self.gating.log_weights(params.weights, None), shape=(n,))
        return self.family.sample(kx, params.components, z), z

    def mean(self, params: MixtureParams) -> Array:
        """``E[x] = sum_k pi_k mu_k``: ``(D,)``."""
        means, _ = self.family.moments(params.components)
        return self.gating.weights(params.weights) @ means

    def covariance(self, params: MixtureParams) -> Array:
        """``cov[x] = sum_k pi_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T``: ``(D, D)``.

        Computed as ``sum_k pi_k (Sigma_k + (mu_k - E[x])(mu_k - E[x])^T)``, the
        same quantity without the cancellation.
        """
        weights = self.gating.weights(params.weights)
        means, covs = self.family.moments(params.components)
        dev = means - weights @ means
        return jnp.einsum("k,kde->de", weights, covs + dev[:, :, None] * dev[:, None, :])

    def n_parameters(self, n_features: int) -> int:
        """Number of free parameters (frozen groups are not estimated, so not counted)."""
        k = self.n_components
        n_weights = 0 if "weights" in self.frozen else self.gating.n_parameters(k, n_features)
        return n_weights + self.family.n_parameters(k, n_features, self.frozen - {"weights"})

    def _n_parameters_of(self, x) -> int:
        """The free parameters of the model on data like ``x``."""
        return self.n_parameters(n_features(x))

    def _n_parameters_kept(self, params: MixtureParams, x):
        """:meth:`_n_parameters_of`, less what each dropped component (constant weight
        exactly 0) would add: an int for concrete weights, else an array."""
        p = self._n_parameters_of(x)
        if not isinstance(self.gating, ConstantGating) or self.n_components == 1:
            return p
        d, k, frozen = n_features(x), self.n_components, self.frozen - {"weights"}
        # Every family's count is affine in K (shared parameters plus a fixed number per component).
        per_component = self.family.n_parameters(k, d, frozen) - self.family.n_parameters(k - 1, d, frozen)
        per_component += 0 if "weights" in self.frozen else 1
        w = concrete(params.weights)
        dropped = int(np.sum(w == 0)) if w is not None else jnp.sum(params.weights == 0)
        return p - per_component * dropped

    def information_criteria(self, params: MixtureParams, x: Array, weights: Array | None = None) -> dict:
        """The log-likelihood and the criteria of one set of parameters, from one pass.

        ``log_likelihood = sum_n w_n log p(x_n)``, ``N = sum_n w_n`` (the number of
        rows without ``weights``), ``p`` the free parameters (:meth:`n_parameters`,
        without the dropped components': those of constant weight exactly 0):
        ``bic = -2 log L + p log N``, ``aic = -2 log L + 2 p`` and the integrated
        completed likelihood ``icl = bic - 2 sum_n w_n log max_k p(k | x_n)``
        (Biernacki, Celeux & Govaert 2000): BIC penalised by how unsure the
        classification is, preferring well-separated components. Lower is better;
        mclust reports the negatives (its ``BIC = 2 log L - p log N``, its
        ``ICL = BIC + 2 sum c_nk log z_nk`` with ``c`` the MAP classification).

        Returns:
            ``{"log_likelihood", "n_parameters", "bic", "aic", "icl"}`` (arrays but
            ``n_parameters``).

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> result = emjax.fit(model, x, key=jax.random.key(0))
            >>> ic = model.information_criteria(result.params, x)
            >>> ic["n_parameters"], round(float(ic["bic"]), 1)
            (11, 2322.2)
        """
        ll, log_top = self._map("_rows_criteria_terms", params, x)
        if weights is None:
            n = n_rows(x)
        else:
            w = as_sample_weights(weights, ll.shape[0], float_dtype(ll.dtype))
            ll, log_top, n = w * ll, w * log_top, jnp.sum(w)
        total = jnp.sum(ll)
        p = self._n_parameters_kept(params, x)
        bic = -2 * total + p * jnp.log(n)
        return {"log_likelihood": total, "n_parameters": p, "bic": bic, "aic": -2 * total + 2 * p,
                "icl": bic - 2 * jnp.sum(log_top)}

    def bic(self, params: MixtureParams, x: Array, weights: Array | None = None) -> Array:
        """Bayesian information criterion ``-2 log L + p log N`` (lower is better; see
        :meth:`information_criteria`)."""
        return self.information_criteria(params, x, weights)["bic"]

    def aic(self, params: MixtureParams, x: Array, weights: Array | None = None) -> Array:
        """Akaike information criterion ``-2 log L + 2 p`` (lower is better)."""
        return self.information_criteria(params, x, weights)["aic"]

    def icl(self, params: MixtureParams, x: Array, weights: Array | None = None) -> Array:
        """Integrated completed likelihood ``BIC - 2 sum_n log max_k p(k | x_n)`` (lower is
        better; see :meth:`information_criteria`).

        Example:
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> result = emjax.fit(model, x, key=jax.random.key(0))
            >>> bool(model.icl(result.params, x) >= model.bic(result.params, x))
            True
        """
        return self.information_criteria(params, x, weights)["icl"]


def _overrides(obj, base, name: str) -> bool:
    """Whether ``obj``'s class defines ``name`` other than ``base``'s default."""
    return inspect.getattr_static(type(obj), name) is not base.__dict__[name]


def latent_posterior(lj: Array, *, temperature=1.0, assignment: str = "soft", key=None, n_samples=1):
    """The log-likelihood of each row and the weights of its latent values, from the
    ``(N, L)`` log joint ``lj`` over ``L`` latent values (a mixture's components, a
    Bayesian network's hidden configurations).

    Args:
        lj: ``(N, L)`` ``log p(x_n, z = l)``.
        temperature: the weights are ``softmax(lj / temperature)`` (deterministic
            annealing); the Python number 1 takes the untempered path, bit for bit.
        assignment: ``"soft"`` (the posterior), ``"hard"`` (one-hot on the most
            probable value; the log-likelihood is then ``max_l lj``) or
            ``"sample"`` (the share of ``n_samples`` posterior draws, with ``key``).
        key: the PRNG key of ``"sample"``.
        n_samples: draws per row under ``"sample"``.

    Returns:
        ``(loglik (N,), weights (N, L))``.
    """
    _check_assignment(assignment, key, n_samples)
    if _is_one(temperature):
        ll, resp = _log_normalize(lj)
    else:
        _check_temperature(temperature)
        ll = logsumexp(lj, axis=1)
        # softmax(lj / T) with one more exp per entry (not two): the row maximum
        # of lj / T is that of lj over T, for T > 0.
        top = jax.lax.stop_gradient(jnp.max(lj, axis=1, keepdims=True))
        e = jnp.exp((lj - jnp.where(jnp.isfinite(top), top, 0.0)) / temperature)
        resp = e / jnp.sum(e, axis=1, keepdims=True)
    if assignment == "hard":
        ll = jnp.max(lj, axis=1)
        resp = jax.nn.one_hot(jnp.argmax(lj, axis=1), lj.shape[1], dtype=lj.dtype)
    elif assignment == "sample":
        resp = _draw_classes(key, resp, n_samples)
    return ll, resp


def _is_one(temperature) -> bool:
    """True for the Python (or NumPy) number 1: the untempered E-step, bit for bit."""
    return isinstance(temperature, (int, float, np.number)) and not isinstance(temperature, bool) and temperature == 1


def _check_assignment(assignment, key, n_samples) -> None:
    """Raise, while tracing, for an unknown ``assignment`` or a draw without a key."""
    if assignment not in ("soft", "hard", "sample"):
        raise ValueError(f"assignment must be 'soft', 'hard' or 'sample'; got {assignment!r}.")
    if assignment == "sample":
        if key is None:
            raise ValueError("assignment='sample' draws the classes: pass key=.")
        if not is_traced(n_samples) and not (np.ndim(n_samples) == 0 and n_samples >= 1 and n_samples == int(n_samples)):
            raise ValueError(f"n_samples must be a whole count >= 1; got {n_samples!r}.")


def _draw_classes(key, resp: Array, n_samples) -> Array:
    """``(N, K)`` the share of ``n_samples`` draws from each row of ``resp`` that fell
    in each class (one-hot rows for one draw)."""
    if isinstance(n_samples, (int, np.integer)) and n_samples == 1:
        z = jax.random.categorical(key, jnp.log(resp), axis=1)
        return jax.nn.one_hot(z, resp.shape[1], dtype=resp.dtype)
    m = jnp.asarray(n_samples, resp.dtype)
    return jax.random.multinomial(key, m, resp, dtype=resp.dtype) / m


def _check_temperature(temperature) -> None:
    """Raise for a concrete temperature that is not a positive finite scalar (traced ones pass)."""
    if is_traced(temperature):
        return
    t = np.asarray(temperature)
    if t.shape != () or not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive finite scalar; got {temperature!r}.")
