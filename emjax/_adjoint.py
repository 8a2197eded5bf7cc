"""How derivatives flow through a fit (``emjax.fit(..., adjoint=...)``), as in optimistix.

The adjoint owns the loop the device runs: it decides what a derivative of the
fit's result with respect to its inputs (the data, fixed parameters, prior
hyperparameters) means and how it is computed.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax


class Adjoint(eqx.Module):
    """Abstract base: runs the fit's loop and defines its derivatives."""

    @abc.abstractmethod
    def while_loop(self, cond, body, carry):
        """``lax.while_loop(cond, body, carry)`` with this adjoint's derivatives."""


class ForwardAdjoint(Adjoint):
    """Derivatives by differentiating the iterations themselves in forward mode.

    ``jax.jvp`` and ``jax.jacfwd`` of a fit go through every EM step taken;
    reverse mode (``jax.grad``) is not available through the loop, whose length
    is decided at run time. The default.

    Example:
        >>> fit = lambda shift: emjax.fit(model, x + shift, key=key, init=p0, adjoint=emjax.ForwardAdjoint()).objective
        >>> jax.jvp(fit, (0.0,), (1.0,))
    """

    def while_loop(self, cond, body, carry):
        return jax.lax.while_loop(cond, body, carry)
