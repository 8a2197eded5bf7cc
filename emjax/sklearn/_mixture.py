"""Mixture estimators: ``GaussianMixture``, ``StudentTMixture``, ``MixtureModel``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import equinox as eqx
from scipy import linalg
from sklearn.base import DensityMixin
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from .._result import RESULTS
from ..families import Family, Gaussian, StudentT
from ..families._gaussian import GaussianParams
from ..models._mixture import Mixture, MixtureParams
from ._base import EMEstimator, log_joint as _log_joint, check_integer, check_option, check_real, precision, random_key, to_numpy

#: scikit-learn's ``init_params`` and the :meth:`emjax.Mixture.init` method each means.
INIT_METHODS = {
    "kmeans": "kmeans",  # labels of a k-means clustering, then one M-step
    "k-means++": "kmeans++",  # k-means++ centres as the means
    "random": "random_resp",  # one M-step from random responsibilities
    "random_from_data": "random",  # distinct random data points as the means
}

SKLEARN_TYPES = ("full", "tied", "diag", "spherical")


@eqx.filter_jit
def _sample(model, params, key, n: int):
    return model.sample(key, params, n)


class _Override(eqx.Module):
    """An ``init`` for :func:`emjax.fit`: the model's init method, then the
    parameters the user gave (``weights_init`` ...) in place of the drawn ones."""

    model: Mixture
    method: str = eqx.field(static=True)
    weights: jax.Array | None
    means: jax.Array | None
    covariances: jax.Array | None

    def __call__(self, key, x):
        p = self.model.init(key, x, self.method)
        weights = p.weights if self.weights is None else self.weights.astype(p.weights.dtype)
        components = p.components
        if self.means is not None:
            components = eqx.tree_at(lambda c: c.means, components, self.means.astype(components.means.dtype))
        if self.covariances is not None:
            components = eqx.tree_at(
                lambda c: c.covariances, components, self.covariances.astype(components.covariances.dtype)
            )
        return MixtureParams(weights, components)


# -- scikit-learn's checks of user-given initial parameters (its messages) -------------------


def _check_shape(param, shape, name):
    if np.shape(param) != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {np.shape(param)}")


def check_weights(weights, n_components: int, dtype):
    weights = check_array(weights, dtype=dtype, ensure_2d=False)
    _check_shape(weights, (n_components,), "weights")
    if np.any(np.less(weights, 0.0)) or np.any(np.greater(weights, 1.0)):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got max value "
            f"{np.min(weights):.5f}, min value {np.max(weights):.5f}"
        )
    if not np.allclose(np.abs(1.0 - np.sum(weights)), 0.0):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {np.sum(weights):.5f}")
    return weights


def check_means(means, n_components: int, n_features: int, dtype):
    means = check_array(means, dtype=dtype, ensure_2d=False)
    _check_shape(means, (n_components, n_features), "means")
    return means


def check_precisions(precisions, covariance_type: str, n_components: int, n_features: int, dtype):
    """Checked precisions and the covariances they mean (through Cholesky factors)."""
    precisions = check_array(precisions, dtype=dtype, ensure_2d=False, allow_nd=covariance_type == "full")
    shape = {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]
    _check_shape(precisions, shape, f"{covariance_type} precision")
    name = f"'{covariance_type} precision'"
    if covariance_type in ("diag", "spherical"):
        if np.any(np.less_equal(precisions, 0.0)):
            raise ValueError(f"{name} should be positive")
        return precisions, 1.0 / precisions
    matrices = precisions if covariance_type == "full" else precisions[None]
    for p in matrices:
        if not (np.allclose(p, p.T) and np.all(linalg.eigvalsh(p) > 0.0)):
            raise ValueError(f"{name} should be symmetric, positive-definite")
    covariances = np.stack([_inverse_spd(p) for p in matrices])
    return precisions, covariances if covariance_type == "full" else covariances[0]


def _inverse_spd(p):
    """``p^-1`` of a symmetric positive definite matrix, by its Cholesky factor."""
    chol = linalg.cholesky(p, lower=True)
    inv_chol = linalg.solve_triangular(chol, np.eye(p.shape[0], dtype=p.dtype), lower=True)
    return inv_chol.T @ inv_chol


def precision_cholesky(covariances, covariance_type: str):
    """scikit-learn's ``precisions_cholesky_``: ``L^-T`` for each covariance ``L L^T``
    (full, tied), ``1 / sqrt(variance)`` (diag, spherical)."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(covariances)
    matrices = covariances if covariance_type == "full" else covariances[None]
    eye = np.eye(matrices.shape[-1], dtype=matrices.dtype)
    out = np.stack([linalg.solve_triangular(linalg.cholesky(c, lower=True), eye, lower=True).T for c in matrices])
    return out if covariance_type == "full" else out[0]


def precisions_from_cholesky(prec_chol, covariance_type: str):
    if covariance_type in ("diag", "spherical"):
        return prec_chol**2
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return np.einsum("kij,klj->kil", prec_chol, prec_chol)


def _logsumexp(a):
    top = np.max(a, axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)
    return safe + np.log(np.sum(np.exp(a - safe[:, None]), axis=1))


class _MixtureEstimator(DensityMixin, EMEstimator):
    """A :class:`emjax.Mixture` behind scikit-learn's mixture API (``BaseMixture``'s methods)."""

    #: the ``init_params`` accepted.
    _init_options = tuple(INIT_METHODS)

    def _check_common(self, X) -> None:
        check_integer("n_components", self.n_components, 1)
        check_real("tol", self.tol, 0.0)
        check_integer("max_iter", self.max_iter, 0)
        check_integer("n_init", self.n_init, 1)
        check_option("init_params", self.init_params, self._init_options)
        check_integer("verbose", self.verbose, 0)
        check_integer("verbose_interval", self.verbose_interval, 1)
        if X.shape[0] < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {X.shape[0]}"
            )

    def _initial(self, model, X):
        return INIT_METHODS[self.init_params]

    def fit(self, X, y=None):
        """Estimate the parameters by EM (``n_init`` restarts in one compiled program).

        Args:
            X: ``(n_samples, n_features)`` data.
            y: ignored.

        Returns:
            ``self``.
        """
        X = self._validate(X, reset=True)
        self._check_hyperparameters(X)
        return self._fit_with(X)

    def fit_predict(self, X, y=None):
        """Fit, then the most probable component of each row of ``X`` (``(n_samples,)``)."""
        return self.fit(X, y).predict(X)

    def _joint(self, X):
        """``log pi_k + log p(x_n | theta_k)``: ``(n_samples, K)``, one compiled program."""
        return self._predicting(_log_joint, X)

    def _check_rows(self, X) -> None:
        self.model_.validate_prediction(self.params_, X)

    def predict(self, X):
        """The most probable component of each row: ``(n_samples,)`` integers."""
        return np.argmax(self._joint(X), axis=1)

    def predict_proba(self, X):
        """Each row's posterior over the components: ``(n_samples, n_components)``."""
        lj = self._joint(X)
        lj = np.exp(lj - np.max(lj, axis=1, keepdims=True))
        return lj / np.sum(lj, axis=1, keepdims=True)

    def score_samples(self, X):
        """The log density of each row: ``(n_samples,)``."""
        return _logsumexp(self._joint(X))

    def score(self, X, y=None):
        """The mean log density of the rows of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1):
        """Draw ``n_samples`` points from the fitted mixture.

        Args:
            n_samples: a positive integer.

        Returns:
            ``(X (n_samples, n_features), y (n_samples,))``: the points and their
            components, ordered by component as scikit-learn's are.
        """
        check_is_fitted(self, "params_")
        if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one sample."
            )
        model, params = self._sampler()
        # Drawn in blocks of a power of two (at least 1024), the first n kept (i.i.d.
        # draws, so a sample): one compiled sampler serves every n up to the block's size.
        block = 1 << max(10, (int(n_samples) - 1).bit_length())
        with precision(self._dtype):
            x, z = _sample(model, jax.tree.map(jnp.asarray, params), random_key(self.random_state), block)
            x, z = np.asarray(x)[:n_samples], np.asarray(z)[:n_samples]
        order = np.argsort(z, kind="stable")
        return x[order], z[order].astype(np.int64)

    def _sampler(self):
        """The mixture ``sample`` draws from and its parameters."""
        return self.model_, self.params_


class _CriteriaMixture(_MixtureEstimator):
    """A maximum-likelihood mixture: adds the information criteria."""

    def bic(self, X):
        """Bayesian information criterion ``-2 log L + p log N`` on ``X`` (lower is better)."""
        return -2.0 * float(np.sum(self.score_samples(X))) + self._n_parameters() * np.log(X.shape[0])

    def aic(self, X):
        """Akaike information criterion ``-2 log L + 2 p`` on ``X`` (lower is better)."""
        return -2.0 * float(np.sum(self.score_samples(X))) + 2 * self._n_parameters()

    def _n_parameters(self) -> int:
        """The number of free parameters (scikit-learn's private name, kept for its tests)."""
        return int(self.model_.n_parameters(self.n_features_in_))


class GaussianMixture(_CriteriaMixture):
    """A Gaussian mixture fitted by EM: scikit-learn's ``GaussianMixture``, computed by emjax.

    The constructor arguments, fitted attributes and methods are scikit-learn's
    (``sklearn.mixture.GaussianMixture``), and ``reg_covar`` is its absolute
    ``reg_covar * I``. All ``n_init`` initialisations run as one compiled
    :func:`emjax.fit` (``vmap`` over restarts) on the CPU or GPU.

    **Convergence, side by side.** Both stop when the mean log-likelihood changes
    by less than ``tol`` between iterations, and both count ``n_iter_`` as the
    M-steps taken. scikit-learn's iteration ``n`` evaluates the log-likelihood of
    the parameters ``p_{n-1}`` (its E-step) and then computes ``p_n``; it returns
    ``p_n`` with ``lower_bound_ = LL(p_{n-1})``, so on convergence it has taken one
    M-step past the two parameter sets whose log-likelihoods met the test.
    emjax evaluates each new ``p_n`` (the E-step that the next iteration needs)
    before testing, and returns the ``p_n`` whose change met the test with
    ``lower_bound_ = LL(p_n)``, the log-likelihood of the returned parameters. On
    the same path, emjax therefore stops one M-step earlier (``n_iter_`` one
    smaller) with parameters one M-step behind scikit-learn's and a log-likelihood
    that differs by less than ``tol`` per point. ``max_iter=0`` returns the
    initialisation in both. With ``reg_covar > 0`` emjax's ``lower_bound_`` is the
    penalised log-likelihood its EM increases (``reg_covar`` as the M-step of a
    penalty ``-tr(R Sigma_k^-1) / 2`` per component and point; see
    :class:`emjax.Gaussian`), which differs from ``score`` by about
    ``reg_covar * D / 2`` times the mean precision.

    **Initialisations** (``init_params``) keep scikit-learn's meanings: ``"kmeans"``,
    the labels of a k-means clustering (k-means++ seeding and 10 Lloyd iterations;
    scikit-learn iterates its ``KMeans`` to convergence), then one M-step;
    ``"k-means++"``, k-means++ centres as the means; ``"random"``, one M-step from
    random responsibilities; ``"random_from_data"``, distinct random points as the
    means. With ``"k-means++"`` and ``"random_from_data"`` scikit-learn starts the
    covariances from one point each (so at ``reg_covar``); emjax starts them at the
    data's spread. ``weights_init``, ``means_init`` and ``precisions_init`` replace
    the initialisation's values, as scikit-learn's do.

    Args:
        n_components: the number of components.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        tol: the convergence threshold on the change of the mean log-likelihood.
        reg_covar: added to the covariances' diagonals.
        max_iter: the most EM iterations per initialisation.
        n_init: initialisations, all fitted in one program; the best is kept.
        init_params: ``"kmeans"``, ``"k-means++"``, ``"random"`` or ``"random_from_data"``.
        weights_init, means_init, precisions_init: user-given initial parameters.
        random_state: an int, a ``RandomState`` or ``None``.
        warm_start: start each ``fit`` from the previous fit's parameters.
        verbose: print the log-likelihood while fitting (``> 0``).
        verbose_interval: iterations between printed lines.

    Attributes:
        weights_: ``(n_components,)``.
        means_: ``(n_components, n_features)``.
        covariances_: ``(K, D, D)`` full, ``(D, D)`` tied, ``(K, D)`` diag, ``(K,)`` spherical.
        precisions_: their inverses; ``precisions_cholesky_``: the Cholesky factors of the precisions.
        converged_, n_iter_, lower_bound_, lower_bounds_: of the best initialisation.
        n_features_in_: the number of features seen in ``fit``.
        model_, params_, fit_result_: the :class:`emjax.Mixture`, its parameters and
            the :class:`emjax.FitResult` of every initialisation.

    Example:
        >>> import numpy as np
        >>> from emjax.sklearn import GaussianMixture
        >>> X = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (50, 2)) for m in (-5, 5)])
        >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
        >>> np.round(np.sort(gm.means_[:, 0]))
        array([-5.,  5.])
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    def _check_hyperparameters(self, X) -> None:
        self._check_common(X)
        check_option("covariance_type", self.covariance_type, SKLEARN_TYPES)
        check_real("reg_covar", self.reg_covar, 0.0)

    def _build_model(self, X):
        family = Gaussian(self.covariance_type, reg_covar=float(self.reg_covar), reg_scale=1.0)
        return Mixture(family, int(self.n_components))

    def _initial(self, model, X):
        k, d = model.n_components, X.shape[1]
        weights = means = covariances = None
        if self.weights_init is not None:
            weights = check_weights(self.weights_init, k, X.dtype)
        if self.means_init is not None:
            means = check_means(self.means_init, k, d, X.dtype)
        if self.precisions_init is not None:
            _, covariances = check_precisions(self.precisions_init, self.covariance_type, k, d, X.dtype)
        method = INIT_METHODS[self.init_params]
        if weights is None and means is None and covariances is None:
            return method
        if weights is not None and means is not None and covariances is not None:
            return MixtureParams(jnp.asarray(weights), GaussianParams(jnp.asarray(means), jnp.asarray(covariances)))
        as_jax = lambda a: None if a is None else jnp.asarray(a)  # noqa: E731
        return _Override(model, method, as_jax(weights), as_jax(means), as_jax(covariances))

    def _check_result(self, result) -> None:
        if np.all(np.asarray(result.status) == RESULTS.INIT_FAILED):  # every start singular
            raise ValueError(
                "Fitting the mixture model failed because some components have ill-defined empirical "
                "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
                "the number of components, increase reg_covar, or scale the input data."
            )

    def _initialize(self, X, resp):
        """The parameters of one M-step from responsibilities ``resp`` ``(N, K)``, with
        ``weights_init``, ``means_init`` and ``precisions_init`` in place of theirs
        (scikit-learn's private step, kept for its tests); sets the fitted attributes."""
        X = self._validate(X, reset=True)
        resp = check_array(resp, dtype=X.dtype)
        with precision(X.dtype):
            # K is the responsibilities' (scikit-learn's step reads it from them).
            model = Mixture(self._build_model(X).family, resp.shape[1])
            start = self._initial(model, X)
            params = to_numpy(model.init_from_resp(jnp.asarray(X), jnp.asarray(resp, X.dtype)))
        if isinstance(start, _Override):
            params = to_numpy(MixtureParams(
                params.weights if start.weights is None else start.weights,
                GaussianParams(
                    params.components.means if start.means is None else start.means,
                    params.components.covariances if start.covariances is None else start.covariances,
                ),
            ))
        elif isinstance(start, MixtureParams):
            params = to_numpy(start)
        self.model_, self.params_ = model, params
        self._set_fitted(model, params, X)

    def _set_parameters(self, params):
        """Set ``(weights, means, covariances, precisions_cholesky)`` as the fitted
        parameters (scikit-learn's private setter, kept for its tests)."""
        weights, means, covariances, _ = params
        self.n_features_in_ = np.shape(means)[1]
        with precision(np.asarray(means).dtype):
            self.model_ = self._build_model(np.asarray(means))
        self.params_ = to_numpy(MixtureParams(weights, GaussianParams(means, covariances)))
        self._set_fitted(self.model_, self.params_, None)

    def _set_fitted(self, model, params, X) -> None:
        self.weights_ = params.weights
        self.means_ = params.components.means
        self.covariances_ = params.components.covariances
        self.precisions_cholesky_ = precision_cholesky(self.covariances_, self.covariance_type)
        self.precisions_ = precisions_from_cholesky(self.precisions_cholesky_, self.covariance_type)


class StudentTMixture(_CriteriaMixture):
    """A mixture of multivariate Student-t distributions fitted by EM (ECM for the
    degrees of freedom), with scikit-learn's mixture API.

    Heavy tails make it robust to outliers: each point's weight in the M-step
    shrinks with its distance (:class:`emjax.StudentT`). The methods are
    :class:`GaussianMixture`'s, with the same convergence semantics.

    Args:
        n_components: the number of components.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"`` (of the scale matrices).
        dof: fixed degrees of freedom (a number > 0), or ``None`` to estimate
            one per component.
        tol, reg_covar, max_iter, n_init, init_params, random_state, warm_start,
            verbose, verbose_interval: as for :class:`GaussianMixture`.

    Attributes:
        weights_: ``(K,)``.
        means_: ``(K, D)`` locations.
        scales_: the scale matrices, in ``covariances_``'s shapes for ``covariance_type``;
            a component's covariance is ``nu / (nu - 2)`` times its scale where ``nu > 2``.
        degrees_of_freedom_: ``(K,)``.
        converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, model_,
            params_, fit_result_: as for :class:`GaussianMixture`.

    Example:
        >>> import numpy as np
        >>> from emjax.sklearn import StudentTMixture
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.standard_t(3, (100, 2)) - 6, rng.standard_t(3, (100, 2)) + 6])
        >>> st = StudentTMixture(n_components=2, random_state=0).fit(X)
        >>> np.round(np.sort(st.means_[:, 0]))
        array([-6.,  6.])
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        dof=None,
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.dof = dof
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    def _check_hyperparameters(self, X) -> None:
        self._check_common(X)
        check_option("covariance_type", self.covariance_type, SKLEARN_TYPES)
        check_real("reg_covar", self.reg_covar, 0.0)
        if self.dof is not None:
            check_real("dof", self.dof, 0.0)
            if self.dof <= 0:
                raise ValueError(f"The 'dof' parameter of the estimator must be None or a number > 0; got {self.dof!r}.")

    def _build_model(self, X):
        dof = None if self.dof is None else float(self.dof)
        family = StudentT(self.covariance_type, dof=dof, reg_covar=float(self.reg_covar), reg_scale=1.0)
        return Mixture(family, int(self.n_components))

    def _set_fitted(self, model, params, X) -> None:
        self.weights_ = params.weights
        self.means_ = params.components.means
        self.scales_ = params.components.covariances
        self.degrees_of_freedom_ = params.components.dofs


class MixtureModel(_CriteriaMixture):
    """A mixture of any emjax component family, with scikit-learn's mixture API.

    ``family`` is an emjax family object: ``emjax.Gaussian("diag")``,
    ``emjax.StudentT()``, ``emjax.Bernoulli()``, ``emjax.Categorical(n_categories)``,
    ``emjax.Multinomial()``, ``emjax.Binomial(n_trials)``, ``emjax.Poisson()``, with
    its own options (priors, regularisation). The data are checked against the
    family's support at ``fit`` and at prediction time (e.g. Poisson counts must
    be non-negative integers), with errors naming the row and column.

    Args:
        family: an :class:`emjax.families.Family`; ``None`` means :class:`GaussianMixture`'s
            family, ``emjax.Gaussian("full", reg_covar=1e-6, reg_scale=1.0)``.
        n_components: the number of components.
        missing: treat NaN entries as missing at random (families that support it).
        tol, max_iter, n_init, init_params, random_state, warm_start, verbose,
            verbose_interval: as for :class:`GaussianMixture`.

    Attributes:
        weights_: ``(K,)``.
        components_: the family's fitted parameters (e.g. ``PoissonParams(rates (K, D))``), NumPy leaves.
        converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, model_,
            params_, fit_result_: as for :class:`GaussianMixture`.

    Example:
        >>> import numpy as np, emjax
        >>> from emjax.sklearn import MixtureModel
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.poisson(2.0, (100, 3)), rng.poisson(20.0, (100, 3))])
        >>> mm = MixtureModel(emjax.Poisson(), n_components=2, random_state=0).fit(X)
        >>> np.sort(mm.components_.rates[:, 0]).round(2)   # the two groups' sample means
        array([ 2.12, 19.46])
    """

    def __init__(
        self,
        family=None,
        n_components=1,
        *,
        missing=False,
        tol=1e-3,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.family = family
        self.n_components = n_components
        self.missing = missing
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    def _family(self):
        # GaussianMixture's default family (scikit-learn's absolute reg_covar): MixtureModel()
        # is GaussianMixture() and shares its compiled programs.
        return Gaussian("full", reg_covar=1e-6, reg_scale=1.0) if self.family is None else self.family

    def _check_hyperparameters(self, X) -> None:
        self._check_common(X)
        if not (self.family is None or isinstance(self.family, Family)):
            raise ValueError(
                "The 'family' parameter of MixtureModel must be an emjax family such as emjax.Poisson() "
                f"(or None for GaussianMixture's full-covariance Gaussian); got {self.family!r}."
            )
        if not isinstance(self.missing, (bool, np.bool_)):
            raise ValueError(f"The 'missing' parameter of MixtureModel must be True or False; got {self.missing!r}.")

    def _validate(self, X, *, reset: bool):
        # NaN passes scikit-learn's check when it marks missing entries.
        from sklearn.utils.validation import validate_data

        return validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=2 if reset else 1,
            ensure_all_finite="allow-nan" if self.missing else True,
        )

    def _build_model(self, X):
        model = Mixture(self._family(), int(self.n_components), missing=bool(self.missing))
        model.validate_rows(X)  # the family's support, named by row and column, before compiling
        return model

    def _set_fitted(self, model, params, X) -> None:
        self.weights_ = params.weights
        self.components_ = params.components
