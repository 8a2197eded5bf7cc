"""How derivatives flow through a fit (``emjax.fit(..., adjoint=...)``), as in optimistix.

An adjoint runs the fit's compiled loop (:func:`emjax._iterate.start`, ``body``,
``finish``) and so decides what a derivative of the result with respect to the
fit's inputs (the data, sample weights, prior hyperparameters, frozen
parameters) means and how it is computed:

- :class:`ForwardAdjoint` (the default): a ``lax.while_loop``; ``jax.jvp``
  differentiates every step taken; reverse mode is refused by JAX.
- :class:`ImplicitAdjoint`: the loop runs without storing anything, and the
  derivative of the returned parameters is that of EM's fixed point, by the
  implicit function theorem. Forward and reverse mode.
- :class:`RecursiveCheckpointAdjoint`: the iterations themselves, differentiated
  in forward or reverse mode through nested checkpointed scans (for fits stopped
  early, and as the reference the implicit derivative converges to).

**The implicit derivative.** At a fixed point ``p* = M(p*, theta)`` of the EM map
``M`` (an E-step, the M-step, the model's conditional maximisations), with
``theta`` everything the fit reads, ``dp*/dtheta = (I - dM/dp)^{-1} dM/dtheta``.
At a local maximum the eigenvalues of ``dM/dp`` are the fractions of missing
information, in ``[0, 1)`` (Dempster, Laird & Rubin 1977), so ``I - dM/dp`` is
invertible and as well conditioned as EM is fast. The system is solved
matrix-free by GMRES (or the Neumann series ``sum_k (dM/dp)^k``, which converges
as EM does) from Jacobian-vector products of ``M``, inside
``lax.custom_linear_solve``, whose transpose makes reverse mode one more solve
with the transposed products. The fixed point is the same whichever algorithm
found it (gradient ascent and every EM variant stop at stationary points of the
same objective), so the algorithm only chooses the E-step's options
(:meth:`emjax.algorithms.Algorithm.fixed_point_options`: hard EM's hard
assignments).

Why EM's map rather than the gradient of the objective in unconstrained
coordinates: it needs nothing beyond ``e_step`` and ``m_step``, so every model
EM fits has it (the parsimonious covariance structures and the variational
mixture, which have no unconstrained coordinates, and user-defined models);
priors, frozen groups and dropped components are already in the map; and the
natural coordinates have no null directions (a softmax's shift, a Cholesky
factor's signs) for a solver to stall on.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.scipy.linalg
from jax import Array

from ._ad import split_by_tangent
from ._iterate import body, finish, map_restarts, running, start
from ._model import UserModel
from .data import StreamData


class Adjoint(eqx.Module):
    """Abstract base: runs a fit's compiled loop and defines its derivatives."""

    @abc.abstractmethod
    def run(self, problem, params0, keys):
        """The :class:`emjax.FitResult` of the loop from ``params0`` (leading restart axis)."""

    def validate(self, model, algorithm, data) -> None:
        """Raise, before anything is compiled, where this adjoint cannot differentiate the fit."""
        if isinstance(data, StreamData):
            raise TypeError(
                f"{type(self).__name__} differentiates a compiled fit, but a Stream is fitted by a loop on the host, "
                "which JAX cannot differentiate: pass the data as an array (in device memory, or sharded)."
            )


class ForwardAdjoint(Adjoint):
    """Derivatives by differentiating the iterations themselves in forward mode.

    The loop is a ``lax.while_loop``: ``jax.jvp`` and ``jax.jacfwd`` of a fit go
    through every step taken; reverse mode (``jax.grad``) is not available
    through a loop whose length is decided at run time (use
    :class:`ImplicitAdjoint` or :class:`RecursiveCheckpointAdjoint`). The
    default. A start computed by an init method is not differentiated.

    Example:
        The log-likelihood of data scaled by ``s`` drops by ``N D log s``, so its
        derivative at ``s = 1`` is ``-N D`` (-544 here, to the fit's tolerance):

        >>> x, _ = emjax.datasets.old_faithful()   # (272, 2)
        >>> model = emjax.Mixture(emjax.Gaussian("diag"), 2)
        >>> fit = lambda s: emjax.fit(model, x * s, key=jax.random.key(0)).objective[0]
        >>> objective, derivative = jax.jvp(fit, (1.0,), (1.0,))
        >>> print(round(float(derivative), 1))
        -544.0
    """

    def validate(self, model, algorithm, data) -> None:
        """Nothing to refuse: a stream's host loop is simply not differentiated."""

    def run(self, problem, params0, keys):
        loop = start(problem, params0, keys)
        loop = jax.lax.while_loop(lambda s: running(s, problem.max_iter), lambda s: body(problem, s), loop)
        return finish(problem, loop)


class RecursiveCheckpointAdjoint(Adjoint):
    """Derivatives through the iterations taken, in forward or reverse mode, with
    memory bounded by checkpointing.

    The loop runs as ``levels`` nested ``lax.scan``s of ``max_iter`` steps in all
    (a step after every restart has stopped is skipped by a ``lax.cond``), each
    level and each step under ``jax.checkpoint``: reverse mode stores about
    ``levels * max_iter**(1/levels)`` loop states (parameters and statistics,
    not the E-step's ``(N, K)`` intermediates) and recomputes each step about
    ``levels + 1`` times. Its derivative is exactly that of the parameters the
    fit returns, converged or not: the one to use for a fit stopped early (small
    ``max_iter``, a loose ``tol``), and the reference :class:`ImplicitAdjoint`
    converges to as the fit does. Every step costs the scan's bookkeeping even
    when skipped, so keep ``max_iter`` to what the fit needs.

    Args:
        levels: nesting depth of the checkpointed scans (1: plain reverse mode
            through a scan, storing every step's intermediates).

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("diag"), 2)
        >>> adjoint = emjax.RecursiveCheckpointAdjoint()
        >>> loss = lambda x: emjax.fit(model, x, key=jax.random.key(0), max_iter=20, adjoint=adjoint).objective[0]
        >>> grad = jax.grad(loss)(jnp.asarray(x))
        >>> grad.shape
        (272, 2)
        >>> print(round(float(jnp.sum(grad * x)), 1))   # the derivative along a scaling of the data
        -544.0
    """

    levels: int = eqx.field(static=True, default=2)

    def __check_init__(self):
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError(f"levels must be an integer >= 1; got {self.levels!r}.")

    def run(self, problem, params0, keys):
        def step(loop):
            return jax.lax.cond(running(loop, problem.max_iter), lambda s: body(problem, s), lambda s: s, loop)

        loop = start(problem, params0, keys)
        loop = _nested_scan(jax.checkpoint(step), loop, problem.max_iter, self.levels)
        return finish(problem, loop)


def _nested_scan(step, carry, length: int, levels: int):
    """``step`` applied ``>= length`` times: ``levels`` nested scans, each inner scan
    under ``jax.checkpoint`` (so reverse mode stores only the outer scans' carries)."""
    if levels == 1 or length <= 1:
        return jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=length)[0]
    inner = math.ceil(length ** ((levels - 1) / levels))
    outer = math.ceil(length / inner)
    block = jax.checkpoint(lambda c: _nested_scan(step, c, inner, levels - 1))
    return jax.lax.scan(lambda c, _: (block(c), None), carry, None, length=outer)[0]


class ImplicitAdjoint(Adjoint):
    """Derivatives of EM's fixed point by the implicit function theorem.

    The loop runs as a ``lax.while_loop`` and stores nothing for the derivative.
    The returned parameters ``p*`` get the derivative of the fixed point
    ``p* = M(p*, theta)`` of the batch EM map (see the module's docstring):
    ``(I - dM/dp)^{-1} dM/dtheta``, a matrix-free linear solve per restart in
    forward mode and its transpose in reverse mode (``jax.grad``, ``jax.vjp``,
    ``jax.jacrev``, ``jax.jvp``). ``theta`` is everything the fit reads: the
    data, the sample weights, the model's arrays (prior hyperparameters, a fixed
    degree of freedom, ...) and the frozen parameter groups of explicit initial
    parameters. ``result.params``, ``result.restart_params`` and
    ``result.objective`` carry derivatives (the objective's through the data and
    the parameters); the other fields do not (the trace, counts and status).
    The start does not matter to a fixed point, so initial parameters carry no
    derivative other than their frozen groups.

    The derivative is that of a fixed point: for a restart that stopped before
    converging (``status`` ``MAX_ITER``) it is the implicit formula evaluated at
    the returned parameters, an approximation of the converged fit's derivative
    whose error shrinks as the fit converges, not the derivative of the steps
    taken (:class:`RecursiveCheckpointAdjoint` gives that). Stop the fit on the
    parameters when the derivative matters: ``stopping=emjax.ParameterChange()``
    with ``tol=1e-10`` (float64) bounds the parameters' distance from the fixed
    point, and so the derivative's error; the default rule's small change of the
    objective does not (where EM crawls, ``tol=1e-10`` per point left a derivative
    2e-4 off).

    Args:
        solver: ``"gmres"`` (the default: restarted GMRES, usually tens of
            Jacobian products) or ``"neumann"`` (``sum_k (dM/dp)^k b``: one
            product per term, converging as EM does).
        rtol: the solve stops when its residual is below ``rtol`` times the
            right-hand side's norm; ``None``: ``1e-10`` in float64, ``1e-6`` in
            float32.
        max_steps: the most Jacobian products per solve.
        restart: GMRES's Krylov dimension between restarts.

    Raises (before compiling, from :func:`emjax.fit`): ``TypeError`` for a
    stream (fitted on the host), an algorithm without a deterministic fixed point
    (:class:`emjax.StochasticEM`); ``TypeError`` while differentiating (at
    trace time) for parameters without a floating leaf (k-medoids), or an EM map
    JAX cannot transpose (an ``e_step``/``m_step`` with a ``lax.while_loop``).

    Example:
        The held-out log-likelihood's gradient with respect to each training point:

        >>> x, _ = emjax.datasets.old_faithful()
        >>> x_train, x_test = jnp.asarray(x[:200]), x[200:]
        >>> model = emjax.Mixture(emjax.Gaussian("diag"), 2)
        >>> adjoint = emjax.ImplicitAdjoint(solver="neumann")   # cheaper to compile than GMRES for this small fit
        >>> def heldout(x):
        ...     result = emjax.fit(model, x, key=jax.random.key(0), stopping=emjax.ParameterChange(), tol=1e-10,
        ...                        max_iter=1000, adjoint=adjoint)
        ...     return model.score(result.params, x_test)
        >>> jax.grad(heldout)(x_train).shape
        (200, 2)
    """

    solver: str = eqx.field(static=True, default="gmres")
    rtol: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=500)
    restart: int = eqx.field(static=True, default=30)

    def __check_init__(self):
        if self.solver not in ("gmres", "neumann"):
            raise ValueError(f"solver must be 'gmres' or 'neumann'; got {self.solver!r}.")
        if self.rtol is not None and (isinstance(self.rtol, bool) or not isinstance(self.rtol, (int, float))
                                      or not 0 < self.rtol < 1):
            raise ValueError(f"rtol must be a number in (0, 1) or None; got {self.rtol!r}.")
        for name in ("max_steps", "restart"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")

    def validate(self, model, algorithm, data) -> None:
        super().validate(model, algorithm, data)
        if algorithm.fixed_point_options() is None:
            raise TypeError(
                f"ImplicitAdjoint differentiates the fixed point the fit stops at, but {type(algorithm).__name__} "
                "draws its E-step at random and has none: use RecursiveCheckpointAdjoint (the steps taken, for "
                "the draws made) or fit by BatchEM."
            )

    def run(self, problem, params0, keys):
        result = ForwardAdjoint().run(_stop_gradient(problem), _stop_gradient(params0), keys)
        restart_params, objective = _implicit(result.restart_params, result.objective, problem, params0, adjoint=self)
        params = jax.tree.map(lambda a: a[result.best], restart_params)
        return eqx.tree_at(lambda r: (r.params, r.restart_params, r.objective), result,
                           (params, restart_params, objective))

    def _rtol(self, dtype) -> float:
        if self.rtol is not None:
            return self.rtol
        return 1e-10 if jnp.finfo(dtype).bits == 64 else 1e-6

    def solve(self, matvec, b):
        """``x`` with ``matvec(x) = b`` for ``matvec = I - J`` (``J`` a contraction), ``b`` a pytree."""
        flat_b, unravel = jax.flatten_util.ravel_pytree(b)
        rtol = self._rtol(flat_b.dtype)

        def flat_matvec(v):
            return jax.flatten_util.ravel_pytree(matvec(unravel(v)))[0]

        if self.solver == "gmres":
            return unravel(_gmres(flat_matvec, flat_b, rtol, self.restart, self.max_steps))
        return unravel(_neumann(flat_matvec, flat_b, rtol, self.max_steps))


def _gmres(matvec, b: Array, rtol: float, m: int, max_steps: int) -> Array:
    """Restarted GMRES(m) for ``matvec(x) = b`` from ``x = 0``, at most about
    ``max_steps`` products. Each cycle runs Arnoldi steps (Gram-Schmidt twice) with
    Givens rotations tracking the residual, and stops as soon as it is below
    ``rtol |b|``: never more products than the Neumann series needs (its iterates lie
    in the same Krylov spaces). ``matvec`` is traced twice (in the Arnoldi loop and
    for the residual between cycles), which keeps the program small."""
    n = b.shape[0]
    m = min(m, n)
    dtype = b.dtype
    target = rtol * jnp.linalg.norm(b)
    tiny = jnp.finfo(dtype).tiny
    rows = jnp.arange(m + 1)

    def cycle(x, r):
        beta = jnp.linalg.norm(r)

        def cond(carry):
            j, _, _, _, _, g = carry
            return (j < m) & (jnp.abs(g[j]) > target)

        def step(carry):
            j, basis, upper, cs, sn, g = carry
            w = matvec(basis[j])
            live = rows <= j
            h = jnp.zeros((m + 1,), dtype)
            for _ in range(2):  # classical Gram-Schmidt, twice: orthogonal to rounding
                c = jnp.where(live, basis @ w, 0.0)
                w = w - c @ basis
                h = h + c
            norm = jnp.linalg.norm(w)
            basis = basis.at[j + 1].set(w / jnp.maximum(norm, tiny))
            h = h.at[j + 1].set(norm)

            def rotate(i, h):  # the earlier rotations (identities beyond j - 1)
                a, c = h[i], h[i + 1]
                return h.at[i].set(cs[i] * a + sn[i] * c).at[i + 1].set(cs[i] * c - sn[i] * a)

            h = jax.lax.fori_loop(0, m, rotate, h)
            a, c = h[j], h[j + 1]
            d = jnp.maximum(jnp.hypot(a, c), tiny)
            cs, sn = cs.at[j].set(a / d), sn.at[j].set(c / d)
            h = h.at[j].set(d).at[j + 1].set(0.0)
            g = g.at[j + 1].set(-sn[j] * g[j]).at[j].set(cs[j] * g[j])
            return j + 1, basis, upper.at[:, j].set(h[:m]), cs, sn, g

        start = (
            jnp.zeros((), jnp.int32),
            jnp.zeros((m + 1, n), dtype).at[0].set(r / jnp.maximum(beta, tiny)),
            jnp.zeros((m, m), dtype),
            jnp.ones((m,), dtype),  # rotations not yet made are identities
            jnp.zeros((m,), dtype),
            jnp.zeros((m + 1,), dtype).at[0].set(beta),
        )
        j, basis, upper, _, _, g = jax.lax.while_loop(cond, step, start)
        used = jnp.arange(m) < j
        upper = jnp.where(used[:, None] & used[None, :], upper, jnp.eye(m, dtype=dtype))
        y = jax.scipy.linalg.solve_triangular(upper, jnp.where(used, g[:m], 0.0), lower=False)
        return x + y @ basis[:m], j

    def cond(carry):
        products, _, r = carry
        return (products < max_steps) & (jnp.linalg.norm(r) > target)

    def body(carry):
        products, x, r = carry
        x, j = cycle(x, r)
        return products + j + 1, x, b - matvec(x)

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b))[1]


def _neumann(matvec, b: Array, rtol: float, max_steps: int) -> Array:
    """``sum_k J^k b`` for ``matvec = I - J``: ``x <- b + x - matvec(x)`` until a term
    is below ``rtol`` of the sum, at most ``max_steps`` products."""

    def cond(carry):
        i, x, change = carry
        return (i < max_steps) & (change > rtol * jnp.linalg.norm(x))

    def body(carry):
        i, x, _ = carry
        new = b + x - matvec(x)
        return i + 1, new, jnp.linalg.norm(new - x)

    inf = jnp.asarray(jnp.inf, b.dtype)
    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), b, inf))[1]


def _stop_gradient(tree):
    return jax.tree.map(lambda a: jax.lax.stop_gradient(a) if eqx.is_inexact_array(a) else a, tree)


def _name(model) -> str:
    """The model's class name (a duck-typed user model's own, not its wrapper's)."""
    return type(model.model if isinstance(model, UserModel) else model).__name__


def em_map(problem, params, reference, options: dict):
    """One step of the batch EM map at ``params``, with the frozen groups (and
    dropped weights) of ``reference`` held: ``hold(M(hold(params)))``.

    Holding on both sides makes the frozen groups inputs of the map rather than
    coordinates it leaves alone (an identity block, which ``I - dM/dp`` could not
    invert): their derivative flows through ``reference``.
    """
    model, data = problem.model, problem.data
    params = model.hold_frozen(params, reference)
    stats, _ = data.e_step(model, params, **options)
    new = model.m_step(stats, params)
    new = model.refine(params, new, data)
    return model.hold_frozen(new, reference)


@eqx.filter_custom_jvp
def _implicit(restart_params, objective, problem, params0, *, adjoint):
    """The fit's ``(restart_params, objective)`` unchanged; the derivative is the fixed point's."""
    return restart_params, objective


@_implicit.def_jvp
def _implicit_jvp(primals, tangents, *, adjoint):
    p_star, objective, problem, params0 = primals
    _, _, t_problem, t_params0 = tangents
    options = problem.algorithm.fixed_point_options()
    prob_dyn, prob_static, t_prob = split_by_tangent(problem, t_problem)
    ref_dyn, ref_static, t_ref = split_by_tangent(params0, t_params0)
    p_dyn, p_static = eqx.partition(p_star, eqx.is_inexact_array)
    if not jax.tree.leaves(p_dyn):
        raise TypeError(
            f"ImplicitAdjoint differentiates the fitted parameters, but {_name(problem.model)}'s have no "
            "floating-point leaf (e.g. k-medoids' indices): there is no derivative to take."
        )

    def one(d, p_st, ref_d, ref_st, t_ref_d):
        """One restart: the tangent of its parameters and of its objective."""

        def fixed_map(e, prob_d, r_d):  # the floating leaves of the EM map at (e, p_st)
            prob = eqx.combine(prob_d, prob_static)
            out = em_map(prob, eqx.combine(e, p_st), eqx.combine(r_d, ref_st), options)
            return eqx.filter(out, eqx.is_inexact_array)

        def objective_at(e, prob_d):
            prob = eqx.combine(prob_d, prob_static)
            return prob.data.objective(prob.model, eqx.combine(e, p_st), **options)

        _check_reverse(lambda e: fixed_map(e, prob_dyn, ref_d), d, problem)
        b = jax.jvp(lambda pd, rd: fixed_map(d, pd, rd), (prob_dyn, ref_d), (t_prob, t_ref_d))[1]

        def matvec(t):  # (I - dM/dp) t
            return jax.tree.map(jnp.subtract, t, jax.jvp(lambda e: fixed_map(e, prob_dyn, ref_d), (d,), (t,))[1])

        t_d = jax.lax.custom_linear_solve(matvec, b, adjoint.solve, adjoint.solve)
        t_obj = jax.jvp(objective_at, (d, prob_dyn), (t_d, t_prob))[1]
        return t_d, t_obj

    # All restarts as one vmap (whatever restart_batch): in reverse mode JAX cannot
    # transpose the tangents this rule closes over through restart groups run by lax.map.
    args = (p_dyn, p_static, ref_dyn, ref_static, t_ref)
    t_p, t_objective = map_restarts(one, args, jax.tree.leaves(p_dyn)[0].shape[0])
    return (p_star, objective), (t_p, t_objective)


def _check_reverse(fixed_map, d, problem) -> None:
    """Trace (without running) the transposed Jacobian product of the EM map, and
    name the model when JAX cannot transpose it (a ``while_loop`` in its M-step).

    Skipped for emjax's own models, families and gatings (their maps are tested in
    reverse mode; the extra trace costs about as much as tracing a fit)."""
    model = problem.model
    parts = [p for p in (model, getattr(model, "family", None), getattr(model, "gating", None)) if p is not None]
    if not isinstance(model, UserModel) and all(type(p).__module__.startswith("emjax.") for p in parts):
        return

    def transposed(ct):
        return jax.vjp(fixed_map, d)[1](ct)

    try:
        jax.eval_shape(transposed, jax.eval_shape(fixed_map, d))
    except Exception as e:  # noqa: BLE001 - JAX raises several types here; all mean the same to the user
        if "while_loop" not in str(e) and "Reverse-mode" not in str(e):
            raise
        raise TypeError(
            f"ImplicitAdjoint needs the EM map of {_name(problem.model)} (e_step, m_step, refine) to be "
            f"differentiable in reverse mode, and JAX cannot transpose it ({str(e).splitlines()[0].rstrip('.')}). "
            "Write its loops as lax.scan or "
            "fori_loop with fixed bounds, or differentiate the fit in forward mode with ForwardAdjoint."
        ) from None
