"""The EMModel contract, and the statistics algebra every driver relies on."""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

Params = Any
Stats = Any

#: The hooks every model implements (abstract in :class:`EMModel`).
_REQUIRED = ("e_step", "m_step")
#: Hooks that only make sense as a pair: one without the other is no map.
_PAIRED = {"unconstrain": ("unconstrain", "constrain"), "constrain": ("unconstrain", "constrain")}


class EMModel(eqx.Module):
    """Anything EM can fit: subclass it, implement ``e_step`` and ``m_step``, and every driver works with it.

    The other methods are optional hooks with defaults; override the ones the
    model can answer. Drivers ask :meth:`provides` before compiling whether a
    hook is really implemented (incremental EM needs :meth:`expected_log_joint`,
    ``reinit_collapsed`` needs :meth:`collapsed` and :meth:`reinitialize`).
    A duck-typed object with ``e_step`` and ``m_step`` methods is wrapped in a
    :class:`UserModel` by :func:`as_model`.

    The statistics returned by ``e_step`` must be a pytree additive over data
    points (see :func:`add_stats`): chunks, devices, blocks and streams all sum them.

    Example:
        Dempster, Laird & Rubin's genetic linkage: four counts with cell
        probabilities ``(1/2 + t/4, (1 - t)/4, (1 - t)/4, t/4)``; the latent split
        of the first cell makes the M-step a ratio of counts.

        >>> class Linkage(emjax.EMModel):
        ...     def e_step(self, t, x, weights=None):
        ...         a, b, c, d = jnp.sum(x if weights is None else weights[:, None] * x, axis=0)
        ...         split = a * (t / 4) / (0.5 + t / 4)   # expected part of cell 1 due to t
        ...         loglik = a * jnp.log(0.5 + t / 4) + (b + c) * jnp.log((1 - t) / 4) + d * jnp.log(t / 4)
        ...         return (split + d, b + c), loglik
        ...     def m_step(self, stats, t):
        ...         return stats[0] / (stats[0] + stats[1])
        >>> x = jnp.array([[125.0, 18.0, 20.0, 34.0]])
        >>> result = emjax.fit(Linkage(), x, key=jax.random.key(0), init=jnp.asarray(0.5))
        >>> print(round(float(result.params), 4))
        0.6268
    """

    #: Names ``init`` accepts as its ``method`` (``fit(..., init="kmeans")``); none by default.
    init_methods: ClassVar[tuple[str, ...]] = ()
    #: The keyword options ``e_step`` accepts (algorithms check before compiling):
    #: ``"temperature"`` (a tempered posterior: annealed EM) and ``"assignment"``
    #: with ``"key"`` and ``"n_samples"`` (see :attr:`assignments`); none by default.
    e_step_options: ClassVar[tuple[str, ...]] = ()
    #: The ``assignment=`` values ``e_step`` understands: ``"soft"`` (posterior
    #: probabilities, the default) always; ``"hard"`` (the most probable latent
    #: value: classification EM) and ``"sample"`` (drawn from the posterior with
    #: ``key=`` and ``n_samples=``: stochastic and Monte-Carlo EM, SAEM) where the
    #: model declares them.
    assignments: ClassVar[tuple[str, ...]] = ("soft",)

    @abc.abstractmethod
    def e_step(self, params: Params, x: Any, weights: Array | None = None, **options) -> tuple[Stats, Array]:
        """Expected sufficient statistics and the log-likelihood of ``x`` at ``params``.

        Args:
            params: the current parameters.
            x: the data, a pytree whose leaves share a leading axis ``N``.
            weights: optional ``(N,)`` non-negative per-point weights (repetition counts).
            **options: model-specific E-step options, e.g. ``temperature`` for
                deterministic annealing (:meth:`emjax.Mixture.e_step`).

        Returns:
            ``(stats, loglik)``: statistics additive over points, and the
            (weighted) log-likelihood summed over points.
        """

    @abc.abstractmethod
    def m_step(self, stats: Stats, params: Params) -> Params:
        """The parameters maximising the expected complete-data log likelihood plus the log prior.

        Args:
            stats: statistics summed over the data.
            params: the current parameters: closed-form M-steps ignore them;
                frozen groups, ECM and generalized-EM steps need them.

        Returns:
            The new parameters.
        """

    @property
    def param_groups(self) -> tuple[str, ...]:
        """The parameter groups :meth:`conditional_m_step` maximises one at a time
        (ECM's conditional maximisations); none by default."""
        return ()

    def conditional_m_step(self, stats: Stats, params: Params, groups: tuple[str, ...]) -> Params:
        """The M-step over ``groups`` only, the other groups held at ``params``' values
        (one conditional maximisation of ECM, Meng & Rubin 1993).

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement conditional_m_step(stats, params, groups), which ECM needs."
        )

    @property
    def refine_passes(self) -> int:
        """How many passes over the data :meth:`refine` makes (0: it does nothing)."""
        return 0

    def refine(self, params: Params, new: Params, data) -> Params:
        """Conditional maximisations that need the data, after :meth:`m_step` (ECME).

        A conditional maximisation of the observed-data likelihood (Liu & Rubin's
        ECME) cannot be computed from the E-step's statistics: batch EM calls this
        after every M-step with the :class:`emjax.data.Data` to pass over
        (``data.map_sum``), ``refine_passes`` times at most. The default returns
        ``new``.

        Args:
            params: the parameters of the E-step behind the M-step.
            new: the M-step's parameters.
            data: the data.

        Returns:
            Parameters whose objective is at least ``new``'s.
        """
        return new

    def default_stopping(self):
        """The :class:`emjax.StoppingRule` a fit uses when given none; ``None`` (the
        runner's ``ObjectiveChange()``) by default."""
        return None

    def log_prior(self, params: Params) -> Array:
        """Log prior density of ``params``: 0 (maximum likelihood) by default."""
        return jnp.zeros(())

    def objective(self, stats: Stats, params: Params, loglik: Array) -> Array:
        """What EM increases, at the parameters ``params`` whose E-step gave ``(stats, loglik)``.

        The log-likelihood plus the log prior by default. A model whose
        objective is not a sum over rows (a global latent variable, as in
        Bayesian linear regression) overrides it.
        """
        return loglik + self.log_prior(params)

    def adapt(self, x: Any, weights: Array | None = None) -> "EMModel":
        """The model with constants measured on the data before a fit; itself by default.

        :func:`emjax.fit` calls it once with its :class:`emjax.data.Data`
        (inside the compiled fit; before the host loop for a stream): a
        Gaussian mixture measures the scale its ``reg_covar`` is relative to.
        A loop of your own calls it too (with the data, or an array ``x`` and
        its optional ``weights``).
        """
        return self

    def init(self, key, x: Any, method: str) -> Params:
        """Initial parameters by the named ``method`` (one of :attr:`init_methods`), a pure function of ``key``.

        Raises:
            TypeError: by default: the model has no named initialisations.
        """
        raise TypeError(
            f"{type(self).__name__} has no init(key, x, method); pass initial parameters or a function "
            "(key, x) -> params as init."
        )

    def expected_log_joint(self, stats: Stats, params: Params) -> Array:
        """``E_q[log p(x, z | params)]`` for the posterior that produced ``stats``.

        Linear in ``stats`` and exact up to terms free of ``params``: incremental
        EM tracks its free energy with it.

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement expected_log_joint(stats, params), which incremental EM needs."
        )

    def collapsed(self, params: Params, x: Any) -> Array | None:
        """``(K,)`` booleans: components at a singularity; ``None`` (the default) when the model cannot tell."""
        return None

    def reinitialize(self, key, params: Params, x: Any, mask: Array) -> Params:
        """``params`` with the components in ``mask`` ``(K,)`` started afresh.

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement reinitialize(key, params, x, mask), which "
            "reinit_collapsed needs."
        )

    def validate_data(self, x: Any) -> Any:
        """Check and convert the data before anything is compiled; the leaves as JAX arrays by default."""
        return jax.tree.map(jnp.asarray, x)

    def validate_rows(self, x: Any) -> Any:
        """Check and convert some of the data's rows (a chunk of a stream): the
        checks of :meth:`validate_data` that concern rows, none that concern the
        whole data (such as N >= K). :meth:`validate_data` by default.

        It must keep the data's structure and the shapes of its leaves (only
        their dtypes may change): a stream serves later reads of the same rows
        in the checked dtypes without checking them again.
        """
        return self.validate_data(x)

    @property
    def accepts_weights(self) -> bool:
        """Whether ``e_step`` takes sample weights (an EMModel subclass must)."""
        return True

    def validate_params(self, params: Params, x: Any) -> None:
        """Raise a clear error if ``params`` do not fit the model or the data; no check by default."""

    def unconstrain(self, params: Params) -> Any:
        """The parameters in unconstrained coordinates (gradient ascent); the identity by default."""
        return params

    def constrain(self, u: Any) -> Params:
        """The inverse of :meth:`unconstrain`; the identity by default."""
        return u

    def hold_frozen(self, params: Params, reference: Params) -> Params:
        """``params`` with the model's frozen parameter groups taken from ``reference``; ``params`` by default."""
        return params

    def posterior(self, params: Params, x: Any) -> Array:
        """Posterior probabilities of the latent classes ``(N, K)`` (a stopping rule watches them).

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement posterior(params, x).")

    def row_width(self, x: Any) -> int:
        """Elements per data row of the E-step's largest per-row intermediate, used to size chunks.

        The number of features by default: the trailing size of the data's
        first leaf, 1 for 1-D data. A mixture's is ``K x D``.
        """
        return _n_features(x)

    def provides(self, name: str) -> bool:
        """Whether the hook ``name`` is really implemented, not :class:`EMModel`'s default.

        Drivers check capabilities with it before compiling. ``e_step`` and
        ``m_step`` are always provided; ``unconstrain`` and ``constrain`` only
        together; a name that is no hook of EMModel is provided when the model
        has a callable of that name.

        Example:
            >>> emjax.Mixture(emjax.Gaussian("full"), 3).provides("expected_log_joint")
            True
        """
        if name in _REQUIRED:
            return True
        if not callable(EMModel.__dict__.get(name)):
            return callable(getattr(self, name, None))
        cls = type(self)
        return all(inspect.getattr_static(cls, n) is not EMModel.__dict__[n] for n in _PAIRED.get(name, (name,)))


def _n_features(x) -> int:
    """The trailing size of the first leaf of ``x``, 1 for 1-D (or scalar) data."""
    leaf = jax.tree.leaves(x)[0]
    return int(leaf.shape[-1]) if jnp.ndim(leaf) > 1 else 1


def _missing_methods(obj) -> list[str]:
    return [name for name in _REQUIRED if not callable(getattr(obj, name, None))]


class UserModel(EMModel):
    """A duck-typed model (any object with ``e_step`` and ``m_step``) as an :class:`EMModel`.

    Each hook calls the object's method of the same name when it has one, else
    EMModel's default; :meth:`provides` answers for the object. The object is a
    pytree field: an ``eqx.Module`` model's arrays stay leaves (traced under
    ``jit``, differentiated by ``grad``).

    Args:
        model: an object with callable ``e_step(params, x[, weights])`` and
            ``m_step(stats, params)``; optionally ``log_prior``, ``objective``,
            ``init`` (and ``init_methods``), ``expected_log_joint``, ``collapsed``,
            ``reinitialize``, ``validate_data``, ``validate_rows``, ``validate_params``,
            ``unconstrain`` with ``constrain``, ``hold_frozen``, ``posterior``, ``row_width``.

    Raises:
        TypeError: ``model`` lacks ``e_step`` or ``m_step``.

    Example:
        >>> class Coin:                             # any object with e_step and m_step
        ...     def e_step(self, p, x, weights=None):
        ...         heads = jnp.sum(x) if weights is None else jnp.sum(weights * x)
        ...         n = x.shape[0] if weights is None else jnp.sum(weights)
        ...         return (heads, n), heads * jnp.log(p) + (n - heads) * jnp.log1p(-p)
        ...     def m_step(self, stats, p):
        ...         return stats[0] / stats[1]
        >>> model = emjax.UserModel(Coin())   # what emjax.as_model(Coin()) returns
        >>> model.provides("m_step"), model.provides("log_prior"), model.accepts_weights
        (True, False, True)
    """

    model: Any

    def __init__(self, model: Any):
        missing = _missing_methods(model)
        if missing:
            raise TypeError(_missing_message(model, missing))
        self.model = model

    def _has(self, name: str) -> bool:
        return callable(getattr(self.model, name, None))

    def provides(self, name: str) -> bool:
        """Whether the wrapped object implements the hook ``name`` (see :meth:`EMModel.provides`)."""
        if isinstance(self.model, EMModel):
            return self.model.provides(name)
        return all(self._has(n) for n in _PAIRED.get(name, (name,)))

    @property
    def init_methods(self) -> tuple[str, ...]:
        """The wrapped object's ``init_methods``, ``()`` when it has none."""
        return tuple(getattr(self.model, "init_methods", ()))

    @property
    def e_step_options(self) -> tuple[str, ...]:
        """The wrapped object's ``e_step_options``, ``()`` when it declares none."""
        return tuple(getattr(self.model, "e_step_options", ()))

    @property
    def assignments(self) -> tuple[str, ...]:
        """The wrapped object's ``assignments``, ``("soft",)`` when it declares none."""
        return tuple(getattr(self.model, "assignments", ("soft",)))

    @property
    def param_groups(self) -> tuple[str, ...]:
        """The wrapped object's ``param_groups``, ``()`` when it has none."""
        return tuple(getattr(self.model, "param_groups", ()))

    def conditional_m_step(self, stats: Stats, params: Params, groups: tuple[str, ...]) -> Params:
        if self._has("conditional_m_step"):
            return self.model.conditional_m_step(stats, params, groups)
        return super().conditional_m_step(stats, params, groups)

    @property
    def accepts_weights(self) -> bool:
        """Whether the wrapped ``e_step`` takes a third (weights) argument; ``*args`` counts as yes.

        A driver refuses sample weights before compiling when it is False.
        """
        try:
            signature = inspect.signature(self.model.e_step)
        except (TypeError, ValueError):  # no signature to read (a builtin): let the call decide
            return True
        positional = 0
        for p in signature.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                return True
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                positional += 1
        return positional >= 3

    def e_step(self, params: Params, x: Any, weights: Array | None = None, **options) -> tuple[Stats, Array]:
        """The wrapped ``e_step``: called as ``(params, x)`` without weights and options,
        the weights passed positionally otherwise, the options as keywords."""
        if weights is None and not options:
            return self.model.e_step(params, x)
        return self.model.e_step(params, x, weights, **options)

    def m_step(self, stats: Stats, params: Params) -> Params:
        return self.model.m_step(stats, params)

    def log_prior(self, params: Params) -> Array:
        return self.model.log_prior(params) if self._has("log_prior") else super().log_prior(params)

    def default_stopping(self):
        return self.model.default_stopping() if self._has("default_stopping") else None

    @property
    def refine_passes(self) -> int:
        return int(getattr(self.model, "refine_passes", 0)) if self._has("refine") else 0

    def refine(self, params: Params, new: Params, data) -> Params:
        return self.model.refine(params, new, data) if self._has("refine") else new

    def objective(self, stats: Stats, params: Params, loglik: Array) -> Array:
        if self._has("objective"):
            return self.model.objective(stats, params, loglik)
        return loglik + self.log_prior(params)

    def init(self, key, x: Any, method: str) -> Params:
        if self._has("init"):
            return self.model.init(key, x, method)
        raise TypeError(
            f"{type(self.model).__name__} has no init(key, x, method); pass initial parameters or a function "
            "(key, x) -> params as init."
        )

    def expected_log_joint(self, stats: Stats, params: Params) -> Array:
        if self._has("expected_log_joint"):
            return self.model.expected_log_joint(stats, params)
        raise NotImplementedError(
            f"{type(self.model).__name__} does not implement expected_log_joint(stats, params), which "
            "incremental EM needs."
        )

    def collapsed(self, params: Params, x: Any) -> Array | None:
        return self.model.collapsed(params, x) if self._has("collapsed") else None

    def reinitialize(self, key, params: Params, x: Any, mask: Array) -> Params:
        if self._has("reinitialize"):
            return self.model.reinitialize(key, params, x, mask)
        raise NotImplementedError(
            f"{type(self.model).__name__} does not implement reinitialize(key, params, x, mask), which "
            "reinit_collapsed needs."
        )

    def validate_data(self, x: Any) -> Any:
        return self.model.validate_data(x) if self._has("validate_data") else super().validate_data(x)

    def validate_rows(self, x: Any) -> Any:
        return self.model.validate_rows(x) if self._has("validate_rows") else self.validate_data(x)

    def validate_params(self, params: Params, x: Any) -> None:
        if self._has("validate_params"):
            self.model.validate_params(params, x)

    def unconstrain(self, params: Params) -> Any:
        # Only the pair is a bijection: one without the other falls back to the identity.
        return self.model.unconstrain(params) if self.provides("unconstrain") else params

    def constrain(self, u: Any) -> Params:
        return self.model.constrain(u) if self.provides("constrain") else u

    def hold_frozen(self, params: Params, reference: Params) -> Params:
        return self.model.hold_frozen(params, reference) if self._has("hold_frozen") else params

    def posterior(self, params: Params, x: Any) -> Array:
        if self._has("posterior"):
            return self.model.posterior(params, x)
        raise NotImplementedError(f"{type(self.model).__name__} does not implement posterior(params, x).")

    def row_width(self, x: Any) -> int:
        return int(self.model.row_width(x)) if self._has("row_width") else super().row_width(x)


def _missing_message(model, missing: list[str]) -> str:
    return (
        f"an EM model needs callable e_step(params, x[, weights]) and m_step(stats, params); "
        f"{type(model).__name__} has no {' and no '.join(missing)}."
    )


def as_model(model: Any) -> EMModel:
    """``model`` as an :class:`EMModel`: EMModel instances unchanged, duck-typed
    objects with ``e_step`` and ``m_step`` wrapped in a :class:`UserModel`.

    Args:
        model: an EMModel, or any object with callable ``e_step`` and ``m_step``.

    Returns:
        An EMModel.

    Raises:
        TypeError: naming the missing method(s) when ``model`` has no ``e_step`` or ``m_step``.

    Example:
        >>> class Coin:
        ...     def e_step(self, p, x):                  # no weights argument
        ...         heads = jnp.sum(x)
        ...         return (heads, x.shape[0]), heads * jnp.log(p) + (x.shape[0] - heads) * jnp.log1p(-p)
        ...     def m_step(self, stats, p):
        ...         return stats[0] / stats[1]
        >>> model = emjax.as_model(Coin())
        >>> type(model).__name__, model.accepts_weights
        ('UserModel', False)
        >>> stats, loglik = model.e_step(jnp.asarray(0.5), jnp.array([1.0, 0.0, 1.0, 1.0]))
        >>> print(stats[0], stats[1], round(float(loglik), 4))
        3.0 4 -2.7726
        >>> emjax.as_model(model) is model                   # EMModels pass through
        True
    """
    if isinstance(model, EMModel):
        return model
    missing = _missing_methods(model)
    if missing:
        raise TypeError(_missing_message(model, missing))
    return UserModel(model)


def _adds_itself(node) -> bool:
    return isinstance(node, eqx.Module) and hasattr(type(node), "__add__")


def add_stats(a: Stats, b: Stats) -> Stats:
    """Sum of two statistics pytrees.

    Leaves are added elementwise, except inside a Module that defines
    ``__add__`` (statistics stored about an expansion point, such as
    :class:`emjax.families.GaussianStats`), which adds itself wherever it sits
    in the tree (``(stats, loglik)`` pairs included).
    """
    return jax.tree.map(lambda u, v: u + v if _adds_itself(u) else jnp.add(u, v), a, b, is_leaf=_adds_itself)


def scale_stats(s: Stats, c) -> Stats:
    """Statistics ``s`` multiplied by the scalar ``c``, as if every point's weight were scaled.

    Leaves are multiplied, except inside a Module that defines ``__mul__``
    (statistics stored about an expansion point keep their point). Stepwise EM
    moves running statistics with ``add_stats(scale_stats(new, eta), scale_stats(s, 1 - eta))``.
    """
    scales_itself = lambda node: isinstance(node, eqx.Module) and hasattr(type(node), "__mul__")  # noqa: E731
    return jax.tree.map(lambda a: a * c, s, is_leaf=scales_itself)


def sum_stats(stacked: Stats) -> Stats:
    """The sum over the leading axis of stacked statistics (``add_stats`` folded
    in order, so Modules with their own ``__add__`` add correctly)."""
    first = jax.tree.map(lambda a: a[0], stacked)
    rest = jax.tree.map(lambda a: a[1:], stacked)
    if jax.tree.leaves(stacked)[0].shape[0] == 1:
        return first
    total, _ = jax.lax.scan(lambda acc, s: (add_stats(acc, s), None), first, rest)
    return total
