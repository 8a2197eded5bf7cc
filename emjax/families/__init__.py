"""Component families. Each is a :class:`Family`: ``log_prob``, ``statistics``, ``maximize``."""

from ._base import Family as Family
from ._gaussian import COVARIANCE_TYPES as COVARIANCE_TYPES
from ._gaussian import Gaussian as Gaussian
from ._gaussian import GaussianParams as GaussianParams
from ._gaussian import GaussianStats as GaussianStats
