"""The Algorithm contract: a pure ``init`` / ``step`` pair, as optax and blackjax use."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array


class AlgorithmState(eqx.Module):
    """What the runner reads of every algorithm's state.

    Attributes:
        params: the current parameters.
        objective: the objective at ``params`` (log-likelihood plus log prior;
            incremental EM reports its free energy, a lower bound on it).
        n_passes: data read so far by the algorithm's updates, in passes over
            the data (an E-step over all points is one pass; stepwise and
            incremental EM read fractions of a pass per update).
    """

    params: Any
    objective: Array
    n_passes: Array


def check_no_refine(algorithm, model) -> None:
    """Refuse a model whose M-step needs passes over all the data (ECME) in an
    algorithm that sees the data a block at a time."""
    if model.refine_passes:
        raise ValueError(
            f"{type(algorithm).__name__} updates the parameters from blocks of the data, but this model's "
            "M-step makes passes over all of it (StudentT(dof_update='ecme')): use BatchEM, or dof_update='ecm'."
        )


def check_unconstrained(algorithm, model) -> None:
    """Refuse what an algorithm stepping in unconstrained coordinates cannot fit: a family
    without them (``has_unconstrained_coordinates``), or a sparse ``Dirichlet(alpha < 1)`` weights
    prior, whose log posterior grows without bound as a weight goes to 0 (EM's M-step
    drops such a component instead)."""
    name = type(algorithm).__name__
    family = getattr(model, "family", None)
    if family is not None and not getattr(family, "has_unconstrained_coordinates", True):
        what, remedy = type(family).__name__, "implement its unconstrain() and constrain()"
        if hasattr(family, "covariance_type"):
            what += f"({family.covariance_type!r}), a parsimonious covariance structure,"
            remedy = "use 'full', 'diag', 'spherical' or 'tied'"
        raise TypeError(
            f"{name} steps in unconstrained coordinates, which {what} does not have: fit it by EM "
            f"(BatchEM, IncrementalEM, StepwiseEM, ECM), or {remedy}."
        )
    if getattr(getattr(model, "weights_prior", None), "sparse", False):
        raise ValueError(
            f"{name} cannot fit a Dirichlet weights prior with alpha < 1: the log posterior grows without bound "
            "as a weight goes to 0. EM's M-step drops such components instead: use BatchEM, IncrementalEM or "
            "StepwiseEM."
        )


def float_dtype_of(tree) -> Any:
    """The dtype of the first floating leaf of ``tree`` (parameters or statistics may
    hold integer leaves, e.g. k-medoids' indices), the default float without one."""
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            return jnp.asarray(leaf).dtype
    return jnp.result_type(float)


def check_e_step(algorithm, model, *, option: str | None = None, assignment: str | None = None) -> None:
    """Refuse, before compiling, a model whose E-step lacks the ``option`` keyword
    or the latent ``assignment`` (``"hard"``, ``"sample"``) that ``algorithm`` needs
    (:attr:`emjax.EMModel.e_step_options`, :attr:`emjax.EMModel.assignments`)."""
    name, model_name = type(algorithm).__name__, type(model).__name__
    if option is not None and option not in model.e_step_options:
        raise TypeError(
            f"{name} needs e_step(..., {option}=...), which {model_name} does not declare in its e_step_options "
            f"{model.e_step_options}."
        )
    if assignment is not None and assignment not in model.assignments:
        raise TypeError(
            f"{name} needs e_step(..., assignment={assignment!r}), which {model_name} does not declare "
            f"(its assignments are {model.assignments})."
        )


class Algorithm(eqx.Module):
    """An EM-family algorithm: ``init(model, params, data, key) -> state`` and
    ``step(model, state, data) -> state``, both pure and jit-able.

    The state must expose ``params``, ``objective`` (at ``params``) and
    ``n_passes``; the runner (:func:`emjax.fit`) loops ``step`` and decides
    when to stop. Algorithms read the data only through the
    :class:`emjax.data.Data` they are given (full passes, ``rows``, ``take``),
    so each runs over in-memory, sharded and streamed data alike. Algorithms
    that draw random numbers keep the key ``init`` receives in their state.
    """

    @abc.abstractmethod
    def init(self, model, params, data, key) -> AlgorithmState:
        """The state at initial ``params`` (evaluates their objective)."""

    @abc.abstractmethod
    def step(self, model, state: AlgorithmState, data) -> AlgorithmState:
        """One iteration (one entry of the trace)."""

    def validate(self, model, data) -> None:
        """Raise, before anything is compiled, if this algorithm cannot fit
        ``model`` (an EMModel) to ``data`` (an :class:`emjax.data.Data`)."""

    def fixed_point_options(self) -> dict | None:
        """The E-step options of the batch EM map whose fixed point this algorithm
        stops at, which :class:`emjax.ImplicitAdjoint` differentiates: ``{}`` (soft
        assignments) by default; ``None`` for an algorithm with no deterministic
        fixed point (stochastic EM's random E-step)."""
        return {}

    def can_stop(self, state: AlgorithmState) -> Array:
        """Whether the fit may stop at ``state`` when the stopping rule holds
        (a veto: an annealing schedule must reach its final temperature first)."""
        return jnp.asarray(True)
