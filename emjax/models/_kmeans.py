"""k-means as a model the runner fits: Lloyd's algorithm is its batch EM."""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import as_data_matrix, check_int, check_n_components
from .._chunks import compiled, default_chunk_size, n_rows, rowwise
from .._model import EMModel
from .._stopping import StoppingRule
from ..families._base import rows_times
from ..families._gaussian import _feature_variance

_EXACT = jax.lax.Precision.HIGHEST


class KMeansParams(eqx.Module):
    """k-means parameters.

    Attributes:
        centers: ``(K, D)`` cluster centres.
    """

    centers: Array



class KMeansStats(eqx.Module):
    """Hard-assignment statistics, additive over points.

    Attributes:
        counts: ``(K,)`` (weighted) points per cluster.
        sums: ``(K, D)`` their sum less ``counts * shift``.
        shift: ``(D,)`` the expansion point of ``sums`` (the mean of the centres
            of the E-step), so float32 sums do not lose digits to an offset.
    """

    counts: Array
    sums: Array
    shift: Array

    def __add__(self, other: "KMeansStats") -> "KMeansStats":
        # Re-express other's sums about this shift: sums' = sums + counts (s_other - s).
        moved = other.sums + other.counts[:, None] * (other.shift - self.shift)[None, :]
        return KMeansStats(self.counts + other.counts, self.sums + moved, self.shift)

    def __mul__(self, c) -> "KMeansStats":
        return KMeansStats(self.counts * c, self.sums * c, self.shift)


def _sq_distances(centers: Array, x: Array, offset: Array | None = None) -> tuple[Array, Array]:
    """``(N, K)`` squared distances and the point ``m`` they were expanded about.

    ``|x - c|^2 = |x'|^2 - 2 x' c'^T + |c'|^2`` with ``x' = x - m``, ``c' = c - m``
    about ``offset`` (the data's mean, set by :meth:`KMeans.adapt`), else the mean
    of the centres: one matmul, and the cancellation is that of data centred near
    the clusters, not of raw coordinates.
    """
    m = jnp.mean(centers, axis=0) if offset is None else offset.astype(centers.dtype)
    xc, cc = x - m, centers - m
    d2 = jnp.sum(xc * xc, axis=1)[:, None] - 2.0 * rows_times(xc, cc) + jnp.sum(cc * cc, axis=1)[None, :]
    return jnp.maximum(d2, 0.0), m


class HardClustering(EMModel):
    """What k-means and k-medoids share: ``K`` clusters of an ``(N, D)`` matrix,
    one-hot posteriors from :meth:`predict`, and the data checks."""

    n_clusters: eqx.AbstractVar[int]

    @abc.abstractmethod
    def predict(self, params, x) -> Array:
        """``(N,)`` each point's cluster."""

    def posterior(self, params, x: Array) -> Array:
        """``(N, K)`` one-hot assignments (what ``ResponsibilityChange`` compares)."""
        return jax.nn.one_hot(self.predict(params, x), self.n_clusters, dtype=jnp.asarray(x).dtype)

    def validate_data(self, x) -> Array:
        x = as_data_matrix(x)
        check_n_components(self.n_clusters, x.shape[0])
        return x

    def validate_rows(self, x) -> Array:
        return as_data_matrix(x)


class KMeans(HardClustering):
    """k-means clustering as an EM model: batch EM on it is Lloyd's algorithm.

    The E-step assigns every point to its nearest centre (hard assignments), the
    M-step moves each centre to the (weighted) mean of its points; the objective
    is minus the inertia (the sum of squared distances to the assigned centres),
    which neither step can raise. :func:`emjax.fit` runs it like any model:
    restarts ``vmap``-ped with the lowest inertia kept, sample weights, every data
    source. Its default stopping rule is scikit-learn's: :class:`CenterShift`
    (the centres' total squared movement below ``tol`` times the data's mean
    feature variance), which a fixed labelling meets exactly (the centres stop).

    From the same initial centres it is scikit-learn's ``KMeans(algorithm="lloyd")``:
    same labels, centres, inertia and iteration count (tested). One difference: a
    cluster that loses all its points keeps its centre (scikit-learn moves it to a
    far point).

    Args:
        n_clusters: K.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.KMeans(2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=4, tol=1e-4)
        >>> labels = model.predict(result.params, x)
        >>> np.bincount(labels)
        array([172, 100])
        >>> inertia = -result.objective[result.best]
        >>> print(round(float(inertia), 1))
        8901.8
    """

    n_clusters: int = eqx.field(static=True)
    tol_scale: Array | None = None
    offset: Array | None = None

    init_methods: ClassVar[tuple[str, ...]] = ("k-means++", "random")
    # k-means' posterior is the nearest centre: its soft and hard E-steps are one.
    e_step_options: ClassVar[tuple[str, ...]] = ("assignment",)
    assignments: ClassVar[tuple[str, ...]] = ("soft", "hard")

    def __init__(self, n_clusters: int, tol_scale=None, offset=None):
        check_n_components(n_clusters)
        self.n_clusters = int(n_clusters)
        self.tol_scale = tol_scale
        self.offset = offset

    # -- the EM contract ------------------------------------------------------------------

    def e_step(self, params: KMeansParams, x: Array, weights: Array | None = None, *, assignment: str = "soft"):
        """Nearest-centre statistics and minus the (weighted) inertia of ``x``
        (``assignment`` ``"soft"`` or ``"hard"``: the same for k-means)."""
        if assignment not in self.assignments:
            raise ValueError(f"KMeans assigns points to their nearest centre: assignment must be 'soft' or 'hard'; "
                             f"got {assignment!r}.")
        d2, m = _sq_distances(params.centers, x, self.offset)
        labels = jnp.argmin(d2, axis=1)
        best = jnp.min(d2, axis=1)
        onehot = jax.nn.one_hot(labels, self.n_clusters, dtype=x.dtype)
        if weights is not None:
            onehot = onehot * weights[:, None]
            best = best * weights
        sums = jnp.matmul(onehot.T, x - m, precision=_EXACT)
        return KMeansStats(jnp.sum(onehot, axis=0), sums, m), -jnp.sum(best)

    def m_step(self, stats: KMeansStats, params: KMeansParams | None = None) -> KMeansParams:
        """Each centre at the mean of its points; an empty cluster keeps its centre."""
        safe = jnp.maximum(stats.counts, jnp.finfo(stats.sums.dtype).tiny)[:, None]
        means = stats.shift + stats.sums / safe
        if params is None:
            return KMeansParams(means)
        return KMeansParams(jnp.where(stats.counts[:, None] > 0, means, params.centers))

    def expected_log_joint(self, stats: KMeansStats, params: KMeansParams) -> Array:
        """Minus the inertia of the assignments in ``stats`` at ``params``' centres,
        up to a constant (what Lloyd's M-step maximises; linear in ``stats``)."""
        c = params.centers - stats.shift
        return 2.0 * jnp.sum(stats.sums * c) - jnp.sum(stats.counts * jnp.sum(c * c, axis=1))

    def adapt(self, x, weights: Array | None = None) -> "KMeans":
        """The model with ``tol_scale``, the data's mean feature variance (weighted by
        the sample weights, which act as repetitions): :class:`CenterShift` multiplies
        ``tol`` by it, as scikit-learn does; and ``offset``, the mean of the data's
        in-memory rows, the fixed point the E-step expands distances and sums about
        (fixed, so a step whose labels repeat repeats the centres bit for bit)."""
        if not hasattr(x, "map_sum"):
            from ..data._memory import ArrayData

            x = ArrayData(jnp.asarray(x), None if weights is None else jnp.asarray(weights), None)
        var, _ = _feature_variance(x)
        model = eqx.tree_at(lambda m: m.tol_scale, self, jnp.mean(var), is_leaf=lambda a: a is None)
        offset = jnp.mean(jnp.asarray(x.sample), axis=0)
        return eqx.tree_at(lambda m: m.offset, model, offset, is_leaf=lambda a: a is None)

    def default_stopping(self) -> StoppingRule:
        """:class:`CenterShift`."""
        return CenterShift()

    def validate_params(self, params, x) -> None:
        if not isinstance(params, KMeansParams):
            raise TypeError(f"KMeans parameters must be KMeansParams; got {type(params).__name__}.")
        centers = np.asarray(params.centers)
        d = np.shape(x)[-1]
        if centers.shape != (self.n_clusters, d):
            raise ValueError(f"centers must have shape ({self.n_clusters}, {d}); got {centers.shape}.")
        if not np.all(np.isfinite(centers)):
            raise ValueError("centers must be finite.")

    def row_width(self, x) -> int:
        return 2 * self.n_clusters + np.shape(x)[-1]

    # -- initialisation ----------------------------------------------------------------------

    @compiled
    def init(self, key, x, method: str = "k-means++") -> KMeansParams:
        """Initial centres: ``"k-means++"`` (greedy, as scikit-learn: ``2 + log K``
        candidates per step, the one that lowers the inertia most kept) or
        ``"random"`` (``K`` distinct rows). One compiled program per method and shape."""
        x = jnp.asarray(x)
        if method == "random":
            idx = jax.random.choice(key, x.shape[0], (self.n_clusters,), replace=False)
            return KMeansParams(x[idx])
        if method == "k-means++":
            return KMeansParams(greedy_kmeans_plus_plus(key, x, self.n_clusters))
        raise ValueError(f"method must be one of {self.init_methods}; got {method!r}.")

    # -- using a fit -------------------------------------------------------------------------

    def _chunk(self, x) -> int:
        return default_chunk_size(n_rows(x), self.row_width(x))

    def predict(self, params: KMeansParams, x) -> Array:
        """``(N,)`` the index of each point's nearest centre."""
        x = jnp.asarray(x)
        return rowwise(self, "_rows_predict", params, x, self._chunk(x))

    def _rows_predict(self, params, x):
        return jnp.argmin(_sq_distances(params.centers, x, self.offset)[0], axis=1)

    def _rows_transform(self, params, x):
        return jnp.sqrt(_sq_distances(params.centers, x, self.offset)[0])

    def transform(self, params: KMeansParams, x) -> Array:
        """``(N, K)`` Euclidean distances to every centre (scikit-learn's ``transform``)."""
        x = jnp.asarray(x)
        return rowwise(self, "_rows_transform", params, x, self._chunk(x))

    def inertia(self, params: KMeansParams, x, weights=None) -> Array:
        """The (weighted) sum of squared distances to the nearest centre."""
        from ..data._memory import ArrayData

        data = ArrayData(jnp.asarray(x), None if weights is None else jnp.asarray(weights), self._chunk(x))
        return -data.e_step(self, params)[1]

    def encode(self, params: KMeansParams, x) -> Array:
        """Vector quantisation: each point's code, the index of its nearest centre ``(N,)``."""
        return self.predict(params, x)

    def decode(self, params: KMeansParams, codes) -> Array:
        """``(N, D)`` the code-book entries of ``codes``: each point replaced by its centre."""
        return params.centers[jnp.asarray(codes)]


def greedy_kmeans_plus_plus(
    key, x: Array, n_clusters: int, n_local_trials: int | None = None, weights: Array | None = None
) -> Array:
    """Greedy k-means++ (Arthur & Vassilvitskii, 2007; scikit-learn's default).

    The first centre is a uniformly drawn point; each next one is the best of
    ``n_local_trials`` (default ``2 + int(log K)``) points drawn with probability
    proportional to their squared distance from the nearest centre so far, the
    best being the one whose addition leaves the smallest inertia.

    Args:
        key: PRNG key.
        x: ``(N, D)`` data.
        n_clusters: K.
        n_local_trials: candidates per step.
        weights: optional ``(N,)`` non-negative weights with the meaning of
            repetition counts: every draw is proportional to them and the inertia
            weighted by them. Each draw then inverts one uniform on the cumulative
            weighted mass, so integer weights give the centres of the rows
            repeated, draw for draw (a row of weight 0 is never drawn).

    Returns:
        ``(K, D)`` centres, rows of ``x``.

    Example:
        >>> x = jnp.array([[0.0], [0.1], [10.0], [10.1]])
        >>> c = emjax.greedy_kmeans_plus_plus(jax.random.key(0), x, 2)
        >>> sorted(round(float(v)) for v in c[:, 0])
        [0, 10]
    """
    n_clusters = check_int("n_clusters", n_clusters)
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else check_int("n_local_trials", n_local_trials)
    return _greedy_kmeans_plus_plus(key, jnp.asarray(x), n_clusters, trials, None if weights is None else jnp.asarray(weights))


@compiled
def _greedy_kmeans_plus_plus(key, x, n_clusters, trials, weights):
    n, d = x.shape
    k0, key = jax.random.split(key)
    if weights is None:
        first = jax.random.randint(k0, (), 0, n)
    else:
        w = jnp.asarray(weights, x.dtype)
        first = _inverse_cdf(jnp.cumsum(w), jax.random.uniform(k0, (), x.dtype))
    centers = jnp.zeros((n_clusters, d), x.dtype).at[0].set(x[first])
    closest = jnp.sum(jnp.square(x - x[first]), axis=1)
    keys = jax.random.split(key, max(n_clusters - 1, 1))

    def body(i, carry):
        centers, closest = carry
        if weights is None:
            total = jnp.sum(closest)
            # All points on centres already: any point will do (uniform draws).
            logits = jnp.where(total > 0, jnp.log(closest), jnp.zeros_like(closest))
            cand = jax.random.categorical(keys[i - 1], logits, shape=(trials,))
        else:
            cdf = jnp.cumsum(w * closest)
            u = jax.random.uniform(keys[i - 1], (trials,), x.dtype)
            # All points on centres already: draw by weight alone.
            cand = jnp.where(cdf[-1] > 0, _inverse_cdf(cdf, u), _inverse_cdf(jnp.cumsum(w), u))
        dist = jnp.sum(jnp.square(x[None, :, :] - x[cand][:, None, :]), axis=-1)  # (trials, N)
        dist = jnp.minimum(closest[None, :], dist)
        inertia = jnp.sum(dist, axis=1) if weights is None else dist @ w
        best = jnp.argmin(inertia)
        return centers.at[i].set(x[cand[best]]), dist[best]

    centers, _ = jax.lax.fori_loop(1, n_clusters, body, (centers, closest))
    return centers


def _inverse_cdf(cdf: Array, u: Array) -> Array:
    """The rows uniforms ``u`` in [0, 1) pick from the cumulative masses ``cdf``
    (the first row whose cumulative mass exceeds ``u * total``)."""
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), cdf.shape[0] - 1)


class CenterShift(StoppingRule):
    """k-means convergence as scikit-learn tests it: the centres' total squared
    movement in a step at most ``tol * model.tol_scale`` (the data's mean feature
    variance, set by :meth:`KMeans.adapt`). A step whose labels repeat moves no
    centre, so any ``tol >= 0`` stops there."""

    def validate(self, model) -> None:
        if not hasattr(model, "tol_scale"):
            raise TypeError(f"CenterShift measures k-means centres; {type(model).__name__} has none.")

    def converged(self, model, data, old, new, tol):
        shift = jnp.sum(jnp.square(new.params.centers - old.params.centers))
        return shift <= tol * model.tol_scale
