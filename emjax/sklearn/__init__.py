"""scikit-learn estimators computed by emjax (needs ``pip install "emjax[sklearn]"``).

Each estimator keeps scikit-learn's constructor arguments, fitted attributes and
methods, so it drops into pipelines, cross-validation and grid searches, and
passes ``sklearn.utils.estimator_checks.check_estimator``; the fit is one
compiled :func:`emjax.fit` over all ``n_init`` restarts.

- :class:`GaussianMixture`: ``sklearn.mixture.GaussianMixture``.
- :class:`BayesianGaussianMixture`: ``sklearn.mixture.BayesianGaussianMixture``
  (:class:`emjax.VariationalGaussianMixture`).
- :class:`KMeans`: ``sklearn.cluster.KMeans`` (:class:`emjax.KMeans`).
- :class:`StudentTMixture`: a mixture of multivariate Student-t distributions.
- :class:`MixtureModel`: a mixture of any emjax family (``family=emjax.Poisson()``, ...).
"""

try:
    import sklearn as _sklearn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('emjax.sklearn needs scikit-learn: pip install "emjax[sklearn]"') from e

from ._mixture import GaussianMixture as GaussianMixture
from ._mixture import MixtureModel as MixtureModel
from ._mixture import StudentTMixture as StudentTMixture
from ._variational import BayesianGaussianMixture as BayesianGaussianMixture
from ._kmeans import KMeans as KMeans
