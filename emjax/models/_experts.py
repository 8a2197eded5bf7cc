"""Mixtures of experts: a mixture whose weights depend on covariates and whose components are regressions."""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp

from ._gating import Gating, SoftmaxGating
from ._mixture import Mixture, MixtureParams
from .._checks import as_data_matrix, check_int, check_key
from ..families._experts import Expert, LinearExpert, LogisticExpert


class MixtureOfExperts(Mixture):
    """A mixture of experts (Jacobs et al. 1991): ``p(y | x) = sum_k pi_k(x) p(y | x, theta_k)``.

    The data are pairs ``(X, y)``: covariates ``X`` ``(N, P)`` and outputs ``y``.
    The weights come from a gating on the covariates (a :class:`SoftmaxGating`
    by default, ``pi(x) = softmax(W [x, 1])``); the components are regression
    experts: :class:`emjax.LinearExpert` (``y`` real, ``(N,)`` or ``(N, Dy)``) or
    :class:`emjax.LogisticExpert` (``y`` 0/1). The E-step is a mixture's (the
    posterior over experts given ``(x, y)``); the M-step is the experts' and the
    gating's, each a closed form or a generalized-EM step that raises the
    expected complete-data log-likelihood, so the objective (the conditional
    log-likelihood ``sum_n log p(y_n | x_n)`` plus the log priors) never decreases.

    It is an :class:`emjax.Mixture` (``log_prob``, ``posterior`` and ``predict``
    take pairs ``(X, y)``; every algorithm that runs a mixture runs it, except
    incremental EM with a softmax gating or logistic experts), with the
    predictions of a conditional density: :meth:`predict_mean`,
    :meth:`predict_mode`, :meth:`predictive_modes`, :meth:`predictive_log_prob`
    and :meth:`sample`, all from covariates alone.

    Args:
        expert: the experts' family, an :class:`emjax.families.Expert`.
        n_components: K, the number of experts.
        gating: a :class:`Gating`; ``SoftmaxGating()`` by default
            (``ConstantGating()`` gives a mixture of regressions, whose weights
            do not depend on ``x``).
        frozen: parameter groups held at their initial values (``"weights"``, the
            expert's ``param_groups``).
        collapse_count: see :class:`emjax.Mixture`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.uniform(-1, 1, (200, 1))   # two lines: y = -2x left of 0, 1 + x right of it
        >>> y = np.where(X[:, 0] < 0, -2.0 * X[:, 0], 1.0 + X[:, 0]) + 0.1 * rng.normal(size=200)
        >>> model = emjax.MixtureOfExperts(emjax.LinearExpert(), 2)
        >>> res = emjax.fit(model, (X, y), key=jax.random.key(0))
        >>> X_new = jnp.array([[-0.5], [0.5]])
        >>> print(np.asarray(model.predict_mode(res.params, X_new)).round(1))   # the most probable output at each x
        [1.  1.5]
    """

    def __init__(
        self,
        expert: Expert,
        n_components: int,
        *,
        gating: Gating | None = None,
        frozen=(),
        collapse_count: float = 0.0,
    ):
        if not isinstance(expert, Expert):
            raise TypeError(
                f"expert must be an emjax expert family, e.g. emjax.LinearExpert(); got {type(expert).__name__}."
            )
        super().__init__(
            expert, n_components, gating=SoftmaxGating() if gating is None else gating, frozen=frozen,
            collapse_count=collapse_count,
        )

    # -- predictions from the covariates ------------------------------------------------

    def validate_covariates(self, params: MixtureParams, x) -> Array:
        """``X`` ``(N, P)`` checked (as ``fit`` checks it) against ``params``' width.

        Raises:
            TypeError / ValueError: naming the problem.
        """
        self._check_param_layout(params)
        x = as_data_matrix(x, "X")
        width = self.family.n_features(params.components)
        if x.shape[1] != width:
            raise ValueError(f"X has {x.shape[1]} columns but the experts were fitted on {width} covariates.")
        return x

    def _gate(self, params: MixtureParams, x: Array) -> Array:
        log_w = self.gating.log_weights(params.weights, (x, None))
        return jnp.broadcast_to(log_w, (x.shape[0], self.n_components))

    def gate(self, params: MixtureParams, x) -> Array:
        """``(N, K)`` the gating's weights ``pi_k(x_n)``."""
        x = self.validate_covariates(params, x)
        return jnp.exp(self._gate(params, x))

    def predict_mean(self, params: MixtureParams, x) -> Array:
        """``E[y | x] = sum_k pi_k(x) E[y | x, k]``: ``(N,)`` (``(N, Dy)`` for vector
        outputs); for logistic experts ``P(y = 1 | x)``."""
        x = self.validate_covariates(params, x)
        g = jnp.exp(self._gate(params, x))
        m = self.family.mean(params.components, x)
        return jnp.einsum("nk,nk...->n...", g, m)

    def predictive_log_prob(self, params: MixtureParams, x, y) -> Array:
        """``log p(y | x_n)`` of each candidate output ``y`` at each ``x_n``: ``(N, G)``.

        Args:
            params: the fitted parameters.
            x: covariates ``(N, P)``.
            y: ``(G,)`` candidate outputs (a grid to draw the full, possibly
                multimodal, predictive density), or ``(G, Dy)`` for vector outputs.

        Example:
            >>> rng = np.random.default_rng(0)
            >>> X = rng.uniform(-1, 1, (200, 1))   # two lines: y = -2x left of 0, 1 + x right of it
            >>> y = np.where(X[:, 0] < 0, -2.0 * X[:, 0], 1.0 + X[:, 0]) + 0.1 * rng.normal(size=200)
            >>> model = emjax.MixtureOfExperts(emjax.LinearExpert(), 2)
            >>> res = emjax.fit(model, (X, y), key=jax.random.key(0))
            >>> X_new = jnp.array([[-0.5], [0.5]])
            >>> grid = jnp.linspace(-1, 3, 201)
            >>> density = jnp.exp(model.predictive_log_prob(res.params, X_new, grid))
            >>> density.shape
            (2, 201)
            >>> print(np.asarray(grid[jnp.argmax(density, axis=1)]).round(1))   # its highest point at each x
            [1.  1.5]
        """
        x = self.validate_covariates(params, x)
        y = jnp.asarray(y, x.dtype)
        log_g = self._gate(params, x)

        def at(yg):
            lp = self.family.log_prob(params.components, (x, jnp.broadcast_to(yg, (x.shape[0],) + yg.shape)))
            return logsumexp(lp + log_g, axis=1)

        return jax.vmap(at, out_axes=1)(y)

    def predictive_modes(self, params: MixtureParams, x, n_iter: int = 100) -> tuple[Array, Array]:
        """The modes of the predictive density ``p(y | x)`` of linear-Gaussian experts.

        From each expert's mean the fixed-point iteration of Gaussian mean-shift,
        ``y <- sum_k a_k mu_k / var_k / sum_k a_k / var_k`` with ``a_k = pi_k N(y | mu_k,
        var_k)`` (per output), climbs to a mode (it is an EM algorithm for the mode,
        Carreira-Perpinan 2007); starts that reach the same mode give it twice.

        Args:
            params: the fitted parameters.
            x: covariates ``(N, P)``.
            n_iter: fixed-point iterations.

        Returns:
            ``(modes, log_density)``: ``(N, K)`` (``(N, K, Dy)``) the mode reached
            from each expert's mean, and ``(N, K)`` ``log p(mode | x)``.

        Raises:
            TypeError: the experts are not :class:`emjax.LinearExpert`.
        """
        if not isinstance(self.family, LinearExpert):
            raise TypeError("predictive_modes needs LinearExpert experts; for 0/1 outputs use predict_mode.")
        n_iter = check_int("n_iter", n_iter, low=1)
        x = self.validate_covariates(params, x)
        comps = params.components
        mu = self.family.mean(comps, x)  # (N, K[, Dy])
        vector = mu.ndim == 3
        var = comps.variance if vector else comps.variance[:, None]  # (K, Dy)
        modes, log_density = _mean_shift(self._gate(params, x), mu if vector else mu[..., None], var, n_iter)
        return (modes if vector else modes[..., 0]), log_density

    def predict_mode(self, params: MixtureParams, x) -> Array:
        """The most probable output at each ``x``: the highest of :meth:`predictive_modes`
        (``(N,)`` or ``(N, Dy)``); for logistic experts the more probable label."""
        if isinstance(self.family, LogisticExpert):
            return (self.predict_mean(params, x) > 0.5).astype(jnp.int32)
        modes, log_density = self.predictive_modes(params, x)
        best = jnp.argmax(log_density, axis=1)
        return jnp.take_along_axis(modes, best.reshape((-1, 1) + (1,) * (modes.ndim - 2)), axis=1)[:, 0]

    def sample(self, key, params: MixtureParams, x) -> tuple[Array, Array]:
        """Draw an output at each ``x``: an expert from ``pi(x)``, then ``y`` from it.

        Args:
            key: PRNG key.
            params: the parameters.
            x: covariates ``(N, P)``.

        Returns:
            ``(y, z)``: outputs ``(N,)`` (``(N, Dy)``; 0/1 for logistic experts) and experts ``(N,)``.
        """
        key = check_key(key)
        x = self.validate_covariates(params, x)
        k_z, k_y = jax.random.split(key)
        z = jax.random.categorical(k_z, self._gate(params, x), axis=1)
        mean = self.family.mean(params.components, x)
        m = jnp.take_along_axis(mean, z.reshape((-1, 1) + (1,) * (mean.ndim - 2)), axis=1)[:, 0]
        if isinstance(self.family, LogisticExpert):
            return jax.random.bernoulli(k_y, m).astype(x.dtype), z
        sd = jnp.sqrt(params.components.variance[z])
        return m + sd * jax.random.normal(k_y, m.shape, x.dtype), z

    def mean(self, params: MixtureParams):
        """Raises: a mixture of experts' mean depends on ``x`` (:meth:`predict_mean`)."""
        raise TypeError("a mixture of experts has no marginal mean: use predict_mean(params, X).")

    def covariance(self, params: MixtureParams):
        """Raises: a mixture of experts' covariance depends on ``x``."""
        raise TypeError("a mixture of experts has no marginal covariance: use predictive_log_prob(params, X, grid).")

    # -- counting parameters -------------------------------------------------------------

    def n_parameters(self, n_features: int, n_outputs: int = 1) -> int:
        """Free parameters on ``n_features`` covariates and ``n_outputs`` outputs (frozen groups not counted)."""
        k = self.n_components
        n_weights = 0 if "weights" in self.frozen else self.gating.n_parameters(k, n_features)
        return n_weights + self.family.n_parameters(k, n_features, self.frozen - {"weights"}, n_outputs)

    def _n_parameters_of(self, data) -> int:
        x, y = data
        return self.n_parameters(int(np.shape(x)[1]), 1 if np.ndim(y) == 1 else int(np.shape(y)[1]))


@jax.jit(static_argnums=3)
def _mean_shift(log_g: Array, mu: Array, var: Array, n_iter: int) -> tuple[Array, Array]:
    """Gaussian mean-shift from every component's mean: ``log_g`` ``(N, K)`` log weights,
    ``mu`` ``(N, K, Dy)`` means, ``var`` ``(K, Dy)`` variances; returns the ``(N, K, Dy)``
    fixed points and their ``(N, K)`` log densities (compiled once per shape)."""

    def log_terms(y):  # y (N, S, Dy) -> (N, S, K): log pi_k N(y | mu_k, var_k)
        d = y[:, :, None, :] - mu[:, None, :, :]
        return log_g[:, None, :] - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var) + d * d / var, axis=-1)

    def shift(_, y):
        a = jax.nn.softmax(log_terms(y), axis=-1)  # (N, S, K)
        return jnp.einsum("nsk,nkd->nsd", a, mu / var) / jnp.einsum("nsk,kd->nsd", a, 1.0 / var)

    modes = jax.lax.fori_loop(0, n_iter, shift, mu)
    return modes, logsumexp(log_terms(modes), axis=-1)
