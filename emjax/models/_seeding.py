"""Seeding: pure functions of a PRNG key, so they ``vmap`` over restarts.

These pick locations (centres) or hard labels from the data; a model turns them
into parameters (:meth:`emjax.Mixture.init`). The public functions take JAX or
NumPy arrays: NumPy data are converted first, since a NumPy array indexed by a
traced index (inside the seeding loops) cannot be traced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array

from .._checks import check_int
from .._chunks import chunked_map, chunked_sum, compiled, default_chunk_size


def _sq_dists(x: Array, centers: Array) -> Array:
    """Squared Euclidean distances ``(N, K)``, from differences (no cancellation)."""
    diff = x[:, None, :] - centers[None, :, :]
    return jnp.sum(diff * diff, axis=-1)


def nearest(x: Array, centers: Array, active: Array | None = None) -> Array:
    """Index of the nearest centre for every point ``(N,)``, chunked over points
    (among the ``active`` ``(K,)`` centres only, when given)."""
    x, centers = jnp.asarray(x), jnp.asarray(centers)
    chunk = default_chunk_size(x.shape[0], centers.shape[0] * centers.shape[1])
    return chunked_map(lambda xc: nearest_in_chunk(xc, centers, active), x, chunk)


def nearest_in_chunk(x: Array, centers: Array, active: Array | None = None) -> Array:
    """:func:`nearest` on rows few enough for one ``(N, K, D)`` difference."""
    d = _sq_dists(x, centers)
    return jnp.argmin(d if active is None else jnp.where(active[None, :], d, jnp.inf), axis=1)


def random_points(key, x: Array, n_components: int) -> Array:
    """``n_components`` distinct data points, uniformly at random: ``(K, D)``."""
    x = jnp.asarray(x)
    # The K largest of N uniform keys are a uniform K-subset; XLA compiles this top_k
    # several times faster than choice(replace=False)'s sort-based shuffle.
    _, idx = jax.lax.top_k(jax.random.uniform(key, (x.shape[0],), jnp.float32), n_components)
    return x[idx]


def kmeans_plus_plus(key, x: Array, n_components: int) -> Array:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): ``(K, D)`` centres.

    Each new centre is a data point drawn with probability proportional to its
    squared distance from the nearest centre chosen so far.

    Args:
        key: PRNG key.
        x: data ``(N, D)``, a JAX or NumPy array.
        n_components: K.

    Returns:
        ``(K, D)`` centres, rows of ``x``.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> print(emjax.kmeans_plus_plus(jax.random.key(0), x, 2))
        [[ 4.45 83.  ]
         [ 2.15 46.  ]]
    """
    return _kmeans_plus_plus(key, jnp.asarray(x), check_int("n_components", n_components))


@compiled
def _kmeans_plus_plus(key, x, n_components):
    n, d = x.shape
    # One uniform per centre, each inverted on the cumulative squared distances: a draw
    # with probability d_n^2 / sum d^2 (to the uniform's 2^-24 resolution) that compiles
    # about 3x faster than a categorical (Gumbel) draw per centre.
    # Drawn in float32 whatever the data's dtype, so a float32 and a float64 fit from the
    # same key start from the same points.
    u = jax.random.uniform(key, (n_components,), jnp.float32).astype(x.dtype)

    def uniform_row(v):  # the row a uniform v in [0, 1) picks when every row is equally likely
        return jnp.minimum((v * n).astype(jnp.int32), n - 1)

    first = uniform_row(u[0])
    centers = jnp.zeros((n_components, d), x.dtype).at[0].set(x[first])
    dist = jnp.sum(jnp.square(x - x[first]), axis=-1)

    def body(i, carry):
        centers, dist = carry
        cdf = jnp.cumsum(dist)
        total = cdf[-1]
        drawn = jnp.minimum(jnp.searchsorted(cdf, u[i] * total, side="right"), n - 1)
        # All remaining points coincide with centres: fall back to a uniform draw.
        idx = jnp.where(total > 0, drawn, uniform_row(u[i]))
        centers = centers.at[i].set(x[idx])
        dist = jnp.minimum(dist, jnp.sum(jnp.square(x - x[idx]), axis=-1))
        return centers, dist

    centers, _ = jax.lax.fori_loop(1, n_components, body, (centers, dist))
    return centers


def kmeans(key, x: Array, n_components: int, n_iter: int = 10, active: Array | None = None) -> tuple[Array, Array]:
    """k-means: k-means++ seeding then ``n_iter`` Lloyd iterations.

    A fixed-cost seeding helper (what a mixture's ``init="kmeans"`` runs). For
    k-means clustering itself (convergence test, restarts with the lowest
    inertia kept, weights, prediction, vector quantisation) fit
    :class:`emjax.KMeans`. An emptied cluster keeps its previous centre.

    Args:
        key: PRNG key.
        x: data ``(N, D)``, a JAX or NumPy array.
        n_components: K.
        n_iter: Lloyd iterations.
        active: optional ``(K,)`` booleans, the first ``K'`` true: only those
            centres take points (the first ``K'`` of a k-means++ sequence are a
            k-means++ seeding of ``K'`` centres), so one program serves every ``K' <= K``.

    Returns:
        ``(centers (K, D), labels (N,))``.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> centers, labels = emjax.kmeans(jax.random.key(0), x, 2)
        >>> print(np.asarray(centers).round(2))
        [[ 4.3  80.28]
         [ 2.09 54.75]]
        >>> np.bincount(labels)
        array([172, 100])
    """
    return _kmeans(key, jnp.asarray(x), check_int("n_components", n_components), check_int("n_iter", n_iter, low=0),
                   None if active is None else jnp.asarray(active))


@compiled
def _kmeans(key, x, n_components, n_iter, active):
    centers = _kmeans_plus_plus(key, x, n_components)
    chunk = default_chunk_size(x.shape[0], n_components * x.shape[1])

    def sums(centers, xc, _):
        # Per chunk: no (N, K) one-hot of the whole data (as large as the data for K = D).
        onehot = jax.nn.one_hot(nearest_in_chunk(xc, centers, active), n_components, dtype=x.dtype)
        stats = jnp.sum(onehot, axis=0), jnp.matmul(onehot.T, xc, precision=jax.lax.Precision.HIGHEST)
        return stats, jnp.zeros((), x.dtype)

    def body(_, centers):
        (counts, total), _ = chunked_sum(functools.partial(sums, centers), x, None, chunk)
        return jnp.where(counts[:, None] > 0, total / jnp.maximum(counts, 1)[:, None], centers)

    centers = jax.lax.fori_loop(0, n_iter, body, centers)
    return centers, nearest(x, centers, active)


def random_responsibilities(key, n: int, n_components: int, dtype) -> Array:
    """Responsibilities drawn uniformly from the simplex, one row per point: ``(N, K)``."""
    # Dirichlet(1, ..., 1) as normalised standard exponentials (no gamma sampler to compile).
    e = jax.random.exponential(key, (n, n_components), jnp.float32).astype(dtype)  # the same draws in any dtype
    return e / jnp.sum(e, axis=1, keepdims=True)
