"""Gradient ascent on the EM objective through any optax optimizer, over unconstrained parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import equinox as eqx
import optax
from jax import Array

from .._checks import check_bool, check_int
from ..data import Data
from ._base import Algorithm, AlgorithmState, check_unconstrained
from ._shuffle import minibatch
from ._stepwise import check_batches


# -- optimizer state the runner can check ---------------------------------------------


class _OptState(eqx.Module):
    """An optax state with its infinite entries moved into boolean masks.

    The runner rejects a step whose state holds a non-finite float (a NaN or an
    overflow). Some optax transforms start with deliberate infinities (the zoom
    line search of ``optax.lbfgs`` stores ``value = inf`` as "not yet computed"),
    so the state is kept as finite values plus the signs of the infinities; NaNs
    are kept as they are and still stop a restart.
    """

    finite: Any
    pos_inf: Any
    neg_inf: Any


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)


def _hide_inf(state) -> _OptState:
    def finite(a):
        if not _is_float(a):
            return a
        a = jnp.asarray(a)
        return jnp.array(jnp.where(jnp.isinf(a), 0, a), dtype=a.dtype)

    def mask(sign):
        return lambda a: jnp.isinf(a) & (sign * a > 0) if _is_float(a) else jnp.zeros((), bool)

    return _OptState(jax.tree.map(finite, state), jax.tree.map(mask(1), state), jax.tree.map(mask(-1), state))


def _restore_inf(state: _OptState):
    def restore(a, pos, neg):
        if not _is_float(a):
            return a
        return jnp.where(pos, jnp.inf, jnp.where(neg, -jnp.inf, a)).astype(a.dtype)

    return jax.tree.map(restore, state.finite, state.pos_inf, state.neg_inf)


def _line_search_passes(opt_state) -> Array:
    """Objective evaluations the optimizer's line search made in its last update
    (each reads the data once); 0 for optimizers without one."""
    try:
        steps = optax.tree.get(opt_state, "num_linesearch_steps")
    except (KeyError, ValueError):  # none, or several line searches: not counted
        steps = None
    return jnp.zeros((), jnp.int32) if steps is None else jnp.asarray(steps, jnp.int32)


# -- the algorithm ----------------------------------------------------------------------


class GradientAscentState(AlgorithmState):
    """Gradient ascent state.

    Attributes:
        unconstrained: the parameters in unconstrained coordinates (``params`` is
            their image under the model's ``constrain``).
        opt_state: the optimizer's state (infinite entries kept as masks, see
            ``_OptState``).
        loss_grad: full batch: the gradient, at ``unconstrained``, of the loss the
            optimizer minimises, ``-objective / N``; ``None`` with mini-batches.
        key: the key that chooses each epoch's shuffle (mini-batches).
        n_updates: optimizer updates done so far.
    """

    unconstrained: Any
    opt_state: _OptState
    loss_grad: Any
    key: Array
    n_updates: Array


class GradientAscent(Algorithm):
    """Gradient ascent on EM's objective with any optax optimizer (Adam, SGD with
    momentum, L-BFGS through ``optax.lbfgs``, ...), full-batch or mini-batch.

    It maximises what EM maximises, the log-likelihood plus the log prior
    (the log posterior of MAP-EM), so EM and gradient ascent share their
    stationary points and their traces compare directly. The optimizer runs over
    unconstrained coordinates (``model.unconstrain`` / ``model.constrain``), so
    every iterate is valid parameters and no projection is needed. For a
    :class:`emjax.Mixture`: weights through log-softmax, Gaussian covariances
    through a Cholesky factor with a log diagonal (diagonal and spherical
    variances through logs), Bernoulli and binomial probabilities through logits,
    categorical and multinomial probabilities through log-probabilities and a
    softmax, Poisson rates through logs. Frozen parameter groups stay fixed.

    A model without ``unconstrain``/``constrain`` (a user-defined EMModel) is
    optimised over its parameters as they are: the user keeps them valid, or
    provides the two methods (``constrain`` mapping any real pytree to valid
    parameters, ``unconstrain`` its inverse). The objective comes from the
    model's ``e_step`` log-likelihood (the statistics it also returns are dead
    code that XLA removes from the gradient program) and ``log_prior``.

    The optimizer minimises ``-(loglik + log_prior) / N``, ``N`` the number of
    points (total weight with ``weights``): learning rates do not depend on the
    size of the data. Unlike EM, which needs no step size and never decreases
    its objective, gradient ascent needs a learning rate (or a line search, as
    L-BFGS has) and may oscillate with too large a one.

    Full batch (``batch_size=None``): one runner step is ``updates_per_step``
    (default 1) optimizer updates, each followed by one value-and-gradient pass
    over the data at the new point, whose value is the traced objective;
    ``n_passes`` counts those passes plus the line search's evaluations.

    Mini-batch (``batch_size=m``): as :class:`emjax.StepwiseEM`, one runner step
    is ``updates_per_step`` (default one epoch, ``N // m``) updates on
    mini-batches that walk a fresh pseudo-random permutation of the rows each
    epoch; each update's gradient is the unbiased estimate ``(N / m)`` x the
    mini-batch log-likelihood plus the log prior. The step ends with one
    full-data evaluation of the objective for the trace (monitoring, not counted
    in ``n_passes``, which counts the rows the updates read). ``tol`` compares
    consecutive evaluations, which noisy updates rarely satisfy: set
    ``max_iter``.

    Args:
        optimizer: an ``optax.GradientTransformation``. Transforms that take
            extra arguments (``optax.lbfgs``'s line search) receive ``value``,
            ``grad`` and ``value_fn`` (the loss above, of the mini-batch when
            mini-batching).
        batch_size: rows per mini-batch, or ``None`` for full-batch gradients.
        updates_per_step: optimizer updates between trace entries (default 1
            full-batch, one epoch with mini-batches).
        shuffle: with mini-batches, draw each epoch's from a fresh permutation
            of the rows (default), or take them in the order of the rows
            (``False``; what a stream read forward needs).

    Example:
        >>> import optax
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), n_components=2)
        >>> algo = emjax.GradientAscent(optax.adam(0.05))
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo, max_iter=50)
        >>> print(round(float(result.objective[0]), 1))
        -1130.3
        >>> lbfgs = emjax.GradientAscent(optax.lbfgs())
        >>> sgd = emjax.GradientAscent(optax.sgd(0.01, momentum=0.9), batch_size=256)
    """

    optimizer: Any = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True, default=None)
    updates_per_step: int | None = eqx.field(static=True, default=None)
    shuffle: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not (callable(getattr(self.optimizer, "init", None)) and callable(getattr(self.optimizer, "update", None))):
            raise TypeError(
                "optimizer must be an optax GradientTransformation (e.g. optax.adam(0.05)); "
                f"got {type(self.optimizer).__name__}."
            )
        for name in ("batch_size", "updates_per_step"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        check_bool("shuffle", self.shuffle)

    def validate(self, model, data) -> None:
        check_unconstrained(self, model)
        if self.batch_size is not None:
            check_batches(self, data)
            if model.provides("objective"):
                raise TypeError(
                    f"GradientAscent with batch_size scales a mini-batch's log-likelihood to the whole data set, "
                    f"but {type(model).__name__} computes its objective from the statistics (not a sum over rows): "
                    "use full-batch gradients (batch_size=None)."
                )

    @property
    def _transform(self) -> optax.GradientTransformationExtraArgs:
        return optax.with_extra_args_support(self.optimizer)

    def _loss(self, model, data: Data, reference, n_total, scale=1.0):
        """``u -> (loss, (params, objective))`` with ``loss = -objective / n_total`` and
        ``objective = scale * loglik + log_prior`` of ``data`` at ``constrain(u)``."""

        def loss(u):
            params = model.hold_frozen(model.constrain(u), reference)
            stats, loglik = data.e_step(model, params)
            objective = model.objective(stats, params, scale * loglik)
            return -objective / n_total, (params, objective)

        return loss

    def init(self, model, params, data, key=None) -> GradientAscentState:
        u = model.unconstrain(params)
        _check_differentiable(model, u)
        n_total = data.n_points
        loss = self._loss(model, data, params, n_total)
        (_, (params, objective)), grad = jax.value_and_grad(loss, has_aux=True)(u)
        opt_state = _hide_inf(self._transform.init(u))
        key = jax.random.key(0) if key is None else key
        loss_grad = grad if self.batch_size is None else None
        return GradientAscentState(
            params, objective, jnp.ones((), objective.dtype), u, opt_state, loss_grad, key, jnp.zeros((), jnp.int32)
        )

    def step(self, model, state: GradientAscentState, data) -> GradientAscentState:
        if self.batch_size is None:
            return self._full_batch_step(model, state, data)
        return self._mini_batch_step(model, state, data)

    def _full_batch_step(self, model, state: GradientAscentState, data) -> GradientAscentState:
        tx = self._transform
        n_total = data.n_points
        loss = self._loss(model, data, state.params, n_total)
        value_fn = lambda u: loss(u)[0]  # noqa: E731

        def update(_, carry):
            u, opt_state, params, objective, grad, passes = carry
            updates, opt_state = tx.update(
                grad, opt_state, u, value=-objective / n_total, grad=grad, value_fn=value_fn
            )
            u = optax.apply_updates(u, updates)
            (_, (params, objective)), grad = jax.value_and_grad(loss, has_aux=True)(u)
            passes = passes + 1 + _line_search_passes(opt_state)
            return u, opt_state, params, objective, grad, passes

        n_updates = self.updates_per_step or 1
        carry = (
            state.unconstrained, _restore_inf(state.opt_state), state.params, state.objective, state.loss_grad,
            jnp.zeros((), jnp.int32),
        )
        u, opt_state, params, objective, grad, passes = jax.lax.fori_loop(0, n_updates, update, carry)
        return GradientAscentState(
            params, objective, state.n_passes + passes.astype(state.n_passes.dtype), u, _hide_inf(opt_state), grad,
            state.key, state.n_updates + n_updates,
        )

    def _mini_batch_step(self, model, state: GradientAscentState, data) -> GradientAscentState:
        tx = self._transform
        n = data.n_rows
        m = self.batch_size
        n_updates = self.updates_per_step or n // m
        n_total = data.n_points

        def update(j, carry):
            u, opt_state, reads = carry
            batch = minibatch(data, state.key, state.n_updates + j, m, self.shuffle)
            # Rows are drawn uniformly, so (n / m) x the batch's log-likelihood
            # estimates the full data's, weighted or not.
            loss = self._loss(model, batch, state.params, n_total, n / m)
            (value, _), grad = jax.value_and_grad(loss, has_aux=True)(u)
            updates, opt_state = tx.update(grad, opt_state, u, value=value, grad=grad, value_fn=lambda v: loss(v)[0])
            return optax.apply_updates(u, updates), opt_state, reads + 1 + _line_search_passes(opt_state)

        carry = (state.unconstrained, _restore_inf(state.opt_state), jnp.zeros((), jnp.int32))
        u, opt_state, reads = jax.lax.fori_loop(0, n_updates, update, carry)
        params = model.hold_frozen(model.constrain(u), state.params)
        objective = data.objective(model, params)
        # Batch reads (line-search evaluations included) in passes over the data.
        n_passes = state.n_passes + reads.astype(state.n_passes.dtype) * (m / n)
        return GradientAscentState(
            params, objective, n_passes, u, _hide_inf(opt_state), None, state.key, state.n_updates + n_updates
        )


def _check_differentiable(model, u) -> None:
    """Refuse, while tracing, unconstrained coordinates with a leaf that is not a float
    array (a mask, a count): gradients and optimizer states exist only for floats."""
    paths = jax.tree_util.tree_flatten_with_path(u)[0]
    bad = [(jax.tree_util.keystr(path), leaf) for path, leaf in paths if not eqx.is_inexact_array(leaf)]
    if bad:
        where, leaf = bad[0]
        raise TypeError(
            f"GradientAscent differentiates every leaf of {type(model).__name__}.unconstrain(params), but "
            f"{where or 'the parameters'} is of dtype {jnp.result_type(leaf)}, not a float: the model has no "
            "unconstrained coordinates for gradient ascent (define unconstrain/constrain over its float "
            "parameters), or fit it by EM."
        )
