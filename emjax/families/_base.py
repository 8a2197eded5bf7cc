"""The Family contract: one kind of mixture component.

A family holds static configuration (covariance type, prior hyperparameters);
its parameters are a separate pytree whose leaves have a leading component axis
``K`` (a tied covariance is the one exception: it is shared). Statistics are
pytrees too, additive over data points: ``statistics(x1, r1) + statistics(x2, r2)``
equals ``statistics(concat(x1, x2), concat(r1, r2))`` (``+`` is
:func:`emjax.add_stats`).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from .._checks import as_data_matrix, check_prior_features


def rows_times(x: Array, w: Array) -> Array:
    """``x @ w.T`` for data rows ``x`` ``(N, D)`` and per-component rows ``w``
    ``(K, D)``: the ``(N, K)`` products a family's log density is made of.

    Computed as ``(w @ x.T).T`` at full precision: XLA:CPU runs the skinny product
    with the long axis last about 1.3x faster (N=1e5, D=K=16; the transposes fold
    into the operands' layouts), and on a GPU the two orientations cost the same.
    """
    return jnp.matmul(w, x.T, precision=jax.lax.Precision.HIGHEST).T

Params = Any
Stats = Any


class Family(eqx.Module):
    """Abstract base of component families. Subclass it to add a family.

    Every method is pure and vectorised over points and components.
    """

    #: Names of the parameter groups (fields of the params pytree) that can be frozen.
    param_groups: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def log_prob(self, params: Params, x: Array) -> Array:
        """Log density of every point under every component: ``(N, K)``."""

    #: Whether the family fits data with missing entries (``Mixture(..., missing=True)``):
    #: it then implements :meth:`log_prob_observed`, :meth:`statistics_observed`,
    #: :meth:`impute` and :meth:`sample_missing`.
    supports_missing: ClassVar[bool] = False

    def feature_log_prob(self, params: Params, x: Array) -> Array:
        """``(N, K, D)`` each feature's log density, for families whose features are
        independent given the component (their missing entries marginalise by
        leaving the terms out)."""
        raise NotImplementedError(f"{type(self).__name__} does not support missing entries.")

    def log_prob_observed(self, params: Params, x0: Array, observed: Array) -> tuple[Array, Any]:
        """The log density of each point's observed entries (the missing ones
        marginalised), ``(N, K)``, and a cache for :meth:`statistics_observed`.

        By default the sum of :meth:`feature_log_prob` over the observed features.

        Args:
            params: the components' parameters.
            x0: ``(N, D)`` data, 0 at the missing entries.
            observed: ``(N, D)`` booleans, ``True`` where observed.
        """
        terms = self.feature_log_prob(params, x0)
        return jnp.sum(jnp.where(observed[:, None, :], terms, 0.0), axis=-1), None

    def statistics_observed(self, x0: Array, observed: Array, resp: Array, params: Params, cache: Any) -> Stats:
        """The expected complete-data statistics given the observed entries (the
        missing ones replaced by their conditional moments per component)."""
        raise NotImplementedError(f"{type(self).__name__} does not support missing entries.")

    def impute(self, params: Params, x0: Array, observed: Array) -> Array:
        """``(N, K, D)`` each component's conditional mean of every entry given the
        observed ones (the observed entries themselves where observed)."""
        raise NotImplementedError(f"{type(self).__name__} does not support missing entries.")

    def impute_mixture(self, params: Params, x0: Array, observed: Array, posterior: Array) -> Array:
        """``(N, D)`` the observed entries, and the missing ones replaced by their
        conditional mean under the mixture, ``sum_k posterior_nk impute_nk``."""
        xhat = self.impute(params, x0, observed)
        return jnp.where(observed, x0, jnp.einsum("nk,nkd->nd", posterior, xhat))

    def sample_missing(self, key, params: Params, x0: Array, observed: Array, components: Array) -> Array:
        """``(N, D)`` the observed entries, and the missing ones drawn from their
        conditional law given the observed ones under component ``components`` ``(N,)``:
        by default a fresh draw of the component (independent features)."""
        return jnp.where(observed, x0, self.sample(key, params, components).astype(x0.dtype))

    def row_width(self, n_components: int, n_features: int) -> int:
        """Elements per data row of the E-step's intermediates, which size its chunks.

        ``K x D`` by default (an ``(N, K, D)`` array per chunk); a family whose
        log density is a matrix product of ``D``-wide rows keeps only ``(N, K)`` and
        ``(N, D)`` arrays and says so, so that its chunks grow and the chunk
        loop's fixed cost per chunk falls.
        """
        return n_components * n_features

    def log_prob_and_cache(self, params: Params, x: Array) -> tuple[Array, Any]:
        """:meth:`log_prob` and whatever :meth:`cached_statistics` can reuse from it.

        The E-step calls this pair on the same chunk and parameters, so a family
        whose statistics repeat part of its density's work (centred data,
        distances) computes it once. The default caches nothing.

        Returns:
            ``(log_prob (N, K), cache)``, ``cache`` any pytree or ``None``.
        """
        return self.log_prob(params, x), None

    def cached_statistics(self, x: Array, resp: Array, params: Params, cache: Any) -> Stats:
        """:meth:`statistics` at ``params``, given the ``cache`` of
        :meth:`log_prob_and_cache` on the same ``x`` and ``params``."""
        return self.statistics(x, resp, params)

    @abc.abstractmethod
    def statistics(self, x: Array, resp: Array, params: Params | None = None) -> Stats:
        """Responsibility-weighted sufficient statistics, leading axis ``K``.

        Args:
            x: data ``(N, D)``.
            resp: weights ``(N, K)`` (responsibilities times sample weights).
            params: the current parameters, used as the expansion point where the
                statistics are stored relative to one (Gaussian scatter about the
                current means); ``None`` lets the family choose.
        """

    def expected_log_likelihood(self, stats: Stats, params: Params) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` computed from the statistics.

        Linear in ``stats`` and exact up to terms that do not depend on ``params``
        (such as ``log x!``). Incremental EM uses it to track its free energy
        without another pass over the data; a family whose statistics cannot give
        it (a gradient at the E-step's parameters) leaves this default, which
        raises, and :meth:`emjax.Mixture.provides` then says so.
        """
        raise NotImplementedError(f"{type(self).__name__} does not provide expected_log_likelihood.")

    @abc.abstractmethod
    def maximize(self, stats: Stats, params: Params | None = None, frozen: frozenset = frozenset()) -> Params:
        """The M-step: parameters maximising the expected complete-data log
        likelihood (plus the family's log prior).

        Args:
            stats: statistics summed over the data.
            params: the current parameters (needed only for frozen groups).
            frozen: names of parameter groups held at their current values; the
                other groups are maximised conditionally on them.

        Returns:
            The new parameters, leading axis ``K``.
        """

    def log_prior(self, params: Params) -> Array:
        """Log prior density of the component parameters (0 without a prior)."""
        return jnp.zeros(())

    def kept_log_prior(self, params: Params, kept: Array) -> Array:
        """The log prior of the components in ``kept`` ``(K,)`` only: a dropped
        component (weight exactly 0) is not in the model, so its prior is not either.

        The default evaluates :meth:`log_prior` on each component alone (through
        :meth:`permute_components`) and sums the kept ones: right for a prior that is
        a sum over components; a family whose prior couples them (a shared matrix)
        overrides it.
        """
        one = lambda k: self.log_prior(self.permute_components(params, k[None]))  # noqa: E731
        per_component = jax.vmap(one)(jnp.arange(kept.shape[0]))
        return jnp.sum(jnp.where(kept, per_component, 0.0))

    def fit_penalty(self, params: Params) -> Array:
        """``(K,)`` amounts subtracted from each component's log density while fitting; zeros by default.

        The penalty whose M-step is the family's regularisation (a Gaussian's
        ``reg_covar``): with it in the E-step, EM increases the penalised
        log-likelihood exactly. :meth:`expected_log_likelihood` must include
        ``-sum_k n_k penalty_k``. Prediction uses the unpenalised density.
        """
        leaf = jax.tree.leaves(params)[0]
        return jnp.zeros(leaf.shape[:1], leaf.dtype)

    def adapt(self, x, weights=None) -> "Family":
        """The family with constants measured on the data before a fit (a
        Gaussian's regularisation scale); itself by default."""
        return self

    @abc.abstractmethod
    def init_from_centers(self, x: Array, centers: Array) -> Params:
        """Parameters with ``centers`` (rows of ``seed_points(x)``) as locations and a
        broad spread taken from the data."""

    @abc.abstractmethod
    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        """Number of free parameters of ``n_components`` components, less the frozen groups."""

    @abc.abstractmethod
    def sample(self, key, params: Params, components: Array) -> Array:
        """One draw from each listed component: ``components`` ``(M,)`` -> ``(M, D)``."""

    @abc.abstractmethod
    def moments(self, params: Params) -> tuple[Array, Array]:
        """Component means ``(K, D)`` and covariances ``(K, D, D)``."""

    @property
    def has_unconstrained_coordinates(self) -> bool:
        """Whether :meth:`unconstrain` / :meth:`constrain` are implemented (gradient
        ascent, over-relaxed and generalised EM need them; EM itself does not)."""
        return type(self).unconstrain is not Family.unconstrain

    def unconstrain(self, params: Params) -> Any:
        """The parameters in unconstrained coordinates: a pytree of real arrays.

        :class:`emjax.algorithms.GradientAscent` optimises over these coordinates,
        so the constraints (positive variances, probabilities on a simplex, ...)
        hold by construction and no projection step is needed. ``constrain``
        must be its exact inverse: ``constrain(unconstrain(p)) == p`` up to
        rounding, and ``constrain(u)`` must be valid parameters for any real
        ``u`` of the right shapes.

        The default raises ``NotImplementedError``: a new family provides both
        methods to be fitted by gradient ascent (EM itself never needs them).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement unconstrain()/constrain(), the map to unconstrained "
            "coordinates that gradient ascent needs; implement both to fit it with GradientAscent."
        )

    def constrain(self, u: Any) -> Params:
        """The inverse of :meth:`unconstrain`: parameters from unconstrained coordinates.

        The default raises ``NotImplementedError`` (see :meth:`unconstrain`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement unconstrain()/constrain(), the map to unconstrained "
            "coordinates that gradient ascent needs; implement both to fit it with GradientAscent."
        )

    def validate_data(self, x) -> Array:
        """Check and convert data for this family; raise a clear error if it does not fit."""
        return as_data_matrix(x)

    def validate_params(self, params: Params, n_components: int, n_features: int) -> None:
        """Raise a clear error if ``params`` are inconsistent (shapes, constraints)."""

    def validate_width(self, n_features: int) -> None:
        """Raise a clear error if the family's configuration cannot describe data of ``n_features`` columns.

        :class:`emjax.Mixture` calls it with the width of every data matrix it
        checks, so a mismatch is found before anything is compiled rather than as
        a broadcasting error while tracing. By default a prior that says how many
        features it describes (``prior.n_features()``: a
        :class:`NormalInverseWishart`, a per-feature :class:`BetaPrior` or
        :class:`GammaPrior`) must match.
        """
        check_prior_features(getattr(self, "prior", None), n_features)

    def n_features(self, params: Params) -> int | None:
        """D, the number of data columns ``params`` describe; ``None`` when they do not say.

        Prediction checks the data's width against it. By default axis 1 of the
        first leaf with a component axis and a feature axis (``means`` ``(K, D)``,
        ``probs`` ``(K, D, S)``); families laid out otherwise override it.

        Example:
            >>> emjax.Gaussian("diag").n_features(emjax.GaussianParams(jnp.zeros((3, 2)), jnp.ones((3, 2))))
            2
        """
        for leaf in jax.tree.leaves(params):
            if jnp.ndim(leaf) >= 2:
                return int(jnp.shape(leaf)[1])
        return None

    def degenerate(self, params: Params, x: Array) -> Array:
        """``(K,)`` booleans: components at a likelihood singularity (collapsed) on data ``x``."""
        return jnp.zeros(jax.tree.leaves(params)[0].shape[0], dtype=bool)

    def replace_components(self, mask: Array, new: Params, old: Params) -> Params:
        """Parameters with the components in ``mask`` ``(K,)`` taken from ``new``, the others from ``old``.

        Every leaf has a leading ``K`` axis by default; families with shared
        parameters (tied covariances) override this.
        """

        def pick(a, b):
            return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree.map(pick, new, old)

    def permute_components(self, params: Params, perm: Array) -> Params:
        """The parameters with component ``perm[k]`` in place ``k`` (``perm`` ``(K,)`` a
        permutation): every leaf taken along its leading ``K`` axis by default;
        families with shared parameters (tied covariances) override this."""
        return jax.tree.map(lambda a: a[perm], params)

    def seed_points(self, x: Array) -> Array:
        """The ``(N, D')`` float matrix that k-means and random-point seeding run on.

        ``init_from_centers`` receives rows of it. The data themselves by default.
        """
        return x
