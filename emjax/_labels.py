"""Comparing clusterings: the best one-to-one matching of labels (Hungarian algorithm),
component alignment between fits, and the adjusted Rand index.

Mixture components are exchangeable: two fits, or two restarts of one fit, may find
the same components in another order. These helpers run on the host (NumPy): they
compare finished fits, they are not part of a compiled loop.
"""

from __future__ import annotations

import numpy as np

from ._checks import host_array


def linear_sum_assignment(cost) -> tuple[np.ndarray, np.ndarray]:
    """The assignment of rows to columns with the least total cost (Kuhn-Munkres).

    The shortest-augmenting-path form of the Hungarian algorithm with dual
    potentials, ``O(n^2 m)`` for an ``(n, m)`` matrix, ``n <= m`` (a wider than
    tall matrix is transposed).

    Args:
        cost: ``(n, m)`` finite real costs.

    Returns:
        ``(rows, cols)``: ``min(n, m)`` matched pairs, ``rows`` increasing;
        ``cost[rows, cols].sum()`` is the least possible.

    Raises:
        ValueError: ``cost`` is not a finite 2-D array.

    Example:
        >>> linear_sum_assignment(np.array([[4.0, 1.0], [2.0, 0.0]]))
        (array([0, 1]), array([1, 0]))
    """
    c = np.asarray(host_array(cost, "cost"), dtype=np.float64)
    if c.ndim != 2 or not np.all(np.isfinite(c)):
        raise ValueError(f"cost must be a finite 2-D array; got shape {c.shape}" + (
            " with non-finite entries." if c.ndim == 2 else "."))
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    # Potentials u (rows), v (columns); match[j] is the row matched to column j (1-based, 0 = none).
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=np.int64)
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        shortest = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            reduced = c[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < shortest[1:])
            shortest[1:] = np.where(better, reduced, shortest[1:])
            way[1:] = np.where(better, j0, way[1:])
            candidates = np.where(free, shortest[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            # Move the potentials by delta: tight edges stay tight, one more becomes tight.
            u[match[used]] += delta
            v[used] -= delta
            shortest[1:] = np.where(free, shortest[1:] - delta, shortest[1:])
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # augment along the path back to the root
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.flatnonzero(match[1:])
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order], cols[order]


def _labels(labels, name: str) -> np.ndarray:
    a = host_array(labels, name)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of labels; got shape {a.shape}.")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name} must hold integer labels; got dtype {a.dtype}.")
    a = a.astype(np.int64)
    if np.any(a < 0):
        raise ValueError(f"{name} must hold labels >= 0; the first negative one is at index {int(np.argmax(a < 0))}.")
    return a


def contingency(labels_a, labels_b) -> np.ndarray:
    """``(Ka, Kb)`` counts ``n_ij`` of points labelled ``i`` in ``labels_a`` and ``j`` in ``labels_b``."""
    a, b = _labels(labels_a, "labels_a"), _labels(labels_b, "labels_b")
    if a.shape != b.shape:
        raise ValueError(f"labels_a and labels_b must label the same points; got {a.shape[0]} and {b.shape[0]} labels.")
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def adjusted_rand_index(labels_a, labels_b) -> float:
    """The adjusted Rand index of two labelings of the same points (Hubert & Arabie 1985).

    1 for identical partitions (whatever the label names), about 0 for
    independent ones; negative when they agree less than chance would.

    Args:
        labels_a, labels_b: ``(N,)`` non-negative integer labels.

    Returns:
        The index, a Python float.

    Example:
        >>> adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0])
        1.0
    """
    table = contingency(labels_a, labels_b).astype(np.float64)
    n = table.sum()

    def pairs(counts):
        return float(np.sum(counts * (counts - 1.0)) / 2.0)

    both = pairs(table)
    rows, cols = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = n * (n - 1.0) / 2.0
    expected = rows * cols / total if total > 0 else 0.0
    top = 0.5 * (rows + cols)
    if top == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((both - expected) / (top - expected))


def match_labels(reference, labels) -> np.ndarray:
    """The relabelling of ``labels`` that agrees with ``reference`` on the most points.

    Args:
        reference: ``(N,)`` labels ``0..K-1``.
        labels: ``(N,)`` labels ``0..K'-1`` of the same points.

    Returns:
        ``perm`` ``(K',)``: label ``l`` of ``labels`` becomes ``perm[l]`` (a
        one-to-one map; with ``K' > K`` the unmatched labels take the unused
        names ``K, K+1, ...``). ``perm[labels]`` is the aligned labeling.

    Example:
        >>> match_labels([0, 0, 1, 2], [2, 2, 0, 1])
        array([1, 2, 0])
    """
    table = contingency(labels, reference)  # (K', K)
    rows, cols = linear_sum_assignment(-table)
    perm = np.full(table.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    spare = iter(range(table.shape[1], table.shape[1] + table.shape[0]))
    for r in np.flatnonzero(perm < 0):
        perm[r] = next(spare)
    return perm


def align_components(model, params, reference, x):
    """``params`` with their components reordered to match ``reference``'s.

    Components are matched one to one so that the points' posterior
    probabilities agree as much as possible: the matching maximises
    ``sum_n sum_k p_ref(k | x_n) p(perm[k] | x_n)`` (Hungarian algorithm), which
    works for any family (no distance between parameters is needed).

    Args:
        model: the :class:`emjax.Mixture` both sets of parameters belong to.
        params: the parameters to reorder (e.g. one restart's).
        reference: the parameters to match (e.g. the best restart's).
        x: data on which the posteriors are compared.

    Returns:
        ``model.permute(params, perm)``.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> other = emjax.fit(model, x, key=jax.random.key(1))   # the same fit, labelled the other way
        >>> print(np.asarray(result.params.weights).round(3), np.asarray(other.params.weights).round(3))
        [0.644 0.356] [0.356 0.644]
        >>> aligned = emjax.align_components(model, other.params, result.params, x)
        >>> print(np.asarray(aligned.weights).round(3))
        [0.644 0.356]
    """
    post = np.asarray(model.posterior(params, x), np.float64)
    post_ref = np.asarray(model.posterior(reference, x), np.float64)
    rows, cols = linear_sum_assignment(-(post_ref.T @ post))
    perm = np.empty(post.shape[1], dtype=np.int64)
    perm[rows] = cols
    return model.permute(params, perm)
