"""Stopping rules: when a restart has converged.

A rule is a small object the user picks (``emjax.fit(..., stopping=...)``); the
number it compares with is ``fit``'s ``tol``, passed as a traced value so that
fitting again with another ``tol`` does not compile again. The loop asks the
rule after every accepted step, per restart, with the states before and after
it; an algorithm may veto convergence (``Algorithm.can_stop``).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array


class StoppingRule(eqx.Module):
    """Abstract base: ``converged(model, data, old, new, tol) -> bool``."""

    @abc.abstractmethod
    def converged(self, model, data, old, new, tol: Array) -> Array:
        """Whether the step from state ``old`` to state ``new`` (of one restart) ends the fit.

        Args:
            model: the EMModel. data: the :class:`emjax.data.Data` fitted.
            old, new: the algorithm's states before and after the step (they
                expose ``params`` and ``objective``).
            tol: the tolerance given to :func:`emjax.fit`.
        """

    def validate(self, model) -> None:
        """Raise, before anything is compiled, if the rule cannot judge ``model``."""


class ObjectiveChange(StoppingRule):
    """``|objective change| < tol * N``: the change per point (per unit of weight)
    is below ``tol``. The default rule (scikit-learn's, with its mean log-likelihood)."""

    def converged(self, model, data, old, new, tol):
        return jnp.abs(new.objective - old.objective) < tol * data.n_points


class RelativeChange(StoppingRule):
    """``|objective change| < tol * |objective|``: a change small relative to the objective."""

    def converged(self, model, data, old, new, tol):
        return jnp.abs(new.objective - old.objective) < tol * jnp.abs(old.objective)


class ParameterChange(StoppingRule):
    """Every parameter moved by less than ``tol`` relative to its size:
    ``|new - old| <= tol * (1 + |old|)`` for every entry of every floating leaf."""

    def converged(self, model, data, old, new, tol):
        checks = [
            jnp.all(jnp.abs(b - a) <= tol * (1 + jnp.abs(a)))
            for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params))
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
        ]
        return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


class ResponsibilityChange(StoppingRule):
    """Smyth's rule: the mean absolute change of the responsibilities is below ``tol``:
    ``sum_n w_n sum_k |r_nk(new) - r_nk(old)| / (N K) < tol``.

    It reads the data once more per step (the responsibilities at both
    parameters), and needs ``model.posterior(params, x)``.
    """

    def validate(self, model) -> None:
        if not model.provides("posterior"):
            raise TypeError(
                f"ResponsibilityChange compares responsibilities, but {type(model).__name__} has no "
                "posterior(params, x); choose another stopping rule."
            )

    def converged(self, model, data, old, new, tol):
        def change(operands, x, w):
            model, a, b = operands
            diff = jnp.abs(model.posterior(b, x) - model.posterior(a, x))
            per_point = jnp.sum(diff, axis=1) / diff.shape[1]
            return jnp.zeros(()), jnp.sum(per_point if w is None else w * per_point)

        _, total = data.map_sum(change, (model, old.params, new.params))
        return total < tol * data.n_points
