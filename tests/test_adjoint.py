"""Derivatives through a whole fit: ImplicitAdjoint and RecursiveCheckpointAdjoint (float64).

Every derivative is checked against a central finite difference of the whole fit,
re-run from the same start at ``x +- h v`` with ``tol=0`` (every step of
``max_iter``, so each fit is at its fixed point to rounding). One compiled program
per case computes the derivatives; one more computes the fit's value, called at
both ends of each difference.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from tests.conftest import random_start
from tests.registry import CASES

KEY = jax.random.key(0)
H = 1e-5
N_FIT, N_TEST = 150, 30


def _central(value, args, i, direction, h=H):
    """``d/dt value(args with args[i] + t direction)`` at 0, by a central difference."""
    plus = list(args)
    minus = list(args)
    plus[i] = args[i] + h * direction
    minus[i] = args[i] - h * direction
    return (float(value(*plus)) - float(value(*minus))) / (2 * h)


@eqx.filter_jit
def kmeans_start(model, x):
    """The k-means start, near the planted solution: fits from it converge in tens of steps."""
    return model.init(jax.random.key(1), x, "kmeans")


def _assert_close(derivative, fd, rtol, what=""):
    assert abs(fd) > 1e-3, (what, fd)  # a direction the function really moves along
    assert abs(float(derivative) - fd) <= rtol * abs(fd), (what, float(derivative), fd)


# -- every family: gradients in x and in the sample weights against finite differences -------------

FAMILIES = ["full", "diag", "spherical", "tied", "student_t_full", "bernoulli", "poisson", "categorical"]
#: The case whose implicit gradient is also compared with the unrolled one, and the one
#: where the Neumann series is checked against GMRES.
UNROLLED, NEUMANN = "full", "poisson"


@pytest.mark.parametrize("name", FAMILIES)
def test_implicit_gradient_equals_finite_differences_of_the_whole_fit(name):
    case = CASES[name]
    # Seed 8 plants Student-t components whose degrees of freedom (about 5, 11, 5) ECM
    # reaches in hundreds of steps (near 100 it creeps for tens of thousands).
    x, _ = case.sample(N_FIT + N_TEST, 8 if name == "student_t_full" else 3)
    x = jnp.asarray(x, jnp.float64)
    x, x_test = x[:N_FIT], x[N_FIT:]
    model = case.model()
    p0 = kmeans_start(model, x)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.uniform(0.5, 1.5, N_FIT))
    v = jnp.asarray(rng.normal(size=x.shape))
    u = jnp.asarray(rng.uniform(-1.0, 1.0, N_FIT))
    # EM is slow for categorical probabilities and degrees of freedom: the fits must
    # reach their fixed point for the difference to be the fixed point's.
    max_iter = 1000 if name in ("categorical", "student_t_full") else 200

    def heldout(x, w, adjoint):
        r = emjax.fit(model, x, weights=w, key=KEY, init=p0, max_iter=max_iter, tol=0.0, adjoint=adjoint)
        return jnp.mean(model.log_prob(r.params, x_test)), r.trace

    value_and_trace = jax.jit(lambda x, w: heldout(x, w, None))
    value = lambda x, w: value_and_trace(x, w)[0]  # noqa: E731
    trace = np.asarray(value_and_trace(x, w)[1][0])
    assert abs(trace[-1] - trace[-20]) < 1e-12 * abs(trace[-1])  # at the fixed point long before the end

    # Category codes are labels, and Poisson counts are rounded to integers: not coordinates.
    differentiable_x = name not in ("categorical", "poisson")
    argnums = (0, 1) if differentiable_x else (1,)

    @jax.jit
    def derivatives(x, w):
        out = {"implicit": jax.grad(lambda *a: heldout(*a, emjax.ImplicitAdjoint())[0], argnums)(x, w)}
        if name == UNROLLED:
            out["unrolled"] = jax.grad(lambda *a: heldout(*a, emjax.RecursiveCheckpointAdjoint())[0], argnums)(x, w)
        if name == NEUMANN:
            out["neumann"] = jax.grad(
                lambda *a: heldout(*a, emjax.ImplicitAdjoint(solver="neumann"))[0], argnums)(x, w)
        return out

    out = derivatives(x, w)
    grads = dict(zip(argnums, out["implicit"]))
    _assert_close(jnp.vdot(grads[1], u), _central(value, (x, w), 1, u), 1e-5)
    if differentiable_x:
        _assert_close(jnp.vdot(grads[0], v), _central(value, (x, w), 0, v), 1e-5)
    for other in ("unrolled", "neumann"):
        if other in out:
            for a, b in zip(out[other], out["implicit"]):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(b))))


# -- priors, frozen groups, restarts, vmap ----------------------------------------------------------


@pytest.fixture(scope="module")
def blobs2():
    x, _ = CASES["full"].sample(N_FIT + N_TEST, 5)
    x = jnp.asarray(x)
    return x[:N_FIT], x[N_FIT:]


def test_gradients_reach_prior_hyperparameters_and_frozen_parameters(blobs2):
    """MAP-EM with a normal-inverse-Wishart and a Dirichlet prior, the means frozen at
    given values: the gradient in ``kappa0``, ``S0``, ``alpha`` and the
    frozen means equals the fit's finite differences."""
    x, x_test = blobs2
    d = x.shape[1]
    prior = emjax.NormalInverseWishart(jnp.zeros(d), 0.5, d + 2.0, jnp.eye(d))
    base = emjax.Mixture(emjax.Gaussian("full", prior=prior), 3, weights_prior=emjax.Dirichlet(jnp.array([2.0, 3.0, 4.0])),
                         frozen="means")
    start = random_start(base, x, 2)
    theta0 = (prior.kappa0, prior.S0, base.weights_prior.alpha, start.components.means)

    def heldout(theta, adjoint):
        kappa0, s0, alpha, means = theta
        model = eqx.tree_at(lambda m: (m.family.prior.kappa0, m.family.prior.S0, m.gating.prior.alpha),
                            base, (kappa0, s0, alpha))
        p0 = eqx.tree_at(lambda p: p.components.means, start, means)
        r = emjax.fit(model, x, key=KEY, init=p0, max_iter=1000, tol=0.0, adjoint=adjoint)
        return jnp.mean(model.log_prob(r.params, x_test))

    grad = jax.jit(jax.grad(lambda t: heldout(t, emjax.ImplicitAdjoint())))(theta0)
    value = jax.jit(lambda *t: heldout(t, None))
    rng = np.random.default_rng(1)
    directions = (1.0, jnp.asarray(np.diag(rng.uniform(0.5, 1.0, d))), jnp.asarray(rng.normal(size=3)),
                  jnp.asarray(rng.normal(size=theta0[3].shape)))
    for i, direction in enumerate(directions):
        direction = jnp.asarray(direction)
        _assert_close(jnp.vdot(grad[i], direction), _central(value, theta0, i, direction), 1e-5, i)


def test_restarts_jit_and_vmap(blobs2):
    """Four random restarts (run one at a time), the gradient flowing through the best one's parameters;
    ``jax.vmap`` of the gradient over two data sets equals each one's finite differences."""
    x, x_test = blobs2
    model = emjax.Mixture(emjax.Gaussian("diag"), 3)

    def heldout(x, adjoint, batch=None):  # this key's second restart ends at a poorer local maximum
        r = emjax.fit(model, x, key=jax.random.key(3), n_restarts=4, init="random", max_iter=150, tol=0.0,
                      adjoint=adjoint, restart_batch_size=batch)
        return jnp.mean(model.log_prob(r.params, x_test)), r

    xs = jnp.stack([x, x * 1.3 + 0.5])
    # The restarts one at a time (lax.map) in the gradient's fit, all at once in the differences'.
    grads = jax.jit(jax.vmap(jax.grad(lambda x: heldout(x, emjax.ImplicitAdjoint(), 1)[0])))(xs)
    value_and_fit = jax.jit(lambda x: heldout(x, None))
    v = jnp.asarray(np.random.default_rng(2).normal(size=x.shape))
    for j in range(2):
        fits = value_and_fit(xs[j])[1]
        assert len(set(np.round(np.asarray(fits.objective), 6))) > 1  # the restarts differ: one is the best
        _assert_close(jnp.vdot(grads[j], v), _central(lambda x: value_and_fit(x)[0], (xs[j],), 0, v), 1e-5)


# -- unconverged fits ---------------------------------------------------------------------------------


def test_unconverged_fit_unrolled_is_exact_and_implicit_approaches_the_fixed_point(blobs2):
    """A fit stopped after 3 steps (status MAX_ITER): RecursiveCheckpointAdjoint's
    gradient is that of the 3 steps (finite differences of the truncated fit), while
    ImplicitAdjoint's is the fixed-point formula at the returned parameters: it misses
    the truncated fit's derivative and approaches the converged fit's gradient as
    the fit converges (``tol`` shrinking)."""
    x, x_test = blobs2
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    p0 = random_start(model, x, 4)

    def heldout(x, tol, max_iter, adjoint):
        r = emjax.fit(model, x, key=KEY, init=p0, max_iter=max_iter, tol=tol, adjoint=adjoint)
        return jnp.mean(model.log_prob(r.params, x_test)), r.status

    v = jnp.asarray(np.random.default_rng(3).normal(size=x.shape))
    truncated = jax.jit(lambda x: heldout(x, 0.0, 3, None))
    status = int(truncated(x)[1][0])
    assert status == emjax.RESULTS.MAX_ITER
    unrolled = jax.grad(lambda x: heldout(x, 0.0, 3, emjax.RecursiveCheckpointAdjoint())[0])
    implicit_short = jax.grad(lambda x: heldout(x, 0.0, 3, emjax.ImplicitAdjoint())[0])
    # tol may be traced: the gradient's program is compiled once for all four.
    implicit = jax.jit(jax.grad(lambda x, tol: heldout(x, tol, 300, emjax.ImplicitAdjoint())[0]))
    fd_truncated = _central(lambda x: truncated(x)[0], (x,), 0, v)
    _assert_close(jnp.vdot(jax.jit(unrolled)(x), v), fd_truncated, 1e-6)
    short = float(jnp.vdot(jax.jit(implicit_short)(x), v))
    assert abs(short - fd_truncated) > 1e-3 * abs(fd_truncated)  # not the truncated fit's derivative
    converged = float(jnp.vdot(implicit(x, 0.0), v))
    errors = [abs(float(jnp.vdot(implicit(x, tol), v)) - converged) for tol in (1e-3, 1e-7, 1e-11)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5 * abs(converged), errors


# -- other models --------------------------------------------------------------------------------------


class TwoMeans(eqx.Module):
    """A duck-typed user model (no EMModel base, no unconstrain/constrain): two unit-variance
    1-D Gaussians with equal weights, parameters the two means."""

    def e_step(self, mu, x, weights=None):
        lp = -0.5 * (x[:, None] - mu[None, :]) ** 2
        lse = jax.nn.logsumexp(lp, axis=1, keepdims=True)
        r = jnp.exp(lp - lse) * (1.0 if weights is None else weights[:, None])
        w = jnp.ones_like(x) if weights is None else weights
        loglik = jnp.sum(w * (lse[:, 0] - np.log(2.0) - 0.5 * np.log(2 * np.pi)))
        return (jnp.sum(r, 0), jnp.sum(r * x[:, None], 0)), loglik

    def m_step(self, stats, mu):
        return stats[1] / stats[0]


class LoopingMeans(TwoMeans):
    """The same model with an M-step written as a ``lax.while_loop`` (JAX cannot transpose it)."""

    def m_step(self, stats, mu):
        return jax.lax.while_loop(lambda m: jnp.any(jnp.abs(m * stats[0] - stats[1]) > 1e-9),
                                  lambda m: stats[1] / stats[0], mu)


def test_user_model_and_parsimonious_structure():
    """A user-defined model's implicit gradient equals finite differences; a parsimonious
    structure (VEV: its M-step an inner fixed-point iteration, differentiated
    implicitly too) gives the same forward derivative through ImplicitAdjoint (jvp and
    grad) as ForwardAdjoint through every step."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(np.concatenate([rng.normal(-2, 1, 80), rng.normal(2.5, 1, 70)]))
    mu0 = jnp.array([-0.5, 0.5])

    def top_mean(x, adjoint, model=TwoMeans()):
        return emjax.fit(model, x, key=KEY, init=mu0, max_iter=300, tol=0.0, adjoint=adjoint).params[1]

    v = jnp.asarray(rng.normal(size=x.shape))
    grad = jax.jit(jax.grad(lambda x: top_mean(x, emjax.ImplicitAdjoint())))(x)
    _assert_close(jnp.vdot(grad, v), _central(jax.jit(lambda x: top_mean(x, None)), (x,), 0, v), 1e-6)
    with pytest.raises(TypeError, match="LoopingMeans.*reverse mode"):
        jax.grad(lambda x: top_mean(x, emjax.ImplicitAdjoint(), LoopingMeans()))(x)

    xg = jnp.asarray(CASES["full"].sample(120, 8)[0])
    model = emjax.Mixture(emjax.Gaussian("VEV"), 3)
    p0 = random_start(model, xg, 1)
    vg = jnp.asarray(rng.normal(size=xg.shape))

    def loglik(x, adjoint):
        r = emjax.fit(model, x, key=KEY, init=p0, max_iter=150, tol=0.0, adjoint=adjoint)
        return jnp.sum(r.params.components.covariances[:, 0, 1]) + r.objective[0] / x.shape[0]

    @jax.jit
    def both(x):
        implicit = jax.jvp(lambda x: loglik(x, emjax.ImplicitAdjoint()), (x,), (vg,))[1]
        reverse = jnp.vdot(jax.grad(lambda x: loglik(x, emjax.ImplicitAdjoint()))(x), vg)
        forward = jax.jvp(lambda x: loglik(x, emjax.ForwardAdjoint()), (x,), (vg,))[1]
        return implicit, reverse, forward

    implicit, reverse, forward = both(xg)
    assert abs(float(forward)) > 1e-2
    np.testing.assert_allclose([implicit, reverse], forward, rtol=1e-6)


class Majority(eqx.Module):
    """A user model whose parameter is an integer (which half of the line holds more points)."""

    def e_step(self, side, x, weights=None):
        w = jnp.ones_like(x) if weights is None else weights
        above = jnp.sum(w * (x > 0))
        return (above, jnp.sum(w) - above), jnp.sum(w * x * jnp.where(side == 1, 1.0, -1.0))

    def m_step(self, stats, side):
        return (stats[0] > stats[1]).astype(jnp.int32)


# -- what cannot be differentiated --------------------------------------------------------------------


def test_what_cannot_be_differentiated_is_refused_clearly(tmp_path):
    x = np.asarray(CASES["full"].sample(60, 1)[0])
    model = emjax.Mixture(emjax.Gaussian("diag"), 2)
    with pytest.raises(TypeError, match="Stream is fitted by a loop on the host"):
        emjax.fit(model, emjax.Stream([x[:30], x[30:]]), key=KEY, adjoint=emjax.ImplicitAdjoint())
    with pytest.raises(TypeError, match="Stream is fitted by a loop on the host"):
        emjax.fit(model, emjax.Stream([x[:30], x[30:]]), key=KEY, adjoint=emjax.RecursiveCheckpointAdjoint())
    with pytest.raises(TypeError, match="StochasticEM draws its E-step at random"):
        emjax.fit(model, x, key=KEY, algorithm=emjax.StochasticEM(), adjoint=emjax.ImplicitAdjoint())
    with pytest.raises(TypeError, match="Majority's have no floating-point leaf"):
        jax.grad(lambda x: emjax.fit(Majority(), x, key=KEY, init=jnp.int32(0), max_iter=3,
                                     adjoint=emjax.ImplicitAdjoint()).objective[0])(jnp.asarray(x[:, 0]))
    # The adjoints' own arguments: tests/test_bad_inputs.py.
