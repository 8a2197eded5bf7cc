"""Conjugate priors: hyperparameters as pytrees, with their log densities.

A prior turns maximum-likelihood EM into MAP-EM: the M-step returns the mode of
the complete-data posterior and the runner traces the log posterior. For
Gaussian mixtures a prior is the principled remedy for the unbounded likelihood
(a component collapsing onto one point).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import betaln, gammaln, multigammaln, xlog1py, xlogy

from .._checks import as_data_matrix, check_n_components, check_number, check_spd_matrix, concrete, real_array


class Dirichlet(eqx.Module):
    """Dirichlet prior on the mixture weights (or on a multinomial's probabilities).

    The MAP M-step is ``pi_k = (N_k + alpha_k - 1) / (N + sum(alpha) - K)``. With
    ``alpha_k >= 1`` that is the interior mode of the weights' posterior
    ``Dirichlet(N + alpha)``. With ``alpha_k < 1`` (a sparsity prior: Figueiredo &
    Jain 2002 use ``alpha = 1 - T/2``, ``T`` a component's free parameters) the
    posterior is unbounded where a weight reaches 0, and its mode is defined on the
    components that keep ``N_k + alpha_k > 1``: the M-step sets
    ``pi_k = max(N_k + alpha_k - 1, 0) / sum_j max(N_j + alpha_j - 1, 0)``, so a
    component whose expected count falls to ``1 - alpha_k`` or below gets weight
    exactly 0 and is *dropped*: it takes no point from then on, keeps its last
    parameters, and is left out of the prior (the prior of the remaining ``K'``
    weights is ``Dirichlet`` on ``K'`` entries) and of the free-parameter count of
    :meth:`emjax.Mixture.information_criteria`. A dropped component never comes back
    (the components beyond K of :func:`emjax.select` are dropped ones). Between
    drops MAP-EM never decreases the log posterior; at a drop the objective's
    definition changes with ``K'`` and may fall.

    Args:
        alpha: concentration, a positive scalar (symmetric) or ``(K,)``.

    Example:
        >>> prior = Dirichlet(2.0)   # adds one pseudo-count to every component
        >>> print(np.asarray(Dirichlet(0.5).mode(jnp.array([10.0, 0.4, 5.0]))).round(4))   # the second is dropped
        [0.6786 0.     0.3214]
    """

    alpha: Array

    def __init__(self, alpha):
        a = real_array(alpha, "Dirichlet alpha", finite=False)
        if np.any(~np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"Dirichlet alpha must be finite and > 0; got {alpha}.")
        self.alpha = jnp.asarray(a, dtype=float)

    @property
    def sparse(self) -> bool:
        """Whether some ``alpha_k < 1``: the mode may drop components (see the class).
        ``False`` for a traced ``alpha`` (a prior vmapped over): its value is unknown."""
        alpha = concrete(self.alpha)
        return alpha is not None and bool(np.any(alpha < 1))

    def check_interior(self, owner: str) -> None:
        """Raise unless every ``alpha_k >= 1``: ``owner``'s M-step needs an interior mode
        (a category's probability must not become 0; only mixture weights drop)."""
        if self.sparse:
            raise ValueError(
                f"the {owner}'s Dirichlet prior needs alpha >= 1 (below 1 the mode sets a category's probability "
                f"to 0; only a mixture's weights may be dropped); got {np.asarray(self.alpha)}."
            )

    def check_components(self, n_components: int) -> None:
        """Raise unless ``alpha`` fits a weight vector of ``n_components`` entries (a scalar, or ``(K,)``)."""
        shape = tuple(np.shape(self.alpha))
        if shape not in ((), (n_components,)):
            raise ValueError(
                f"the Dirichlet weights prior's alpha must be a scalar or have one entry per component "
                f"(n_components={n_components}); got shape {shape}."
            )

    def concentration(self, n_components: int, dtype) -> Array:
        return jnp.broadcast_to(jnp.asarray(self.alpha, dtype), (n_components,))

    def mode(self, counts: Array, active: Array | None = None) -> Array:
        """MAP weights ``(K,)`` from expected counts ``(K,)``.

        Args:
            counts: ``(K,)`` expected counts ``N_k``.
            active: optional ``(K,)`` mask of the components still in the model
                (the others keep weight 0).

        Returns:
            ``max(N_k + alpha_k - 1, 0)`` over the active components, normalised; if
            no component keeps a positive value (fewer points than ``K (1 - alpha)``),
            all the weight on the active component with the largest count.
        """
        alpha = self.concentration(counts.shape[0], counts.dtype)
        num = jnp.maximum(counts + alpha - 1, 0.0)
        if active is not None:
            num = jnp.where(active, num, 0.0)
        total = jnp.sum(num)
        top = jnp.argmax(counts if active is None else jnp.where(active, counts, -jnp.inf))
        fallback = jax.nn.one_hot(top, counts.shape[0], dtype=counts.dtype)
        return jnp.where(total > 0, num / jnp.where(total > 0, total, 1.0), fallback)

    def log_prob(self, weights: Array) -> Array:
        """``log Dirichlet(weights | alpha)`` over the components of positive weight
        (a dropped component is not in the model; see the class)."""
        alpha = self.concentration(weights.shape[0], weights.dtype)
        kept = weights > 0
        alpha_kept = jnp.where(kept, alpha, 0.0)
        norm = gammaln(jnp.sum(alpha_kept)) - jnp.sum(jnp.where(kept, gammaln(alpha), 0.0))
        return norm + jnp.sum(jnp.where(kept, (alpha - 1) * jnp.log(jnp.where(kept, weights, 1.0)), 0.0))


class NormalInverseWishart(eqx.Module):
    """Normal-inverse-Wishart prior on a Gaussian component's mean and covariance.

    ``Sigma ~ IW(S0, nu0)`` and ``mu | Sigma ~ N(m0, Sigma / kappa0)``. With
    ``kappa0 = 0`` the mean prior is flat (improper); only its ``|Sigma|^{-1/2}``
    factor is kept, so that the M-step below is the exact mode. The full MAP
    M-step for a component with count ``N_k``, mean ``xbar_k`` and scatter ``S_k``:

        mu_k    = (kappa0 m0 + N_k xbar_k) / (N_k + kappa0)
        Sigma_k = (S0 + S_k + kappa0 N_k/(kappa0+N_k) (xbar_k-m0)(xbar_k-m0)^T) / (nu0 + N_k + D + 2)

    The diagonal, spherical and tied covariance types use the matching
    conjugate forms (see :class:`emjax.Gaussian`).

    Attributes:
        m0: ``(D,)`` prior mean.
        kappa0: scalar ``>= 0``, pseudo-count on the mean.
        nu0: scalar ``> D - 1``, degrees of freedom.
        S0: ``(D, D)`` scale matrix, positive definite.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> prior = NormalInverseWishart.fraley_raftery(x, n_components=2)
        >>> model = emjax.Mixture(emjax.Gaussian("full", prior=prior), 2)   # MAP-EM
    """

    m0: Array
    kappa0: Array
    nu0: Array
    S0: Array

    def __init__(self, m0, kappa0, nu0, S0):
        # Every hyperparameter is checked here: a NaN or infinite one would otherwise
        # surface only as a non-finite objective, and a wrong shape as a tracing error.
        m0 = real_array(m0, "m0")
        S0 = real_array(S0, "S0")
        if m0.ndim != 1:
            raise ValueError(f"m0 must have shape (D,); got {m0.shape}.")
        d = m0.shape[0]
        if S0.shape != (d, d):
            raise ValueError(f"S0 must have shape ({d}, {d}) to match m0; got {S0.shape}.")
        kappa0 = check_number("kappa0", kappa0, low=0.0)
        nu0 = check_number("nu0", nu0)
        if not nu0 > d - 1:
            raise ValueError(f"nu0 must be > D - 1 = {d - 1}; got {nu0}.")
        try:
            check_spd_matrix(S0, "S0")
        except ValueError as e:
            raise ValueError(f"S0 must be symmetric positive definite: {e}") from None
        self.m0 = jnp.asarray(m0, dtype=float)
        self.kappa0 = jnp.asarray(kappa0, dtype=float)
        self.nu0 = jnp.asarray(nu0, dtype=float)
        self.S0 = jnp.asarray(S0, dtype=float)

    def n_features(self) -> int:
        """D, the dimension of the data the prior describes."""
        return int(self.m0.shape[0])

    @classmethod
    def fraley_raftery(cls, x, n_components: int, *, kappa0: float = 0.01) -> "NormalInverseWishart":
        """The data-dependent default of Fraley & Raftery (2007, J. Classification).

        ``m0`` = data mean, ``kappa0 = 0.01`` (mclust's default; 0 is allowed),
        ``nu0 = D + 2`` and ``S0 = diag(s_1^2, ..., s_D^2) / K^(1/D)`` from the
        per-feature variances of the pooled data.

        Args:
            x: data ``(N, D)``.
            n_components: K, the number of mixture components.
            kappa0: prior pseudo-count on the means.
        """
        x = np.asarray(as_data_matrix(x), dtype=np.float64)
        check_n_components(n_components)
        kappa0 = check_number("kappa0", kappa0, low=0.0)
        n, d = x.shape
        var = x.var(axis=0, ddof=1) if n > 1 else np.ones(d)
        var = np.where(var > 0, var, 1.0)
        S0 = np.diag(var) / n_components ** (1.0 / d)
        return cls(m0=x.mean(axis=0), kappa0=kappa0, nu0=d + 2.0, S0=S0)

    def cast(self, dtype) -> "NormalInverseWishart":
        """The same prior with its arrays in ``dtype``."""
        return jax.tree.map(lambda a: a.astype(dtype), self)


class BetaPrior(eqx.Module):
    """Beta prior on every Bernoulli probability: ``mu_kd ~ Beta(a_d, b_d)``.

    The MAP M-step is ``mu_kd = (N_k xbar_kd + a_d - 1) / (N_k + a_d + b_d - 2)``,
    which needs ``a, b >= 1`` (below 1 the posterior has no interior mode).
    ``a = b = 1`` is the flat prior (maximum likelihood); ``a = b = 2`` adds one
    pseudo-observation of each value (Laplace smoothing).

    Args:
        a, b: scalars or ``(D,)`` arrays, finite and ``>= 1``.

    Used by :class:`emjax.Bernoulli` and :class:`emjax.Binomial`.

    Example:
        >>> family = emjax.Bernoulli(prior=BetaPrior(2.0, 2.0))   # one pseudo-success and -failure
    """

    a: Array
    b: Array

    def __init__(self, a, b):
        arrays = []
        for name, v in (("a", a), ("b", b)):
            arr = real_array(v, f"BetaPrior {name}", finite=False)
            if arr.ndim > 1:
                raise ValueError(f"BetaPrior {name} must be a scalar or a (D,) array; got shape {arr.shape}.")
            if not np.all(np.isfinite(arr)) or np.any(arr < 1):
                raise ValueError(f"BetaPrior {name} must be finite and >= 1 for a MAP estimate to exist; got {v}.")
            arrays.append(arr)
        a_arr, b_arr = arrays
        if a_arr.ndim == 1 and b_arr.ndim == 1 and a_arr.shape != b_arr.shape:
            raise ValueError(f"BetaPrior a and b must have the same length; got {a_arr.shape} and {b_arr.shape}.")
        self.a = jnp.asarray(a_arr, dtype=float)
        self.b = jnp.asarray(b_arr, dtype=float)

    def n_features(self) -> int | None:
        """D if the hyperparameters are per feature, else ``None``."""
        return _per_feature(self.a, self.b)

    def broadcast(self, n_features: int, dtype) -> tuple[Array, Array]:
        """``(a, b)`` as ``(D,)`` arrays of ``dtype``."""
        return (
            jnp.broadcast_to(jnp.asarray(self.a, dtype), (n_features,)),
            jnp.broadcast_to(jnp.asarray(self.b, dtype), (n_features,)),
        )

    def log_prob(self, probs: Array) -> Array:
        """Elementwise ``log Beta(probs | a, b)`` (same shape as ``probs``)."""
        a = self.a.astype(probs.dtype)
        b = self.b.astype(probs.dtype)
        return xlogy(a - 1, probs) + xlog1py(b - 1, -probs) - betaln(a, b)


class GammaPrior(eqx.Module):
    """Gamma prior on Poisson rates, ``p(lambda) ∝ lambda^(a-1) exp(-b lambda)``.

    The MAP M-step is ``lambda_kd = (S_kd + a - 1) / (N_k + b)``: ``a - 1``
    pseudo-counts spread over ``b`` pseudo-observations. ``a >= 1`` is needed
    for the mode to be the stationary point (below 1 the density is unbounded at 0).

    Args:
        shape: ``a >= 1``, a scalar or ``(D,)`` (one per feature).
        rate: ``b > 0``, a scalar or ``(D,)``.
    """

    shape: Array
    rate: Array

    def __init__(self, shape, rate):
        a = real_array(shape, "GammaPrior shape", finite=False)
        b = real_array(rate, "GammaPrior rate", finite=False)
        if a.ndim > 1 or b.ndim > 1:
            raise ValueError(f"Gamma shape and rate must be scalars or (D,) vectors; got {a.shape} and {b.shape}.")
        if a.ndim == 1 and b.ndim == 1 and a.shape != b.shape:
            raise ValueError(f"GammaPrior shape and rate must have the same length; got {a.shape} and {b.shape}.")
        if not np.all(np.isfinite(a)) or np.any(a < 1):
            raise ValueError(f"Gamma shape a must be finite and >= 1 for a MAP estimate to exist; got {shape}.")
        if not np.all(np.isfinite(b)) or np.any(b <= 0):
            raise ValueError(f"Gamma rate b must be finite and > 0; got {rate}.")
        self.shape = jnp.asarray(a, dtype=float)
        self.rate = jnp.asarray(b, dtype=float)

    def n_features(self) -> int | None:
        """D if the hyperparameters are per feature, else ``None``."""
        return _per_feature(self.shape, self.rate)

    def log_prob(self, rates: Array) -> Array:
        """Elementwise ``log Gamma(rates | a, b)`` (same shape as ``rates``)."""
        a = self.shape.astype(rates.dtype)
        b = self.rate.astype(rates.dtype)
        return xlogy(a, b) - gammaln(a) + xlogy(a - 1, rates) - b * rates


def _per_feature(*hyperparameters: Array) -> int | None:
    """D when some hyperparameter is a ``(D,)`` vector, else ``None`` (all scalars)."""
    for v in hyperparameters:
        if v.ndim == 1:
            return v.shape[0]
    return None


def mean_log_prior_terms(kappa0: Array, quad: Array, logdet: Array, dim: int) -> Array:
    """log N(mu | m0, Sigma/kappa0) given ``quad = (mu-m0)^T Sigma^-1 (mu-m0)``.

    For ``kappa0 = 0`` the flat prior keeps only the ``-logdet/2`` factor.
    """
    safe = jnp.where(kappa0 > 0, kappa0, 1.0)
    const = jnp.where(kappa0 > 0, 0.5 * dim * (jnp.log(safe) - jnp.log(2 * jnp.pi)), 0.0)
    return const - 0.5 * logdet - 0.5 * kappa0 * quad


def inverse_wishart_log_prob(nu0: Array, S0_logdet: Array, trace_term: Array, logdet: Array, dim: int) -> Array:
    """log IW(Sigma | S0, nu0) from ``log|S0|``, ``tr(S0 Sigma^-1)`` and ``log|Sigma|``."""
    return (
        0.5 * nu0 * S0_logdet
        - 0.5 * nu0 * dim * jnp.log(2.0)
        - multigammaln(0.5 * nu0, dim)
        - 0.5 * (nu0 + dim + 1) * logdet
        - 0.5 * trace_term
    )


def inverse_gamma_log_prob(shape: Array, scale: Array, var: Array) -> Array:
    """log InvGamma(var | shape, scale), density ∝ var^-(shape+1) exp(-scale/var)."""
    return shape * jnp.log(scale) - gammaln(shape) - (shape + 1) * jnp.log(var) - scale / var
