"""Figures of fits, on matplotlib (an optional extra: ``pip install "emjax[plot]"``).

``import emjax`` never imports matplotlib; ``import emjax.plot`` (or ``from emjax import
plot``) does. Every function draws on the Axes (or Figure) it is given, or on a new one,
returns it, and never calls ``plt.show()``, so it works under any backend, Agg included.

- :func:`ellipses`: 2-D data coloured by component, one ellipse per Gaussian or
  Student-t component (every covariance structure).
- :func:`pairs`: the same for ``D > 2``, a grid of the pairwise projections.
- :func:`trace`: the objective against iterations, passes over the data or seconds,
  for one fit or several (algorithms compared on one axis).
- :func:`selection`: an :class:`emjax.Selection`'s criteria (or an
  :class:`emjax.CrossValidation`'s held-out score) against K.
- :func:`responsibilities`: each point's posterior and its uncertainty ``1 - max_k r_nk``.
- :func:`images`: component means (Bernoulli, Binomial, Poisson, Gaussian, ...) and
  categorical probabilities as images.
- :func:`restarts`: how each restart ended: final objective and status, singular
  (collapsed or non-finite) restarts highlighted.
"""

try:
    import matplotlib as _matplotlib  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by hiding matplotlib in the tests
    raise ImportError('emjax.plot needs matplotlib, an optional extra: pip install "emjax[plot]"') from error

from ._plots import ellipses as ellipses
from ._plots import images as images
from ._plots import pairs as pairs
from ._plots import responsibilities as responsibilities
from ._plots import restarts as restarts
from ._plots import selection as selection
from ._plots import trace as trace

__all__ = ["ellipses", "images", "pairs", "responsibilities", "restarts", "selection", "trace"]
