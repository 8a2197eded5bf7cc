"""k-medoids with any dissimilarity: alternating medoid updates and PAM's swaps, as EM-style steps."""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_n_components
from .._chunks import compiled, default_chunk_size, n_rows, rowwise
from ._kmeans import HardClustering

_METRICS = {
    "euclidean": lambda a, b: jnp.sqrt(jnp.sum(jnp.square(a - b))),
    "sqeuclidean": lambda a, b: jnp.sum(jnp.square(a - b)),
    "manhattan": lambda a, b: jnp.sum(jnp.abs(a - b)),
}


class KMedoidsParams(eqx.Module):
    """k-medoids parameters.

    Attributes:
        medoids: ``(K,)`` int32 indices of the medoids among the candidate rows
            (the rows of the data in memory).
        points: ``(K, D)`` the medoids themselves (what prediction compares with).
    """

    medoids: Array
    points: Array


class KMedoidsStats(eqx.Module):
    """Statistics additive over points.

    Attributes:
        cost: ``(K, M)``: under ``"alternate"``, the (weighted) dissimilarity of
            cluster ``k``'s points to candidate ``i``; under ``"pam"``, the change
            of the total cost if medoid ``k`` were swapped for candidate ``i``.
    """

    cost: Array


class KMedoids(HardClustering):
    """k-medoids: ``K`` data points (medoids) minimising the sum of dissimilarities
    of every point to its nearest medoid, for any dissimilarity.

    Two steps, each an M-step from statistics summed over chunks of points, so
    :func:`emjax.fit` runs them with restarts (``vmap``-ped), sample weights and
    chunked data like any model; the objective is minus the total cost, which
    neither can raise:

    * ``method="alternate"`` (Voronoi iteration; Park & Jun, 2009): assign points
      to their nearest medoid, then make each cluster's medoid the candidate with
      the least total dissimilarity to the cluster's points.
    * ``method="pam"`` (Kaufman & Rousseeuw's SWAP): the statistics are the change
      of the total cost for every (medoid, candidate) swap; the best swap that
      lowers the cost is made. Slower per step (``K`` times the work) but it escapes
      the alternating method's local optima.

    The candidates are the rows of the data held in memory (all rows for in-memory
    data), fixed by :meth:`adapt` when the fit starts; ``dissimilarity`` is a name
    (``"euclidean"``, ``"sqeuclidean"``, ``"manhattan"``) or any function of two
    points ``(D,), (D,) -> scalar``, ``vmap``-ped over pairs. A pass costs
    ``N x M`` dissimilarities (``K N M`` for PAM).

    Args:
        n_clusters: K.
        dissimilarity: a name or a function of two points.
        method: ``"alternate"`` or ``"pam"``.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.KMedoids(2, dissimilarity="manhattan", method="pam")
        >>> res = emjax.fit(model, x, key=jax.random.key(0), n_restarts=2, tol=0.0, max_iter=20,
        ...                 stopping=emjax.ParameterChange())
        >>> print(res.params.points)   # the medoids: rows of x
        [[ 4.35  80.   ]
         [ 1.883 54.   ]]
        >>> np.bincount(model.predict(res.params, x))
        array([172, 100])
    """

    n_clusters: int = eqx.field(static=True)
    dissimilarity: Callable[[Array, Array], Array] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    candidates: Array | None = None

    init_methods: ClassVar[tuple[str, ...]] = ("k-medoids++", "random")

    def __init__(self, n_clusters: int, dissimilarity: str | Callable = "euclidean", method: str = "alternate",
                 candidates=None):
        check_n_components(n_clusters)
        if isinstance(dissimilarity, str):
            if dissimilarity not in _METRICS:
                raise ValueError(f"dissimilarity must be one of {tuple(_METRICS)} or a function; got {dissimilarity!r}.")
            dissimilarity = _METRICS[dissimilarity]
        elif not callable(dissimilarity):
            raise TypeError(f"dissimilarity must be a name or a function of two points; got {dissimilarity!r}.")
        if method not in ("alternate", "pam"):
            raise ValueError(f"method must be 'alternate' or 'pam'; got {method!r}.")
        self.n_clusters = int(n_clusters)
        self.dissimilarity = dissimilarity
        self.method = method
        self.candidates = candidates

    # -- dissimilarities ---------------------------------------------------------------------

    def pairwise(self, a: Array, b: Array) -> Array:
        """``(len(a), len(b))`` dissimilarities."""
        return jax.vmap(lambda p: jax.vmap(lambda q: self.dissimilarity(p, q))(b))(a)

    def _to_medoids(self, params: KMedoidsParams, x: Array) -> Array:
        return self.pairwise(x, params.points)

    # -- the EM contract ---------------------------------------------------------------------

    def e_step(self, params: KMedoidsParams, x: Array, weights: Array | None = None, **options):
        d = self._to_medoids(params, x)  # (n, K)
        labels = jnp.argmin(d, axis=1)
        d1 = jnp.min(d, axis=1)
        w = jnp.ones(x.shape[0], d.dtype) if weights is None else weights.astype(d.dtype)
        to_cand = self.pairwise(x, self.candidates)  # (n, M)
        if self.method == "alternate":
            onehot = jax.nn.one_hot(labels, self.n_clusters, dtype=d.dtype) * w[:, None]
            cost = jnp.matmul(onehot.T, to_cand, precision=jax.lax.Precision.HIGHEST)  # (K, M)
        else:
            # Without medoid k a point's distance is its second nearest if k was its nearest.
            d2 = jnp.sort(d, axis=1)[:, 1] if self.n_clusters > 1 else jnp.full_like(d1, jnp.inf)
            without = jnp.where(labels[:, None] == jnp.arange(self.n_clusters)[None, :], d2[:, None], d1[:, None])
            new = jnp.minimum(without[:, :, None], to_cand[:, None, :])  # (n, K, M)
            cost = jnp.einsum("n,nkm->km", w, new - d1[:, None, None])
        return KMedoidsStats(cost), -jnp.sum(w * d1)

    def m_step(self, stats: KMedoidsStats, params: KMedoidsParams) -> KMedoidsParams:
        if self.method == "alternate":
            best = jnp.argmin(stats.cost, axis=1).astype(jnp.int32)
            # A cluster's medoid moves only if a candidate is strictly better (an
            # empty cluster, whose costs are all 0, keeps its medoid).
            current = jnp.take_along_axis(stats.cost, params.medoids[:, None], axis=1)[:, 0]
            medoids = jnp.where(jnp.min(stats.cost, axis=1) < current, best, params.medoids)
        else:
            k, i = jnp.unravel_index(jnp.argmin(stats.cost), stats.cost.shape)
            swap = (stats.cost[k, i] < 0) & ~jnp.any(params.medoids == i)
            medoids = jnp.where(swap, params.medoids.at[k].set(i.astype(jnp.int32)), params.medoids)
        return KMedoidsParams(medoids, self.candidates[medoids].astype(params.points.dtype))

    def adapt(self, x, weights: Array | None = None) -> "KMedoids":
        """The model with its candidates, the data's rows in memory (``data.sample``)."""
        sample = x.sample if hasattr(x, "sample") else jnp.asarray(x)
        return eqx.tree_at(lambda m: m.candidates, self, jnp.asarray(sample), is_leaf=lambda a: a is None)

    def validate_params(self, params, x) -> None:
        if not isinstance(params, KMedoidsParams):
            raise TypeError(f"KMedoids parameters must be KMedoidsParams; got {type(params).__name__}.")
        idx = np.asarray(params.medoids)
        n = np.shape(x)[0]
        if idx.shape != (self.n_clusters,) or idx.dtype.kind not in "iu":
            raise ValueError(f"medoids must be {self.n_clusters} integer row indices; got {idx.dtype}{idx.shape}.")
        if np.any(idx < 0) or np.any(idx >= n) or len(set(idx.tolist())) != self.n_clusters:
            raise ValueError(f"medoids must be distinct row indices in [0, {n}); got {idx.tolist()}.")
        if not np.allclose(np.asarray(params.points), np.asarray(x)[idx]):
            raise ValueError("points must be the data rows at the medoids' indices.")

    def row_width(self, x) -> int:
        m = n_rows(self.candidates) if self.candidates is not None else n_rows(x)
        return m * (self.n_clusters if self.method == "pam" else 1) + self.n_clusters

    # -- initialisation ----------------------------------------------------------------------

    @compiled
    def init(self, key, x, method: str = "k-medoids++") -> KMedoidsParams:
        """``"k-medoids++"`` (k-means++ with the dissimilarity: each next medoid drawn
        with probability proportional to its dissimilarity to the nearest so far) or
        ``"random"`` (``K`` distinct rows)."""
        x = jnp.asarray(x)
        n = x.shape[0]
        if method == "random":
            idx = jax.random.choice(key, n, (self.n_clusters,), replace=False).astype(jnp.int32)
            return KMedoidsParams(idx, x[idx])
        if method != "k-medoids++":
            raise ValueError(f"method must be one of {self.init_methods}; got {method!r}.")
        k0, key = jax.random.split(key)
        first = jax.random.randint(k0, (), 0, n)
        medoids = jnp.zeros((self.n_clusters,), jnp.int32).at[0].set(first.astype(jnp.int32))
        closest = self.pairwise(x[first][None], x)[0]
        keys = jax.random.split(key, max(self.n_clusters - 1, 1))

        def body(i, carry):
            medoids, closest = carry
            # Unfilled slots hold 0: scatter only the filled ones (a repeated index
            # written False after True would unmark row 0).
            filled = jnp.where(jnp.arange(self.n_clusters) < i, medoids, n)
            chosen = jnp.zeros(n, bool).at[filled].set(True, mode="drop")
            weight = jnp.where(chosen, 0.0, closest)
            logits = jnp.where(jnp.sum(weight) > 0, jnp.log(weight), jnp.where(chosen, -jnp.inf, 0.0))
            idx = jax.random.categorical(keys[i - 1], logits)
            return medoids.at[i].set(idx.astype(jnp.int32)), jnp.minimum(closest, self.pairwise(x[idx][None], x)[0])

        medoids, _ = jax.lax.fori_loop(1, self.n_clusters, body, (medoids, closest))
        return KMedoidsParams(medoids, x[medoids])

    # -- using a fit -------------------------------------------------------------------------

    def predict(self, params: KMedoidsParams, x) -> Array:
        """``(N,)`` each point's nearest medoid (0..K-1)."""
        x = jnp.asarray(x)
        return rowwise(self, "_rows_predict", params, x, default_chunk_size(n_rows(x), 4 * self.n_clusters))

    def _rows_predict(self, params, x):
        return jnp.argmin(self._to_medoids(params, x), axis=1)

    def cost(self, params: KMedoidsParams, x, weights=None) -> Array:
        """The (weighted) sum of every point's dissimilarity to its nearest medoid."""
        d = jnp.min(self._to_medoids(params, jnp.asarray(x)), axis=1)
        return jnp.sum(d if weights is None else d * jnp.asarray(weights))
