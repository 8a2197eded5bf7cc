"""M-steps that are not one joint maximisation: ECM's conditional maximisations
(Meng & Rubin, 1993) and generalized EM's improving steps (Dempster, Laird & Rubin, 1977)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import equinox as eqx
import optax

from .._checks import check_int
from ._base import Algorithm, check_no_refine, check_unconstrained
from ._batch import BatchEMState, evaluated


class ECM(Algorithm):
    """Expectation conditional maximisation, ECM (Meng & Rubin, 1993).

    The M-step is a cycle of conditional maximisations, each over one group of
    parameters with the others held at their latest values
    (``model.conditional_m_step``): for models whose joint M-step has no closed
    form but whose conditional ones do. ``e_step="cycle"`` runs one E-step per
    cycle; ``"group"`` (multicycle ECM) one after every conditional
    maximisation, which sees fresher posteriors at the price of more passes.
    Both never decrease the objective: each conditional maximisation raises
    the expected complete-data log-likelihood (plus the log prior) of the
    current statistics.

    Args:
        groups: the cycle, a sequence of groups of parameter-group names (e.g.
            ``(("covariances",), ("weights", "means"))``); default: each of
            ``model.param_groups`` alone, in order. Together they must cover every
            group the model estimates.
        e_step: ``"cycle"`` or ``"group"``.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> algo = emjax.ECM(groups=(("covariances",), ("weights", "means")), e_step="group")
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo)
        >>> print(round(float(result.objective[0]), 2))
        -1130.27
    """

    groups: tuple[tuple[str, ...], ...] | None = eqx.field(static=True, default=None)
    e_step: str = eqx.field(static=True, default="cycle")

    def __check_init__(self):
        if self.e_step not in ("cycle", "group"):
            raise ValueError(f"e_step must be 'cycle' or 'group'; got {self.e_step!r}.")
        if self.groups is not None:
            ok = isinstance(self.groups, tuple) and self.groups and all(
                isinstance(g, tuple) and g and all(isinstance(n, str) for n in g) for g in self.groups
            )
            if not ok:
                raise TypeError(f"groups must be a non-empty tuple of non-empty tuples of group names; got {self.groups!r}.")

    def __init__(self, groups=None, e_step: str = "cycle"):
        if groups is not None and not isinstance(groups, tuple):
            groups = tuple(groups) if isinstance(groups, list) else groups
        if isinstance(groups, tuple):
            groups = tuple((g,) if isinstance(g, str) else tuple(g) if isinstance(g, list) else g for g in groups)
        self.groups = groups
        self.e_step = e_step

    def cycle(self, model) -> tuple[tuple[str, ...], ...]:
        """The conditional maximisations of one step, in order."""
        return self.groups if self.groups is not None else tuple((g,) for g in model.param_groups)

    def validate(self, model, data) -> None:
        check_no_refine(self, model)
        if not model.param_groups or not model.provides("conditional_m_step"):
            raise TypeError(
                f"ECM maximises parameter groups one at a time with model.conditional_m_step(stats, params, groups) "
                f"over model.param_groups; {type(model).__name__} defines {'no param_groups' if not model.param_groups else 'no conditional_m_step'}."
            )
        named = {n for g in self.cycle(model) for n in g}
        unknown = sorted(named - set(model.param_groups))
        if unknown:
            raise ValueError(f"ECM groups {unknown} are not among the model's parameter groups {model.param_groups}.")
        left = [g for g in model.param_groups if g not in named]
        if left:
            raise ValueError(f"ECM groups leave {left} unestimated: cover every group of {model.param_groups} (or freeze it).")

    def init(self, model, params, data, key=None) -> BatchEMState:
        return evaluated(model, params, data, None)

    def step(self, model, state: BatchEMState, data) -> BatchEMState:
        params, stats, passes = state.params, state.stats, state.n_passes
        cycle = self.cycle(model)
        for i, groups in enumerate(cycle):
            params = model.conditional_m_step(stats, params, groups)
            if self.e_step == "group" and i < len(cycle) - 1:
                stats, _ = data.e_step(model, params)
                passes = passes + 1
        return evaluated(model, params, data, passes)


class GeneralizedEM(Algorithm):
    """Generalized EM, GEM (Dempster, Laird & Rubin, 1977): the M-step only has to
    raise the expected complete-data log-likelihood, not maximise it.

    Each M-step runs ``n_steps`` updates of an optax ``optimizer`` on
    ``Q(theta) = E[log p(x, z | theta)] + log p(theta)`` (the model's
    ``expected_log_joint`` of the E-step's statistics, plus the log prior) in
    unconstrained coordinates, from the current parameters, and takes the result
    the best point of the optimizer's path only if ``Q`` rose there; otherwise
    the parameters stay (and the fit stops by ``tol``). Any rise of ``Q`` raises
    the objective, so GEM is monotone; it is the route for models whose M-step
    has no closed form. ``Q`` comes from the statistics alone, so the updates
    cost no pass over the data. The optimizer starts afresh at every M-step.

    Args:
        optimizer: an ``optax.GradientTransformation`` minimising ``-Q / N``;
            default ``optax.lbfgs()`` (its line search keeps the updates
            improving). A first-order method with a fixed step (Adam) overshoots
            near the optimum, where GEM then stops early.
        n_steps: optimizer updates per M-step.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> import optax
        >>> algo = emjax.GeneralizedEM(optax.adam(0.05), n_steps=5)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo, max_iter=20)
        >>> bool(np.all(np.diff(result.trace[0, :21]) >= -1e-6))   # the objective never falls
        True
    """

    optimizer: Any = eqx.field(static=True, default=None)
    n_steps: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if self.optimizer is not None and not (
            callable(getattr(self.optimizer, "init", None)) and callable(getattr(self.optimizer, "update", None))
        ):
            raise TypeError(
                "optimizer must be an optax GradientTransformation (e.g. optax.adam(0.05)); "
                f"got {type(self.optimizer).__name__}."
            )
        check_int("n_steps", self.n_steps)

    def validate(self, model, data) -> None:
        check_unconstrained(self, model)
        check_no_refine(self, model)
        missing = [h for h in ("expected_log_joint", "unconstrain") if not model.provides(h)]
        if missing:
            raise TypeError(
                f"GeneralizedEM climbs model.expected_log_joint(stats, params) in unconstrained coordinates "
                f"(unconstrain/constrain); {type(model).__name__} does not define "
                f"{' or '.join('unconstrain/constrain' if h == 'unconstrain' else h for h in missing)}."
            )

    @property
    def _transform(self) -> optax.GradientTransformationExtraArgs:
        return optax.with_extra_args_support(self.optimizer if self.optimizer is not None else optax.lbfgs())

    def init(self, model, params, data, key=None) -> BatchEMState:
        return evaluated(model, params, data, None)

    def improve(self, model, stats, params, n_total):
        """Parameters whose ``Q`` (of ``stats``) is at least ``params``'."""
        tx = self._transform

        def q(p):
            return model.expected_log_joint(stats, p) + model.log_prior(p)

        def loss(u):
            return -q(model.hold_frozen(model.constrain(u), params)) / n_total

        u0 = model.unconstrain(params)
        v0 = loss(u0)

        def update(_, carry):
            u, opt_state, best_u, best_v = carry
            value, grad = jax.value_and_grad(loss)(u)
            # The best point of the path so far (NaN never wins): an optimizer
            # that overshoots late still returns its improvement.
            better = value < best_v
            best_u = jax.tree.map(lambda a, b: jnp.where(better, a, b), u, best_u)
            best_v = jnp.where(better, value, best_v)
            updates, opt_state = tx.update(grad, opt_state, u, value=value, grad=grad, value_fn=loss)
            return optax.apply_updates(u, updates), opt_state, best_u, best_v

        u, _, best_u, best_v = jax.lax.fori_loop(0, self.n_steps, update, (u0, tx.init(u0), u0, v0))
        last = loss(u)
        better = last < best_v
        best_u = jax.tree.map(lambda a, b: jnp.where(better, a, b), u, best_u)
        candidate = model.hold_frozen(model.constrain(best_u), params)
        accept = q(candidate) >= q(params)  # NaN compares False: keep the parameters
        return jax.tree.map(lambda a, b: jnp.where(accept, a, b), candidate, params)

    def step(self, model, state: BatchEMState, data) -> BatchEMState:
        params = self.improve(model, state.stats, state.params, data.n_points)
        return evaluated(model, params, data, state.n_passes)
