"""EM with sampled latent variables: stochastic EM, Monte-Carlo EM and SAEM."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_int, check_number
from ._base import Algorithm, AlgorithmState, check_e_step, check_no_refine, float_dtype_of
from ._stepwise import stepwise_update


class SampledEMState(AlgorithmState):
    """State of the EM variants whose E-step draws the latent variables.

    Attributes:
        stats: the statistics the next M-step uses (drawn at ``params``; SAEM's
            running average).
        key: the key of the draws (one fresh key per step, folded from it).
        n_steps: steps taken.
    """

    stats: Any
    key: Array
    n_steps: Array


class _SampledEM(Algorithm):
    """The shared loop: draw the latent classes at the current parameters
    (``n_samples(t)`` per point), combine the drawn statistics with the old
    (:meth:`combine`), maximise. The objective reported is the
    log-likelihood at the parameters, evaluated by the same pass that draws."""

    def validate(self, model, data) -> None:
        check_no_refine(self, model)
        check_e_step(self, model, option="assignment", assignment="sample")

    def draws(self, step: Array):
        """Draws per point at step ``step`` (0 at ``init``)."""
        return 1

    def combine(self, step: Array, old: Any, drawn: Any) -> Any:
        """The statistics of the next M-step: the drawn ones."""
        return drawn

    def _draw(self, model, params, data, key, step):
        stats, loglik = data.e_step(
            model, params, key=jax.random.fold_in(key, step), assignment="sample", n_samples=self.draws(step)
        )
        return stats, model.objective(stats, params, loglik)

    def init(self, model, params, data, key) -> SampledEMState:
        zero = jnp.zeros((), jnp.int32)
        stats, objective = self._draw(model, params, data, key, zero)
        return SampledEMState(params, objective, jnp.ones((), objective.dtype), stats, key, zero)

    def step(self, model, state: SampledEMState, data) -> SampledEMState:
        params = model.m_step(state.stats, state.params)
        n = state.n_steps + 1
        drawn, objective = self._draw(model, params, data, state.key, n)
        stats = self.combine(n, state.stats, drawn)
        return SampledEMState(params, objective, state.n_passes + 1, stats, state.key, n)


class StochasticEM(_SampledEM):
    """Stochastic EM, SEM (Celeux & Diebolt, 1985).

    Each step draws one latent class per point from its posterior at the
    current parameters and maximises the complete-data likelihood of the drawn
    classes. The parameters form a Markov chain that does not settle at a point
    but wanders around a maximum of the likelihood, escaping saddle points and
    poor optima that trap EM; the objective (the log-likelihood at each step's
    parameters) is not monotone. Run it for a fixed number of steps
    (``tol=0``), then polish with :class:`emjax.BatchEM` from the result.
    Restarts draw independent chains (keys split per restart).

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> key = jax.random.key(0)
        >>> res = emjax.fit(model, x, key=key, algorithm=emjax.StochasticEM(), max_iter=20, tol=0.0)
        >>> res = emjax.fit(model, x, key=key, init=res.params, algorithm=emjax.BatchEM())   # polish
        >>> print(round(float(res.objective[0]), 2))
        -1130.27
    """

    def fixed_point_options(self) -> None:
        """None: the chain wanders around a maximum and stops at no fixed point."""
        return None


class MonteCarloEM(_SampledEM):
    """Monte-Carlo EM (Wei & Tanner, 1990).

    The E-step's expectation is replaced by the average over ``m_t`` draws of
    each point's latent class, ``m_t = min(max_samples, ceil(initial_samples *
    growth**t))``: few (cheap, noisy) draws early, more as the fit nears its
    optimum, so the Monte-Carlo error shrinks and the iterates settle at EM's
    fixed point. The ``m_t`` draws of a point are taken at once as multinomial
    counts (``K`` binomial draws per point: no ``(m_t, N)`` array, and ``m_t`` may
    grow inside the compiled loop), so a step costs a few E-steps' worth of
    random numbers rather than ``m_t``.

    Args:
        initial_samples: draws per point at the first step.
        growth: factor of the draws per step (>= 1).
        max_samples: the cap.

    Example:
        >>> algo = emjax.MonteCarloEM(initial_samples=1, growth=1.2, max_samples=1000)
        >>> [int(algo.draws(t)) for t in range(6)]   # draws per point at each step
        [1, 2, 2, 2, 3, 3]
    """

    initial_samples: int = eqx.field(static=True, default=1)
    growth: float = eqx.field(static=True, default=1.2)
    max_samples: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        check_int("initial_samples", self.initial_samples)
        check_number("growth", self.growth, low=1.0)
        check_int("max_samples", self.max_samples, low=self.initial_samples)

    def draws(self, step):
        grown = jnp.ceil(self.initial_samples * self.growth ** jnp.asarray(step, jnp.result_type(float)))
        return jnp.minimum(grown, self.max_samples)


class SAEM(_SampledEM):
    """Stochastic approximation EM (Delyon, Lavielle & Moulines, 1999).

    Each step draws the latent classes (``n_samples`` per point) and moves the
    running statistics towards the drawn ones, ``s <- s + gamma_t (S_drawn -
    s)``, then maximises. ``gamma_t = 1`` for the first ``burn_in`` steps (plain
    stochastic EM, which explores), then ``(t - burn_in + 1) ** -kappa``: the
    Robbins-Monro steps average the draws out, so the parameters converge to a
    fixed point of batch EM (not a wandering chain as in stochastic EM).

    Args:
        burn_in: steps with ``gamma = 1``.
        kappa: step-size exponent, ``0.5 < kappa <= 1``.
        n_samples: draws per point and step.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> algo = emjax.SAEM(burn_in=5, kappa=0.7)
        >>> res = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo, max_iter=20, tol=0.0)
        >>> print(round(float(res.objective[0]), 0))
        -1130.0
    """

    burn_in: int = eqx.field(static=True, default=10)
    kappa: float = eqx.field(static=True, default=0.7)
    n_samples: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_int("burn_in", self.burn_in, low=0)
        check_number("kappa", self.kappa, low=0.5, high=1.0, low_open=True)
        check_int("n_samples", self.n_samples)

    def draws(self, step):
        return self.n_samples

    def gamma(self, step: Array, dtype=float) -> Array:
        """The step size of step ``step`` (from 1), in ``dtype``."""
        late = jnp.maximum(jnp.asarray(step) - self.burn_in + 1, 1).astype(dtype)
        return jnp.where(step <= self.burn_in, jnp.ones((), dtype), late ** (-self.kappa))

    def combine(self, step, old, drawn):
        return stepwise_update(old, drawn, 1.0, self.gamma(step, float_dtype_of(old)))
