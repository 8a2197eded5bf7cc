"""Parsimonious Gaussian covariances: mclust's 14 eigen-decomposition models.

Celeux & Govaert (1995) write each covariance as ``Sigma_k = lambda_k D_k A_k D_k^T``:
a volume ``lambda_k = |Sigma_k|^(1/D)``, an orientation ``D_k`` (orthogonal) and a
shape ``A_k`` (diagonal, ``|A_k| = 1``). A model is three letters, volume, shape
and orientation, each ``E`` (equal across the components), ``V`` (variable) or
``I`` (the identity: shape and orientation only), as in mclust (Fraley & Raftery
2002; Scrucca et al. 2016)::

    EII VII EEI VEI EVI VVI EEE VEE EVE VVE EEV VEV EVV VVV

Four coincide with the structures of :mod:`emjax.families._covariance` and are
aliases of them (one implementation per model): ``VII`` is ``"spherical"``,
``VVI`` ``"diag"``, ``EEE`` ``"tied"`` and ``VVV`` ``"full"`` (their shapes,
priors and unconstrained coordinates; ``Gaussian("EEE").covariance_type`` stays
``"EEE"``). The other ten are :class:`Parsimonious` structures: subclasses of
:class:`~emjax.families._covariance.Full` that store every component's matrix,
``covariances`` ``(K, D, D)``, so that densities, moments, scatters, missing-data
conditionals, sampling and the prior's density are the full structure's; only the
M-step (a constrained maximisation), the broad start, the parameter count and the
validation differ.

The M-step maximises ``-1/2 sum_k [n_k log |Sigma_k| + tr(Sigma_k^{-1} W_k)]`` over
the model's set, from the per-component scatters about the new means with the
regularisation's penalty scatter added, ``W_k = S_k + n_k R`` (so EM is exact for
the penalised objective, as for the other structures). Closed forms (Celeux &
Govaert 1995, table 1) for EII, EEI, EVI, EEV, EVV; fixed-point iterations for
the others:

- VEI, VEE, VEV (variable volume, common shape or shape and orientation):
  alternate ``lambda_k = tr(W_k C^{-1}) / (n_k D)`` and
  ``C = sum_k W_k / lambda_k`` scaled to ``|C| = 1`` (for VEV on the eigenvalues
  of ``W_k``, whose eigenvectors are the orientations; Celeux & Govaert 1995).
- EVE, VVE (common orientation): alternate the closed-form volumes and shapes
  given ``D`` with Browne & McNicholas's (2014) two majorisation-minimisation
  steps for ``D``, ``D <- polar(sum_k (alpha_k I - W_k) D Psi_k)`` and
  ``D^T <- polar(sum_k (beta_k I - Psi_k) D^T W_k)`` with
  ``Psi_k = (lambda_k A_k)^{-1}``, ``alpha_k`` the largest eigenvalue of ``W_k``
  and ``beta_k`` that of ``Psi_k``; neither increases
  ``sum_k tr(W_k D Psi_k D^T)``. ``D`` starts at the eigenvectors of ``sum_k W_k``.

The iterations run in a ``lax.while_loop`` until the shared parameter (``C``, the
shape, or ``D``; all of order 1) moves by less than ``sqrt(eps)`` of the dtype in
every entry, at most :data:`INNER_MAX_ITER` times. Each M-step starts afresh from
the scatters, so it is a deterministic function of them.

Components with a count of exactly 0 (the dropped components of
:func:`emjax.select`, beyond its K) take no part in the shared parameters, so a
K-component fit inside a larger program is the K-component fit; their own
matrices are computed from their penalty scatter alone (and the mixture keeps
their old ones).

MAP (a :class:`~emjax.families._priors.NormalInverseWishart`): the prior is the
full structure's on each component, ``Sigma_k ~ IW(S0, nu0)`` restricted to the
model's set, ``mu_k | Sigma_k ~ N(m0, Sigma_k / kappa0)`` (Fraley & Raftery 2007),
so :meth:`log_prior` is :class:`Full`'s and the M-step is the constrained M-step
with the posterior scale ``S0 + W_k + kappa0 dm_k dm_k^T`` in place of ``W_k``
and ``nu0 + n_k + D + 2`` in place of ``n_k``: MAP-EM is exact (monotone) in every
model. Gradient ascent has no unconstrained coordinates for these structures.
"""

from __future__ import annotations

import functools

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
from jax import Array

from ._covariance import Full, cholesky, count_floor, logdet_from_chol, tri_inverse

#: mclust's 14 model names, in mclust's order.
MCLUST_MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
#: The mclust models that are existing structures.
MCLUST_ALIASES = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
#: The most fixed-point steps an iterative M-step takes.
INNER_MAX_ITER = 500

_EXACT = jax.lax.Precision.HIGHEST


def _geometric_mean(v: Array) -> Array:
    """``(...)`` the geometric mean over the last axis of positive ``v`` ``(..., D)``."""
    return jnp.exp(jnp.mean(jnp.log(v), axis=-1))


def _det_root(m: Array) -> Array:
    """``|M|^(1/D)`` of positive definite ``M`` ``(..., D, D)``."""
    return jnp.exp(logdet_from_chol(cholesky(m)) / m.shape[-1])


def _pool(a: Array, live: Array) -> Array:
    """``sum_k a_k`` over the live components (``live`` ``(K,)``); the others add exactly 0."""
    return jnp.sum(jnp.where(live.reshape(live.shape + (1,) * (a.ndim - 1)), a, 0.0), axis=0)


def _diagonal_matrices(v: Array) -> Array:
    """``(..., D, D)`` diagonal matrices from ``v`` ``(..., D)``."""
    return v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)


def _rotate(basis: Array, v: Array) -> Array:
    """``B diag(v) B^T`` for bases ``B`` ``(..., D, D)`` and diagonals ``v`` ``(..., D)``."""
    return jnp.einsum("...ij,...j,...kj->...ik", basis, v, basis, precision=_EXACT)


def _fixed_point(update, start: Array) -> Array:
    """Iterate ``update`` from ``start`` until no entry moves by ``sqrt(eps)`` (at most
    :data:`INNER_MAX_ITER` steps); batches under ``vmap`` stop member by member.

    Differentiated as the fixed point ``x = update(x)`` it converges to (the
    implicit function theorem, with ``update``'s Jacobian formed densely: ``x`` is
    a ``(D, D)`` matrix or a ``(D,)`` vector), not through the loop: forward and
    reverse mode, whatever the number of steps taken."""
    # Every array ``update`` closes over (the scatters, the live mask) becomes an explicit
    # argument, so the derivative rule sees them (``jax.closure_convert`` keeps
    # integer ones closed over, which then leak out of the rule's trace).
    closed = jax.make_jaxpr(update)(start)
    jaxpr = closed.jaxpr

    def converted(x, *consts):
        return jax.core.eval_jaxpr(jaxpr, consts, x)[0]

    return _solve_fixed_point(converted, start, *closed.consts)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _solve_fixed_point(update, start: Array, *consts) -> Array:
    tol = float(np.sqrt(jnp.finfo(start.dtype).eps))

    def cond(carry):
        i, _, change = carry
        return (i < INNER_MAX_ITER) & (change > tol)

    def body(carry):
        i, x, _ = carry
        y = update(x, *consts)
        return i + 1, y, jnp.max(jnp.abs(y - x))

    inf = jnp.asarray(jnp.inf, start.dtype)
    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), start, inf))[1]


@_solve_fixed_point.defjvp
def _solve_fixed_point_jvp(update, primals, tangents):
    start, *consts = primals
    _, *t_consts = tangents
    x = _solve_fixed_point(update, start, *consts)
    # dx = (I - d update/dx)^{-1} (d update/d consts) d consts; the start does not matter.
    b = jax.jvp(lambda *c: update(x, *c), tuple(consts), tuple(t_consts))[1]
    n = x.size
    jac = jax.jacfwd(lambda y: update(y, *consts))(x).reshape(n, n)
    t = jnp.linalg.solve(jnp.eye(n, dtype=x.dtype) - jac, b.reshape(n))
    return x, t.reshape(x.shape)


def _trace_solve(c: Array, w: Array) -> Array:
    """``tr(C^{-1} W_k)`` ``(K,)`` for one positive definite ``C`` ``(D, D)``."""
    linv = tri_inverse(cholesky(c))
    return jnp.einsum("ij,kjl,il->k", linv, w, linv, precision=_EXACT)


def _posterior_scale(scatter: Array, counts: Array, means: Array, prior) -> tuple[Array, Array]:
    """Fraley & Raftery's (2007) posterior scale ``S0 + S_k + kappa0 dm_k dm_k^T`` ``(K, D, D)``
    and power ``nu0 + n_k + D + 2`` ``(K,)`` (``dm_k = mu_k - m0``): the full
    structure's MAP numerator and denominator, which a constrained M-step takes for
    ``W_k`` and ``n_k``."""
    dm = means - prior.m0
    w = prior.S0 + scatter + prior.kappa0 * dm[:, :, None] * dm[:, None, :]
    return w, prior.nu0 + counts + means.shape[-1] + 2


class Parsimonious(Full):
    """A constrained ``lambda_k D_k A_k D_k^T`` model stored as ``(K, D, D)`` matrices.

    Subclasses give :meth:`constrained` (the M-step from ``W_k`` and ``n_k``) and
    their parameter count; everything else is :class:`Full`'s, except that
    gradient ascent is refused. See the module's docstring for the M-steps.

    Example:
        >>> from emjax.families._covariance import covariance_structure
        >>> s = covariance_structure("VEV")
        >>> s.shape(3, 2), s.n_parameters(3, 2)
        ((3, 2, 2), 7)
    """

    has_unconstrained_coordinates: ClassVar[bool] = False

    # -- the constrained M-step --------------------------------------------------------

    def constrained(self, w: Array, n: Array, live: Array) -> Array:
        """The covariances maximising ``-1/2 sum_k [n_k log |Sigma_k| + tr(Sigma_k^{-1} W_k)]``.

        Args:
            w: ``(K, D, D)`` positive definite scatters ``W_k``.
            n: ``(K,)`` positive powers ``n_k`` of ``|Sigma_k|``.
            live: ``(K,)`` booleans: the components that share parameters (a
                dead one's matrix is computed from its own ``W_k`` and the shared
                parameters, which it does not change).

        Returns:
            ``(K, D, D)`` covariances of this model.
        """
        raise NotImplementedError

    def maximize(self, scatter, counts, reg, prior=None, means=None):
        """The constrained M-step (see the module's docstring) from the scatter about the new means.

        Args and Returns: as :meth:`CovarianceStructure.maximize`; the components
        with a count of exactly 0 are left out of the shared parameters.
        """
        if prior is None:
            n = counts + count_floor(scatter.dtype)
            w = scatter + self.penalty_scatter(n, reg)
        else:
            w, n = _posterior_scale(scatter + self.penalty_scatter(counts, reg), counts, means, prior)
        return self.symmetrize(self.constrained(self.symmetrize(w), n, counts > 0))

    def ml_covariances(self, scatter, counts):
        return self.constrained(scatter, counts, counts > 0)

    def map_covariances(self, scatter, counts, means, prior):
        return self.constrained(*_posterior_scale(scatter, counts, means, prior), counts > 0)

    def from_data_covariance(self, cov, n_components, reg):
        """The model's projection of ``cov + diag(reg)`` shared by every component
        (e.g. EII: its mean variance times ``I``)."""
        d = cov.shape[-1]
        w = jnp.broadcast_to(cov + jnp.diag(reg), (n_components, d, d))
        ones = jnp.ones((n_components,), cov.dtype)
        return self.symmetrize(self.constrained(w, ones, ones > 0))

    # -- refused and checked -------------------------------------------------------------

    def unconstrain(self, covariances):
        """Refused: the structure has no unconstrained coordinates (fit it by EM)."""
        raise NotImplementedError(
            f"covariance_type {self.name!r} has no unconstrained coordinates for gradient ascent (GradientAscent); "
            "fit it by EM, or use 'full', 'diag', 'spherical' or 'tied' (VVV, VVI, VII, EEE)."
        )

    def constrain(self, u):
        return self.unconstrain(u)

    def rescale(self, covariances, v):
        return self.unconstrain(covariances)

    def check_values(self, covariances):
        """Positive definite, and of the model's form: its own M-step from
        ``W_k = Sigma_k``, ``n_k = 1`` returns it (to ``1e-6`` of the largest
        variance in float64, ``sqrt(eps)`` scaled up in lower precision)."""
        super().check_values(covariances)
        c = np.asarray(covariances)
        k = c.shape[0]
        back = np.asarray(self.constrained(jnp.asarray(c), jnp.ones((k,), c.dtype), jnp.ones((k,), bool)))
        tol = max(1e-6, 10 * float(np.sqrt(np.finfo(c.dtype).eps))) * np.max(np.abs(np.diagonal(c, axis1=1, axis2=2)))
        if not np.all(np.abs(back - c) <= tol):
            raise ValueError(
                f"covariances are not of the {self.name} form (volume, shape, orientation: "
                f"{self.name[0]}, {self.name[1]}, {self.name[2]}); the nearest such matrices differ by "
                f"{np.max(np.abs(back - c)):.3g}."
            )


class EII(Parsimonious):
    """``lambda I``: one variance for every feature and component."""

    name: ClassVar[str] = "EII"

    def n_parameters(self, n_components, n_features):
        return 1

    def constrained(self, w, n, live):
        k, d = w.shape[:2]
        lam = jnp.trace(_pool(w, live)) / (d * _pool(n, live))
        return jnp.broadcast_to(lam * jnp.eye(d, dtype=w.dtype), (k, d, d))


class EEI(Parsimonious):
    """``lambda A``: one diagonal matrix shared by the components."""

    name: ClassVar[str] = "EEI"

    def n_parameters(self, n_components, n_features):
        return n_features

    def constrained(self, w, n, live):
        k, d = w.shape[:2]
        b = jnp.diagonal(_pool(w, live)) / _pool(n, live)
        return jnp.broadcast_to(jnp.diag(b), (k, d, d))


class VEI(Parsimonious):
    """``lambda_k A``: one diagonal shape, a volume per component (iterative)."""

    name: ClassVar[str] = "VEI"

    def n_parameters(self, n_components, n_features):
        return n_components + n_features - 1

    def constrained(self, w, n, live):
        e = jnp.diagonal(w, axis1=1, axis2=2)  # (K, D)
        lam, shape = _volume_and_common_shape(e, n, live)
        return _diagonal_matrices(lam[:, None] * shape)


class EVI(Parsimonious):
    """``lambda A_k``: one volume, a diagonal shape per component."""

    name: ClassVar[str] = "EVI"

    def n_parameters(self, n_components, n_features):
        return 1 + n_components * (n_features - 1)

    def constrained(self, w, n, live):
        e = jnp.diagonal(w, axis1=1, axis2=2)
        g = _geometric_mean(e)
        lam = _pool(g, live) / _pool(n, live)
        return _diagonal_matrices(lam * e / g[:, None])


class VEE(Parsimonious):
    """``lambda_k C``: one matrix of determinant 1, a volume per component (iterative)."""

    name: ClassVar[str] = "VEE"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return n_components + d - 1 + d * (d - 1) // 2

    def constrained(self, w, n, live):
        d = w.shape[-1]

        def volumes(c):
            return _trace_solve(c, w) / (d * n)

        def update(c):
            pooled = _pool(w / volumes(c)[:, None, None], live)
            return self.symmetrize(pooled / _det_root(pooled))

        pooled = _pool(w, live)
        c = _fixed_point(update, pooled / _det_root(pooled))
        return volumes(c)[:, None, None] * c


class EVE(Parsimonious):
    """``lambda D A_k D^T``: one volume and orientation, a shape per component (iterative)."""

    name: ClassVar[str] = "EVE"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return 1 + n_components * (d - 1) + d * (d - 1) // 2

    def constrained(self, w, n, live):
        def diagonals(e):  # lambda A_k from the scatters' diagonals in the common basis
            g = _geometric_mean(e)
            return (_pool(g, live) / _pool(n, live)) * e / g[:, None]

        return _common_orientation(w, live, diagonals)


class VVE(Parsimonious):
    """``lambda_k D A_k D^T``: one orientation, a volume and shape per component (iterative)."""

    name: ClassVar[str] = "VVE"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return n_components * d + d * (d - 1) // 2

    def constrained(self, w, n, live):
        return _common_orientation(w, live, lambda e: e / n[:, None])


class EEV(Parsimonious):
    """``lambda D_k A D_k^T``: one volume and shape, an orientation per component."""

    name: ClassVar[str] = "EEV"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return d + n_components * d * (d - 1) // 2

    def constrained(self, w, n, live):
        # Each W_k = L_k diag(omega_k) L_k^T (eigenvalues ascending, so the shared
        # shape pairs with them in the order that minimises the trace).
        omega, basis = jnp.linalg.eigh(w)
        pooled = _pool(omega, live)
        g = _geometric_mean(pooled)
        return _rotate(basis, jnp.broadcast_to((g / _pool(n, live)) * pooled / g, omega.shape))


class VEV(Parsimonious):
    """``lambda_k D_k A D_k^T``: one shape, a volume and orientation per component (iterative)."""

    name: ClassVar[str] = "VEV"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return n_components + d - 1 + n_components * d * (d - 1) // 2

    def constrained(self, w, n, live):
        omega, basis = jnp.linalg.eigh(w)
        lam, shape = _volume_and_common_shape(omega, n, live)
        return _rotate(basis, lam[:, None] * shape)


class EVV(Parsimonious):
    """``lambda C_k``: one volume, a matrix of determinant 1 per component."""

    name: ClassVar[str] = "EVV"

    def n_parameters(self, n_components, n_features):
        d = n_features
        return 1 + n_components * (d * (d + 1) // 2 - 1)

    def constrained(self, w, n, live):
        g = _det_root(w)
        return (_pool(g, live) / _pool(n, live)) * w / g[:, None, None]


def _volume_and_common_shape(e: Array, n: Array, live: Array) -> tuple[Array, Array]:
    """VEI / VEV: volumes ``(K,)`` and the shared diagonal shape ``(D,)`` (determinant 1)
    from per-component diagonals ``e`` ``(K, D)`` (the scatters' diagonals, or their
    eigenvalues), alternating ``lambda_k = sum_d e_kd / A_d / (n_k D)`` and
    ``A = sum_k e_k / lambda_k`` normalised."""
    d = e.shape[-1]

    def volumes(shape):
        return jnp.sum(e / shape, axis=-1) / (d * n)

    def update(shape):
        pooled = _pool(e / volumes(shape)[:, None], live)
        return pooled / _geometric_mean(pooled)

    pooled = _pool(e, live)
    shape = _fixed_point(update, pooled / _geometric_mean(pooled))
    return volumes(shape), shape


def _common_orientation(w: Array, live: Array, diagonals) -> Array:
    """EVE / VVE: ``D diag(v_k) D^T`` with ``v_k = diagonals(diag(D^T W_k D))``, and ``D``
    from the eigenvectors of ``sum_k W_k`` by Browne & McNicholas's (2014) two
    majorisation-minimisation steps in turn (each never increases
    ``f(D) = sum_k tr(W_k D Psi_k D^T)``, ``Psi_k = diag(1 / v_k)``): majorising
    with ``alpha_k``, the largest eigenvalue of ``W_k``,
    ``D <- polar(sum_k (alpha_k I - W_k) D Psi_k)``; then with ``beta_k``, the
    largest entry of ``Psi_k``, ``D^T <- polar(sum_k (beta_k I - Psi_k) D^T W_k)``.
    The second converges in tens of steps where the first alone took 1800 (a
    rough start's nearly flat shapes)."""
    alpha = jnp.linalg.eigvalsh(w)[:, -1]  # (K,) the largest eigenvalue of each W_k
    eye = jnp.eye(w.shape[-1], dtype=w.dtype)

    def variances(basis):
        return diagonals(jnp.einsum("ji,kjl,li->ki", basis, w, basis, precision=_EXACT))

    def weights(basis):  # Psi_k (K, D), 0 for the dead components
        return jnp.where(live[:, None], 1.0 / variances(basis), 0.0)

    def polar(f):
        u, _, vt = jnp.linalg.svd(f)
        return u @ vt

    def update(basis):
        psi = weights(basis)
        basis = polar(jnp.einsum("kij,jl,kl->il", alpha[:, None, None] * eye - w, basis, psi, precision=_EXACT))
        psi = weights(basis)
        shrink = jnp.max(psi, axis=1, keepdims=True) - psi  # (K, D) beta_k - Psi_k
        return polar(jnp.einsum("ki,ji,kjl->il", shrink, basis, w, precision=_EXACT)).T

    basis = _fixed_point(update, jnp.linalg.eigh(_pool(w, live))[1])
    return _rotate(basis, variances(basis))


#: The ten structures that are not aliases, by name.
PARSIMONIOUS: dict[str, type[Parsimonious]] = {
    cls.name: cls for cls in (EII, EEI, VEI, EVI, VEE, EVE, VVE, EEV, VEV, EVV)
}
