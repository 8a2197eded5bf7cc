"""What every emjax estimator shares: input checks, PRNG keys, precision, the fit.

scikit-learn's conventions are kept where users meet them: hyperparameters are
checked in ``fit`` (never in ``__init__`` or ``set_params``), inputs with
``sklearn.utils.validation.validate_data`` (its messages for NaN, sparse, empty
and mismatched inputs), ``random_state`` as an int, ``None`` or a
``RandomState``, fitted attributes ending in ``_`` as NumPy arrays.

The computation is emjax's: one compiled :func:`emjax.fit` runs every restart
(``n_init``) as one program. It runs in the input's precision: float64 data
are fitted in float64 (inside ``jax.enable_x64``, a scope that changes no
global configuration), float32 data in float32, anything else is converted to
float64 first, as scikit-learn does.
"""

from __future__ import annotations

import abc
import contextlib
import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._chunks import chunked_map
from .._result import RESULTS
from .._runner import fit as _fit

#: scikit-learn's warning when the best initialisation did not converge (its exact words).
NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, "
    "or increase max_iter, tol, or check for degenerate data."
)


def precision(dtype) -> contextlib.AbstractContextManager:
    """The scope a computation on data of ``dtype`` runs in: float64 data need
    JAX's 64-bit mode, which is switched on for the scope only."""
    return jax.enable_x64(np.dtype(dtype) == np.float64)


def random_key(random_state) -> jax.Array:
    """A JAX key drawn from a scikit-learn ``random_state`` (an int gives the same
    key every time; a ``RandomState`` advances, as scikit-learn's estimators do)."""
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return jax.random.key(int(seed))


def to_numpy(tree):
    """A pytree's arrays as NumPy arrays (fitted attributes pickle and leave the device)."""
    return jax.tree.map(np.asarray, tree)


def check_integer(name: str, value, low: int) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"The '{name}' parameter of the estimator must be an int in the range [{low}, inf); got {value!r}.")


def check_real(name: str, value, low: float) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not (
        np.isfinite(value) and value >= low
    ):
        raise ValueError(f"The '{name}' parameter of the estimator must be a finite float >= {low}; got {value!r}.")


def check_option(name: str, value, options) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"The '{name}' parameter of the estimator must be one of {sorted(options)}; got {value!r}.")


def _total_weight(X, weights) -> float:
    return float(X.shape[0]) if weights is None else float(np.sum(weights))


def bucket(n: int) -> int:
    """The row count ``n`` is padded to for prediction: 256 up to 256 rows (one program
    for every small batch), then a multiple of ``2**(b - 3)`` for an ``n`` of ``b``
    bits, so at most 1/8 more rows and a handful of compiled programs per octave of
    sizes instead of one per size."""
    if n <= 256:
        return 256
    step = 1 << (int(n).bit_length() - 3)
    return -(-int(n) // step) * step


def padded(X: np.ndarray) -> np.ndarray:
    """``X`` with copies of its first row appended up to :func:`bucket` rows
    (predictions are row by row, so the extra rows change nothing and are dropped)."""
    extra = bucket(X.shape[0]) - X.shape[0]
    return np.concatenate([X, np.repeat(X[:1], extra, axis=0)]) if extra else X


def log_joint(model, params, x):
    """A model's ``(N, K)`` log joint (``model.log_joint``) over chunks of rows; under
    ``jit``, so only static checks run: the values are checked on the host first."""
    return chunked_map(lambda xc: model.log_joint(params, xc), x, model._chunk_size(x))


@eqx.filter_jit
def _rowwise(fn, model, params, x):
    """``fn(model, params, x)`` (a module-level function), compiled once per
    function, model configuration and shape."""
    return fn(model, params, x)


class EMEstimator(BaseEstimator, metaclass=abc.ABCMeta):
    """An emjax model fitted by :func:`emjax.fit` behind scikit-learn's API.

    Subclasses name the model (:meth:`_build_model`), its start (:meth:`_initial`)
    and what the fitted parameters become as attributes (:meth:`_set_fitted`).
    The fitted emjax objects are kept too: ``model_`` (the :class:`emjax.EMModel`),
    ``params_`` (its parameters, NumPy leaves) and ``fit_result_`` (the
    :class:`emjax.FitResult` of every restart, NumPy leaves).
    """

    #: warn (scikit-learn's ConvergenceWarning) when the best restart did not converge.
    _warn_not_converged = True
    #: ``tol`` and ``lower_bound_`` per point (scikit-learn's GaussianMixture) or in total
    #: (its BayesianGaussianMixture, whose bound is not divided by the number of points).
    _per_point = True

    # -- what a subclass provides --------------------------------------------------------

    @abc.abstractmethod
    def _check_hyperparameters(self, X) -> None:
        """Raise ``ValueError`` naming a bad constructor argument (called by ``fit``)."""

    @abc.abstractmethod
    def _build_model(self, X):
        """The emjax model for data ``X``."""

    @abc.abstractmethod
    def _initial(self, model, X):
        """``emjax.fit``'s ``init``: a method name, a function ``(key, x) -> params`` or parameters."""

    @abc.abstractmethod
    def _set_fitted(self, model, params, X) -> None:
        """Set the scikit-learn attributes from the fitted parameters (NumPy leaves)."""

    def _check_result(self, result) -> None:
        """Raise if no restart gave usable parameters."""
        if np.all(np.asarray(result.status) == RESULTS.INIT_FAILED):
            raise ValueError(
                "every initialisation gave parameters with a non-finite objective; "
                f"{RESULTS.message(RESULTS.INIT_FAILED)}."
            )

    # -- shared machinery ------------------------------------------------------------------

    def _validate(self, X, *, reset: bool):
        return validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=2 if reset else 1)

    def _fit_with(self, X, *, n_restarts_param: str = "n_init", weights=None):
        """Run ``emjax.fit`` (in ``X``'s precision) and set the fitted attributes."""
        with precision(X.dtype):
            model = self._build_model(X)
            key = random_key(self.random_state)
            warm = getattr(self, "warm_start", False) and self._is_fitted() and bool(eqx.tree_equal(self.model_, model))
            if warm:
                init, n_restarts = jax.tree.map(jnp.asarray, self.params_), 1
            else:
                init = self._initial(model, X)
                explicit = not (isinstance(init, str) or callable(init))
                n_restarts = 1 if explicit else int(getattr(self, n_restarts_param))
            verbose = int(getattr(self, "verbose", 0))
            result = _fit(
                model,
                X,
                key=key,
                n_restarts=n_restarts,
                init=init,
                max_iter=int(self.max_iter),
                # emjax's rule is per unit of weight; a total tolerance is divided by it.
                tol=float(self.tol) if self._per_point else float(self.tol) / _total_weight(X, weights),
                weights=weights,
                throw=False,
                verbose=verbose > 0,
                print_every=int(getattr(self, "verbose_interval", 10)),
            )
            self._check_result(result)
            result = to_numpy(result)
        best = int(result.best)
        self.model_ = model
        self.params_ = result.params
        self.fit_result_ = result
        n_points = float(result.n_points) if self._per_point else 1.0
        self.n_iter_ = int(result.n_iter[best])
        self.converged_ = bool(result.converged[best])
        self.lower_bound_ = float(result.objective[best]) / n_points
        self.lower_bounds_ = [float(v) / n_points for v in result.trace[best, 1 : self.n_iter_ + 1]]
        self._set_fitted(model, result.params, X)
        if self._warn_not_converged and not self.converged_ and self.max_iter > 0:
            warnings.warn(NOT_CONVERGED, ConvergenceWarning)
        return self

    def _is_fitted(self) -> bool:
        return hasattr(self, "params_")

    def _prepare(self, X):
        """Check a fitted estimator's input for a prediction method."""
        check_is_fitted(self, "params_")
        return self._validate(X, reset=False)

    def _predicting(self, fn, X):
        """``fn(model_, params_, X)`` of the fitted model, in the fitted precision, as
        NumPy: ``X`` checked (scikit-learn's checks, then the model's own on the host),
        then one compiled program per bucket of row counts (:func:`padded`)."""
        X = self._prepare(X).astype(self._dtype, copy=False)
        self._check_rows(X)
        n = X.shape[0]
        with precision(self._dtype):
            out = _rowwise(fn, self.model_, jax.tree.map(jnp.asarray, self.params_), jnp.asarray(padded(X)))
        return jax.tree.map(lambda a: np.asarray(a)[:n], out)

    def _check_rows(self, X) -> None:
        """The model's own checks of prediction data (a family's support), on the host."""

    @property
    def _dtype(self):
        return jax.tree.leaves(self.params_)[0].dtype
