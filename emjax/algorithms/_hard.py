"""Classification (hard) EM: every point wholly in its most probable class."""

from __future__ import annotations

from ._base import Algorithm, check_e_step, check_no_refine
from ._batch import BatchEMState, evaluated


class HardEM(Algorithm):
    """Classification EM, CEM (Celeux & Govaert, 1992): the E-step assigns each
    point to its most probable class (``argmax_k log pi_k p_k(x)``), the M-step
    fits each class to its points.

    It increases the classification log-likelihood
    ``sum_n max_k log pi_k p_k(x_n | theta)`` (plus the log prior), which is the
    objective it reports and never decreases: the E-step maximises it over the
    labels, the M-step over the parameters. For a Gaussian mixture with equal
    weights and one fixed spherical variance shared by all components
    (``frozen=("weights", "covariances")``) the labels are the nearest means and
    the M-step the class averages: Lloyd's k-means algorithm. It stops when the
    objective stops rising (``tol``), or when the labelling repeats with
    ``stopping=emjax.ParameterChange(), tol=1e-12`` (the parameters repeat up to
    rounding).

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=emjax.HardEM())
        >>> np.bincount(model.predict(result.params, x))
        array([175,  97])
    """

    def validate(self, model, data) -> None:
        check_no_refine(self, model)
        check_e_step(self, model, option="assignment", assignment="hard")

    def fixed_point_options(self) -> dict:
        """Hard EM stops at a fixed point of the hard-assignment map."""
        return {"assignment": "hard"}

    def init(self, model, params, data, key=None) -> BatchEMState:
        return evaluated(model, params, data, None, assignment="hard")

    def step(self, model, state: BatchEMState, data) -> BatchEMState:
        params = model.m_step(state.stats, state.params)
        return evaluated(model, params, data, state.n_passes, assignment="hard")
