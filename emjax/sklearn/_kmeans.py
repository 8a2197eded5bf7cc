"""``KMeans``: :class:`emjax.KMeans` (Lloyd's algorithm as batch EM) behind scikit-learn's API."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_array

from .._chunks import chunked_map, default_chunk_size
from ..models._kmeans import KMeans as _KMeans
from ..models._kmeans import KMeansParams, greedy_kmeans_plus_plus
from ._base import EMEstimator, check_integer, check_real


def _distances(model, params, x):
    """Euclidean distances ``(N, K)`` from the differences themselves (exactly 0 for a
    point on a centre; the expansion ``|x|^2 - 2 x.c + |c|^2`` leaves ``sqrt(eps |x|^2)``)."""
    c = params.centers

    def chunk(xc):
        return jnp.sqrt(jnp.sum(jnp.square(xc[:, None, :] - c[None, :, :]), axis=-1))

    return chunked_map(chunk, x, default_chunk_size(x.shape[0], c.shape[0] * c.shape[1]))


class _Seeding(eqx.Module):
    """``emjax.fit``'s ``init``: the centres of a restart, drawn with the sample
    weights as repetition counts (greedy k-means++ by inverting uniforms on the
    cumulative weighted mass, so integer weights seed as the repeated rows do;
    ``"random"``: distinct rows, each with probability proportional to its weight),
    whatever the order of the rows."""

    method: str = eqx.field(static=True)
    n_clusters: int = eqx.field(static=True)
    weights: jax.Array

    def __call__(self, key, x):
        # Rows in lexicographic order first: the draws then depend on the rows'
        # values and weights only, not on their order, so the seeding of integer
        # weights is that of the rows repeated and shuffled.
        order = jnp.lexsort(tuple(x[:, j] for j in reversed(range(x.shape[1]))))
        x, w = x[order], self.weights.astype(x.dtype)[order]
        if self.method == "k-means++":
            return KMeansParams(greedy_kmeans_plus_plus(key, x, self.n_clusters, weights=w))
        # The K largest of log w + Gumbel noise: K distinct rows, drawn in proportion to w.
        scores = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf) + jax.random.gumbel(key, w.shape, x.dtype)
        return KMeansParams(x[jax.lax.top_k(scores, self.n_clusters)[1]])


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, EMEstimator):
    """k-means clustering: scikit-learn's ``KMeans``, computed by :class:`emjax.KMeans`.

    Lloyd's algorithm as hard EM, all ``n_init`` restarts in one compiled program.
    The constructor arguments, attributes and methods are scikit-learn's; it
    stops when the centres move by at most ``tol`` times the data's mean
    variance in one step (scikit-learn's test) or the labels stop changing.

    Args:
        n_clusters: the number of clusters.
        init: ``"k-means++"`` (greedy k-means++, as scikit-learn's), ``"random"``
            (distinct random rows) or an ``(n_clusters, n_features)`` array of centres.
        n_init: restarts, or ``"auto"``: 1 for ``"k-means++"`` and an array, 10 for ``"random"``.
        max_iter: the most Lloyd iterations per restart.
        tol: the tolerance on the centres' movement, relative to the data's mean variance.
        verbose: print the inertia while fitting (``> 0``).
        random_state: an int, a ``RandomState`` or ``None``.
        copy_x: kept for scikit-learn's API; the data are never modified.
        algorithm: ``"lloyd"`` (the only one; ``"elkan"`` gives the same clustering
            and is accepted as a synonym).

    Attributes:
        cluster_centers_: ``(n_clusters, n_features)``.
        labels_: ``(n_samples,)`` each training point's cluster.
        inertia_: the sum of squared distances to the nearest centre (weighted by ``sample_weight``).
        n_iter_: the iterations of the best restart.
        n_features_in_, model_, params_, fit_result_: as for :class:`GaussianMixture`.

    Example:
        >>> import numpy as np
        >>> from emjax.sklearn import KMeans
        >>> X = np.array([[1.0, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
        >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
        >>> km.cluster_centers_[np.argsort(km.cluster_centers_[:, 0])]
        array([[ 1.,  2.],
               [10.,  2.]])
    """

    #: scikit-learn's KMeans does not warn when it stops at max_iter.
    _warn_not_converged = False

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        verbose=0,
        random_state=None,
        copy_x=True,
        algorithm="lloyd",
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm

    @property
    def _n_init(self) -> int:
        if self.n_init == "auto":
            return 10 if isinstance(self.init, str) and self.init == "random" else 1
        return int(self.n_init)

    def _check_hyperparameters(self, X) -> None:
        check_integer("n_clusters", self.n_clusters, 1)
        check_integer("max_iter", self.max_iter, 1)
        check_real("tol", self.tol, 0.0)
        check_integer("verbose", self.verbose, 0)
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            check_integer("n_init", self.n_init, 1)
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"The 'algorithm' parameter of KMeans must be 'lloyd' or 'elkan'; got {self.algorithm!r}.")
        if isinstance(self.init, str):
            if self.init not in ("k-means++", "random"):
                raise ValueError(f"The 'init' parameter of KMeans must be 'k-means++', 'random' or an array; got {self.init!r}.")
        if X.shape[0] < self.n_clusters:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}.")

    def _build_model(self, X):
        return _KMeans(int(self.n_clusters))

    def _initial(self, model, X):
        if isinstance(self.init, str):
            weights = np.ones(X.shape[0], X.dtype) if self._weights is None else self._weights
            return _Seeding(self.init, int(self.n_clusters), jnp.asarray(weights))
        centers = check_array(self.init, dtype=X.dtype)
        if centers.shape != (self.n_clusters, X.shape[1]):
            raise ValueError(
                f"The shape of the initial centers {centers.shape} does not match the number of clusters "
                f"{self.n_clusters} and features {X.shape[1]}: expected {(self.n_clusters, X.shape[1])}."
            )
        return KMeansParams(jnp.asarray(centers))

    def fit(self, X, y=None, sample_weight=None):
        """Cluster ``X``.

        Args:
            X: ``(n_samples, n_features)`` data.
            y: ignored.
            sample_weight: optional ``(n_samples,)`` non-negative weights.

        Returns:
            ``self``.
        """
        X = self._validate(X, reset=True)
        self._check_hyperparameters(X)
        weights = None
        if sample_weight is not None:
            from sklearn.utils.validation import _check_sample_weight

            weights = _check_sample_weight(sample_weight, X, dtype=X.dtype)
        self._weights = weights  # read by _initial: the seeding draws by weight
        try:
            self._fit_with(X, n_restarts_param="_n_init", weights=weights)
        finally:
            del self._weights
        d = self.transform(X)
        self.labels_ = np.argmin(d, axis=1)
        self.inertia_ = float(np.sum((1.0 if weights is None else weights) * np.min(d, axis=1) ** 2))
        return self

    def _set_fitted(self, model, params, X) -> None:
        self.cluster_centers_ = params.centers
        self._n_features_out = self.cluster_centers_.shape[0]

    def predict(self, X):
        """The nearest centre of each row: ``(n_samples,)``."""
        return np.argmin(self.transform(X), axis=1)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then the training points' clusters (``labels_``)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances to every centre: ``(n_samples, n_clusters)``."""
        return self._predicting(_distances, X)

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then the training points' distances to every centre."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Minus the (weighted) sum of squared distances to the nearest centre."""
        d = np.min(self.transform(X), axis=1) ** 2
        w = np.ones_like(d) if sample_weight is None else np.asarray(sample_weight, d.dtype)
        return -float(np.sum(w * d))
