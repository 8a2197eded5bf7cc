"""Discrete Bayesian networks with hidden nodes, fitted by EM with exact inference by enumeration.

A directed acyclic graph over categorical variables, each with a tabular
conditional probability table (CPT) given its parents. Some nodes are hidden
(never observed); the E-step enumerates every joint configuration of the hidden
nodes (``H = prod card[h]`` of them, a static number), so the posterior over
them is exact and every shape is known when the program is compiled. The
E-step is two dense matrix products between the rows' one-hot ``(N, F)`` design
(``F`` the number of configurations of the observed members of all the nodes'
families) and ``(F, H)`` tables, so a row costs ``O(F H)``; networks whose hidden
state space exceeds ``max_hidden_states`` are refused when the model is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import ClassVar, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import logsumexp

from .._checks import (
    as_data_matrix,
    check_int,
    check_key,
    check_number,
    check_probabilities,
    find_first,
    float_dtype,
    is_sharded,
    is_traced,
    not_integer,
    raise_first,
    safe_log,
)
from .._chunks import compiled, default_chunk_size, n_rows, rowwise
from .._model import EMModel
from ._mixture import latent_posterior

#: The largest joint hidden state space enumerated by default.
DEFAULT_MAX_HIDDEN_STATES = 4096
#: The most CPT entries in all: indices stay exact in float32 (see ``_log_joint``).
_MAX_TABLE = 2**24
_EXACT = jax.lax.Precision.HIGHEST


class BayesNetParams(eqx.Module):
    """Parameters of a :class:`DiscreteBayesNet`: one conditional probability table per node.

    Attributes:
        cpts: a tuple with one array per node. Node ``v``'s is shaped
            ``tuple(card[p] for p in parents[v]) + (card[v],)``, the parents in the
            order ``parents[v]`` lists them: ``cpts[v][a, b, s] = P(x_v = s | x_p = a,
            x_q = b)`` for ``parents[v] == (p, q)``. Every row (last axis) sums to 1; a
            root's table is its ``(card[v],)`` marginal.
    """

    cpts: tuple


class BayesNetStats(eqx.Module):
    """Expected family counts, additive over rows (leaf by leaf).

    Attributes:
        counts: a tuple shaped as :attr:`BayesNetParams.cpts`: ``counts[v][pa, s]`` is
            the (weighted) expected number of rows with ``x_v = s`` and the parents of
            ``v`` in configuration ``pa``, under the posterior of the hidden nodes.
    """

    counts: tuple


class _Layout(NamedTuple):
    """The E-step's static index arrays (NumPy, built once per network).

    The E-step works with a one-hot design: for every node's family (its parents
    and itself), one column per configuration of the family's observed members,
    row-major in family order (a single column of ones when no member is
    observed); ``F`` columns in all. A design column and a hidden configuration
    together pick one CPT cell.

    Attributes:
        configs: ``(H, n_hidden)`` the hidden configurations, row-major over the
            hidden nodes in increasing order (the last varies fastest).
        strides: ``(V_obs, F)``: entry ``(j, f)`` is the stride of data column ``j`` in
            the numbering of the observed configurations of column ``f``'s family (0
            when the column's node is not in that family).
        value: ``(F,)`` the observed configuration of its family column ``f`` stands for.
        cell: ``(F, H)`` the flat index of the CPT cell of column ``f`` in hidden
            configuration ``h``, in the concatenation of all the flattened CPTs.
        offsets: ``(V + 1,)`` where each node's CPT starts in that concatenation.
    """

    configs: np.ndarray
    strides: np.ndarray
    value: np.ndarray
    cell: np.ndarray
    offsets: tuple


def _row_major(cards) -> np.ndarray:
    """``(prod cards, len(cards))`` every configuration, the last entry fastest (``(1, 0)`` for none)."""
    return np.indices(tuple(cards)).reshape(len(cards), -1).T if cards else np.zeros((1, 0), np.int64)


def _strides(cards) -> np.ndarray:
    """Row-major strides of an array of shape ``cards``."""
    return np.array([math.prod(cards[i + 1:]) for i in range(len(cards))], np.int64)


@cache
def _layout(cards: tuple, parents: tuple, hidden: tuple) -> _Layout:
    configs = _row_major([cards[h] for h in hidden])
    observed = [v for v in range(len(cards)) if v not in hidden]
    strides = np.zeros((len(observed), len(cards)), np.int32)
    family, value, cell, offsets = [], [], [], [0]
    for v in range(len(cards)):
        members = parents[v] + (v,)
        shape = tuple(cards[u] for u in members)
        cpt_stride = dict(zip(members, _strides(shape)))
        obs = [u for u in members if u not in hidden]
        obs_cards = [cards[u] for u in obs]
        for u, stride in zip(obs, _strides(obs_cards)):
            strides[observed.index(u), v] = stride
        # Flat offsets in the CPT: of each observed configuration, of each hidden configuration.
        obs_offset = _row_major(obs_cards) @ np.array([cpt_stride[u] for u in obs], np.int64)
        hid_offset = configs @ np.array([cpt_stride.get(h, 0) for h in hidden], np.int64)
        family += [v] * len(obs_offset)
        value += range(len(obs_offset))
        cell.append(offsets[-1] + obs_offset[:, None] + hid_offset[None, :])
        offsets.append(offsets[-1] + math.prod(shape))
    return _Layout(
        configs, strides[:, family], np.array(value), np.concatenate(cell).astype(np.int32), tuple(offsets)
    )


def _node(value, n_nodes: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be a node index (an int); got {value!r}.")
    if not 0 <= value < n_nodes:
        raise ValueError(f"{what} is node {value}, but the network has nodes 0..{n_nodes - 1} (one per cardinality).")
    return int(value)


def _nodes(value, n_nodes: int, what: str) -> tuple[int, ...]:
    """A tuple of distinct node indices from an int or a sequence of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray, range)):
        raise TypeError(f"{what} must be a node index or a sequence of node indices; got {value!r}.")
    nodes = tuple(_node(u, n_nodes, f"an entry of {what}") for u in value)
    repeated = sorted({u for u in nodes if nodes.count(u) > 1})
    if repeated:
        raise ValueError(f"{what} lists node(s) {repeated} more than once.")
    return nodes


def _as_cardinalities(cardinalities) -> tuple[int, ...]:
    if isinstance(cardinalities, (str, bytes)) or not isinstance(cardinalities, (tuple, list, np.ndarray, range)):
        raise TypeError(f"cardinalities must be a sequence of ints, one per node; got {cardinalities!r}.")
    if len(cardinalities) == 0:
        raise ValueError("cardinalities is empty: a network needs at least one node.")
    for v, c in enumerate(cardinalities):
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"cardinalities[{v}] must be an int (the number of states of node {v}); got {c!r}.")
        if c < 1:
            raise ValueError(f"cardinalities[{v}] must be at least 1 (node {v}'s number of states); got {c}.")
    return tuple(int(c) for c in cardinalities)


def _as_parents(parents, n_nodes: int) -> tuple[tuple[int, ...], ...]:
    """Per node, its parents: from a mapping ``node -> parents`` (absent nodes are
    roots), a sequence with one entry per node, or ``None`` (no edges)."""
    if parents is None:
        return ((),) * n_nodes
    if isinstance(parents, Mapping):
        table = [()] * n_nodes
        for v, pa in parents.items():
            table[_node(v, n_nodes, "a key of parents")] = pa
    elif isinstance(parents, (tuple, list)):
        if len(parents) != n_nodes:
            raise ValueError(
                f"parents as a sequence needs one entry per node ({n_nodes}); got {len(parents)}. "
                "A dict {node: parents} may leave roots out."
            )
        table = list(parents)
    else:
        raise TypeError(
            f"parents must be a dict {{node: (parent, ...)}} or a sequence with one entry per node; got {parents!r}."
        )
    out = []
    for v, pa in enumerate(table):
        pa = _nodes(pa, n_nodes, f"parents[{v}]")
        if v in pa:
            raise ValueError(f"node {v} lists itself as a parent (a self-loop): a Bayesian network is acyclic.")
        out.append(pa)
    return tuple(out)


def _topological_order(parents: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The nodes with every parent before its children; a ``ValueError`` naming a cycle if there is one.

    Depth-first along parent links: a node met again while still on the current
    path closes a cycle; a node is placed once all its ancestors are.
    """
    state = [0] * len(parents)  # 0 unseen, 1 on the current path, 2 placed
    order = []
    for start in range(len(parents)):
        if state[start]:
            continue
        path, stack = [start], [iter(parents[start])]
        state[start] = 1
        while stack:
            u = next(stack[-1], None)
            if u is None:
                state[path[-1]] = 2
                order.append(path.pop())
                stack.pop()
            elif state[u] == 1:
                cycle = path[path.index(u):] + [u]  # child -> parent links
                raise ValueError(
                    f"the parents describe a cycle, {' -> '.join(map(str, reversed(cycle)))} (each node a parent "
                    "of the next): a Bayesian network must be a directed acyclic graph."
                )
            elif state[u] == 0:
                state[u] = 1
                path.append(u)
                stack.append(iter(parents[u]))
    return tuple(order)


def _code_out_of_range(xp, x, top):
    """For :func:`find_first`: codes below 0 or above their column's largest, ``top`` ``(1, V_obs)``."""
    return (x < 0) | (x > top)


def _normalize_rows(num: Array) -> Array:
    """Rows (last axis) divided by their sums; a row summing to 0 becomes uniform."""
    total = jnp.sum(num, axis=-1, keepdims=True)
    return jnp.where(total > 0, num / jnp.where(total > 0, total, 1.0), 1.0 / num.shape[-1])


class DiscreteBayesNet(EMModel):
    """A discrete Bayesian network with hidden nodes, fitted by EM with exact inference.

    Nodes ``0..V-1`` are categorical variables, node ``v`` with ``cardinalities[v]``
    states; the joint law is ``p(x) = prod_v P(x_v | x_parents(v))``, each factor a
    table (:class:`BayesNetParams`). The ``hidden`` nodes are never observed: the
    E-step enumerates all ``H = prod_h card[h]`` joint configurations of them, takes
    the exact posterior over them for every row (in log space) and sums the
    expected family counts (:class:`BayesNetStats`); the M-step normalises the
    counts. A latent class model is the network with one hidden root whose
    children are the observed variables (equal to ``emjax.Mixture(emjax.Categorical(S), K)``).

    Prior: every CPT row (the distribution of ``x_v`` given one parent
    configuration) has an independent symmetric ``Dirichlet(pseudo_count + 1)``
    prior, whose density is proportional to ``prod_s theta_s^pseudo_count``. The
    M-step is its posterior mode, ``theta_s = (n_s + pseudo_count) / sum_t (n_t +
    pseudo_count)`` from the expected counts ``n``: ``pseudo_count`` is added to
    every count. A row with no count at all (a parent configuration no row
    reaches, under ``pseudo_count = 0``) becomes uniform. ``pseudo_count = 0``
    is maximum likelihood (:meth:`log_prior` is 0). The objective EM increases is
    the log-likelihood plus :meth:`log_prior`.

    Data: ``(N, V_obs)`` integer codes (integers, booleans or integer-valued
    floats), one column per observed node in increasing node order
    (:attr:`observed`); column ``j`` holds codes ``0..card[observed[j]] - 1``. Checked
    before anything compiles, at fit and at prediction alike, and returned as floats
    of the working precision (which the runner takes the fit's precision from).

    The hidden states' labels are arbitrary: any relabelling of a hidden node's
    states (with its children's tables permuted to match) has the same likelihood.
    Hidden configurations are numbered row-major over the hidden nodes in
    increasing order (:attr:`hidden_states`), the columns of :meth:`posterior`.

    Every algorithm runs on it: the E-step takes ``temperature`` (annealed EM) and
    ``assignment="hard"`` / ``"sample"`` (classification, stochastic and
    Monte-Carlo EM); :meth:`expected_log_joint` serves incremental and generalized
    EM, :meth:`unconstrain` gradient ascent. ``init="random"`` (the default) draws
    every CPT row from a flat Dirichlet.

    Args:
        cardinalities: the number of states of each node, a sequence of ints >= 1.
        parents: each node's parents: a dict ``{node: (parent, ...)}`` (nodes left out
            are roots), a sequence with one tuple per node, or ``None`` (no edges).
            The order of a node's parents is the order of its CPT's leading axes.
        hidden: the hidden nodes, an int or a sequence of ints.
        pseudo_count: the Dirichlet pseudo-count added to every expected count, >= 0.
        max_hidden_states: the largest hidden state space ``H`` accepted (the
            E-step's work and memory per row grow with it).

    Raises:
        TypeError / ValueError: an unknown node, a self-loop or a cycle (named),
            repeated nodes, a cardinality below 1, every node hidden, or a hidden state
            space larger than ``max_hidden_states``.

    Example:
        >>> # Hidden class 0 (3 states) -> observed 1, 2, 3; node 3 also depends on 1.
        >>> model = emjax.DiscreteBayesNet((3, 2, 4, 2), {1: (0,), 2: (0,), 3: (0, 1)}, hidden=0)
        >>> model.observed
        (1, 2, 3)
        >>> x = np.random.default_rng(0).integers(0, (2, 4, 2), size=(500, 3))   # (N, 3) codes
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=2)
        >>> model.posterior(result.params, x).shape   # (N, 3): p(x_0 = h | row)
        (500, 3)
    """

    cardinalities: tuple = eqx.field(static=True)
    parents: tuple = eqx.field(static=True)
    hidden: tuple = eqx.field(static=True)
    pseudo_count: float = eqx.field(static=True)
    max_hidden_states: int = eqx.field(static=True)
    order: tuple = eqx.field(static=True)

    init_methods: ClassVar[tuple[str, ...]] = ("random",)
    e_step_options: ClassVar[tuple[str, ...]] = ("temperature", "assignment", "key", "n_samples")
    assignments: ClassVar[tuple[str, ...]] = ("soft", "hard", "sample")

    def __init__(
        self,
        cardinalities,
        parents=None,
        hidden=(),
        pseudo_count: float = 0.0,
        max_hidden_states: int = DEFAULT_MAX_HIDDEN_STATES,
    ):
        cards = _as_cardinalities(cardinalities)
        n_nodes = len(cards)
        parents = _as_parents(parents, n_nodes)
        hidden = tuple(sorted(_nodes(hidden, n_nodes, "hidden")))
        self.pseudo_count = check_number("pseudo_count", pseudo_count, low=0.0)
        self.max_hidden_states = check_int("max_hidden_states", max_hidden_states)
        order = _topological_order(parents)
        if len(hidden) == n_nodes:
            raise ValueError(f"every node ({n_nodes}) is hidden: there is nothing to fit the network to.")
        n_states = math.prod(cards[h] for h in hidden)
        if n_states > self.max_hidden_states:
            raise ValueError(
                f"the hidden nodes {hidden} (cardinalities {tuple(cards[h] for h in hidden)}) have {n_states} joint "
                f"configurations, more than max_hidden_states={self.max_hidden_states}: exact inference enumerates "
                "every configuration for every row, at a cost in memory and time proportional to their number. "
                "Hide fewer nodes or give them fewer states, or raise max_hidden_states if the memory and time "
                "allow it."
            )
        size = sum(math.prod(cards[u] for u in parents[v] + (v,)) for v in range(n_nodes))
        if size > _MAX_TABLE:
            raise ValueError(f"the CPTs would have {size} entries in all, more than 2**24: give nodes fewer parents.")
        self.cardinalities = cards
        self.parents = parents
        self.hidden = hidden
        self.order = order

    # -- structure ---------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        """V, the number of nodes."""
        return len(self.cardinalities)

    @property
    def observed(self) -> tuple[int, ...]:
        """The observed nodes in increasing order: column ``j`` of the data is node ``observed[j]``."""
        return tuple(v for v in range(self.n_nodes) if v not in self.hidden)

    @property
    def n_hidden_states(self) -> int:
        """H, the number of joint configurations of the hidden nodes (1 without hidden nodes)."""
        return math.prod(self.cardinalities[h] for h in self.hidden)

    @property
    def hidden_states(self) -> np.ndarray:
        """``(H, n_hidden)`` the hidden configurations in the order of :meth:`posterior`'s
        columns: column ``j`` is node ``hidden[j]``'s state, row-major (the last hidden
        node varies fastest), i.e. ``np.ndindex`` over the hidden cardinalities."""
        return self._layout().configs.copy()

    def cpt_shape(self, v: int) -> tuple[int, ...]:
        """The shape of node ``v``'s CPT: its parents' cardinalities, then its own."""
        return tuple(self.cardinalities[u] for u in self.parents[v] + (v,))

    def n_parameters(self) -> int:
        """The number of free parameters: ``sum_v prod(card[parents(v)]) (card[v] - 1)``."""
        return sum(math.prod(self.cpt_shape(v)[:-1]) * (self.cardinalities[v] - 1) for v in range(self.n_nodes))

    def _layout(self):
        return _layout(self.cardinalities, self.parents, self.hidden)

    # -- EMModel kernels -------------------------------------------------------------------

    def log_joint(self, params: BayesNetParams, x: Array) -> Array:
        """``log p(x_n, hidden configuration h)``: ``(N, H)``, columns ordered as :attr:`hidden_states`."""
        return self._log_joint(params, x)[0]

    def _log_joint(self, params: BayesNetParams, x: Array):
        """The ``(N, H)`` log joint and the ``(N, F)`` one-hot design it is computed from
        (see :class:`_Layout`): the log joint is the design times an ``(F, H)`` table of
        log probabilities, and the expected counts the transposed product with the
        posterior (:meth:`e_step`): dense matrix products on any device, no scatter
        over rows, a program whose size does not grow with the number of nodes."""
        layout = self._layout()
        dtype = jnp.result_type(*params.cpts)
        # Each column's family's observed configuration, (N, F): a product of small
        # integers, exact in floating point (every family has fewer than 2**24 of them).
        config = jnp.matmul(jnp.asarray(x).astype(dtype), layout.strides.astype(dtype), precision=_EXACT)
        design = (config == layout.value).astype(dtype)
        # A zero probability gives log(tiny), not -inf: a row no configuration explains
        # keeps a finite log-likelihood and no NaN posterior (and 0 x -inf would be NaN in the product).
        table = jnp.concatenate([safe_log(cpt.astype(dtype)).reshape(-1) for cpt in params.cpts])
        return jnp.matmul(design, table[layout.cell], precision=_EXACT), design

    def e_step(
        self,
        params: BayesNetParams,
        x: Array,
        weights: Array | None = None,
        *,
        temperature=1.0,
        assignment: str = "soft",
        key=None,
        n_samples=1,
    ):
        """Expected family counts and the log-likelihood of ``x``, by enumerating the hidden configurations.

        Args:
            params: the CPTs.
            x: ``(N, V_obs)`` validated codes (:meth:`validate_data`).
            weights: optional ``(N,)`` non-negative per-row weights (repetition counts).
            temperature: the posterior over hidden configurations is
                ``softmax(log_joint / temperature)`` (deterministic annealing); 1 is
                the posterior itself.
            assignment: ``"soft"`` (the posterior: EM), ``"hard"`` (each row wholly in
                its most probable hidden configuration: classification EM) or
                ``"sample"`` (configurations drawn from the posterior: stochastic and
                Monte-Carlo EM), as in :meth:`emjax.Mixture.e_step`.
            key: the PRNG key of ``assignment="sample"``.
            n_samples: draws per row under ``"sample"``, averaged.

        Returns:
            ``(BayesNetStats, loglik)``: ``loglik`` the (weighted) sum over rows of
            ``log p(x_n) = logsumexp_h log p(x_n, h)``, whatever the temperature;
            under ``"hard"`` the classification log-likelihood ``max_h log p(x_n, h)``.

        Example:
            >>> model = emjax.DiscreteBayesNet((3, 2, 4, 2), {1: (0,), 2: (0,), 3: (0, 1)}, hidden=0)
            >>> x = model.validate_data(np.random.default_rng(0).integers(0, (2, 4, 2), size=(500, 3)))
            >>> params = model.init(jax.random.key(0), x)
            >>> stats, loglik = jax.jit(model.e_step)(params, x)   # compiled, as a fit runs it
            >>> [c.shape for c in stats.counts]   # expected counts shaped as the CPTs
            [(3,), (3, 2), (3, 4), (3, 2, 2)]
            >>> print(round(float(jnp.sum(stats.counts[0])), 3))   # the hidden node's expected counts: one per row
            500.0
        """
        lj, design = self._log_joint(params, x)
        ll, post = latent_posterior(lj, temperature=temperature, assignment=assignment, key=key, n_samples=n_samples)
        w = jnp.ones_like(ll) if weights is None else weights.astype(ll.dtype)
        # (F, H): the mass of every (observed family configuration, hidden configuration),
        # then of every CPT cell (a cell recurs for the hidden configurations that agree
        # on the family's hidden members).
        mass = jnp.matmul(design.T, post * w[:, None], precision=_EXACT)
        layout = self._layout()
        flat = jax.ops.segment_sum(mass.reshape(-1), layout.cell.reshape(-1), num_segments=layout.offsets[-1])
        bounds = zip(layout.offsets, layout.offsets[1:])
        counts = [flat[lo:hi].reshape(self.cpt_shape(v)) for v, (lo, hi) in enumerate(bounds)]
        return BayesNetStats(tuple(counts)), jnp.sum(w * ll)

    def m_step(self, stats: BayesNetStats, params: BayesNetParams | None = None) -> BayesNetParams:
        """The posterior mode: ``counts + pseudo_count`` normalised over each CPT row (uniform where that sums to 0)."""
        return BayesNetParams(tuple(_normalize_rows(c + self.pseudo_count) for c in stats.counts))

    def log_prior(self, params: BayesNetParams) -> Array:
        """``sum over CPT rows of log Dirichlet(theta_row | pseudo_count + 1)``; 0 when ``pseudo_count`` is 0."""
        a = self.pseudo_count
        total = jnp.zeros((), jnp.result_type(*params.cpts))
        if a == 0:
            return total
        for cpt in params.cpts:
            s = cpt.shape[-1]
            log_norm = math.lgamma(s * (a + 1.0)) - s * math.lgamma(a + 1.0)
            total = total + a * jnp.sum(safe_log(cpt)) + (cpt.size // s) * log_norm
        return total

    def expected_log_joint(self, stats: BayesNetStats, params: BayesNetParams) -> Array:
        """``E_q[log p(x, hidden | params)] = sum_v sum counts_v log cpt_v``, linear in ``stats`` (incremental EM)."""
        return sum(jnp.sum(c * safe_log(cpt)) for c, cpt in zip(stats.counts, params.cpts))

    @compiled
    def init(self, key, x, method: str = "random") -> BayesNetParams:
        """Every CPT row drawn from a flat ``Dirichlet(1)``: a pure function of ``key`` (vmapped over restarts).

        Args:
            key: PRNG key.
            x: the data (only its dtype is read: the tables take its floating precision).
            method: ``"random"``.
        """
        if method != "random":
            raise ValueError(f"unknown init method {method!r}; choose one of {self.init_methods}.")
        return _random_tables(self, key, float_dtype(jax.tree.leaves(x)[0].dtype))

    def unconstrain(self, params: BayesNetParams) -> tuple:
        """The log CPTs (gradient ascent), each defined up to a constant per row."""
        return tuple(safe_log(cpt) for cpt in params.cpts)

    def constrain(self, u: tuple) -> BayesNetParams:
        """The inverse of :meth:`unconstrain`: a softmax over every CPT row."""
        return BayesNetParams(tuple(jax.nn.softmax(a, axis=-1) for a in u))

    def row_width(self, x) -> int:
        """``F + 2 H``: a row of the one-hot design (see :meth:`log_joint`), its log
        joint and its posterior."""
        return len(self._layout().value) + 2 * self.n_hidden_states

    # -- validation --------------------------------------------------------------------

    def validate_data(self, x) -> Array:
        """``x`` checked: an ``(N, V_obs)`` matrix of finite integer codes, column ``j`` in
        ``0..card[observed[j]] - 1``; returned as floats of the working precision.

        Under tracing only the rank and the number of columns are checked.

        Raises:
            TypeError / ValueError: naming the problem (for a code out of range, its
                row, column, node and the node's cardinality).
        """
        xm = as_data_matrix(x)  # rank, emptiness, numeric dtype, NaN / inf
        observed = self.observed
        if xm.shape[1] != len(observed):
            raise ValueError(
                f"x has {xm.shape[1]} columns but the network observes {len(observed)} nodes {observed}: one "
                f"column per observed node, in node order (the hidden nodes {self.hidden} have none)."
            )
        if is_traced(xm):
            return xm
        # The codes are searched as given (sharded data where they live), so an integer is reported as one.
        raw = x if is_sharded(x) else np.asarray(x)
        if jnp.issubdtype(raw.dtype, jnp.floating):
            raise_first(find_first(not_integer, raw), "x", "non-integer value(s)",
                        rule="DiscreteBayesNet data must be integer state codes")
        top = np.asarray([[self.cardinalities[v] - 1 for v in observed]])
        found = find_first(_code_out_of_range, raw, top)
        if found is not None:
            node = observed[found.col]
            card = self.cardinalities[node]
            raise ValueError(
                f"x column {found.col} is node {node}, whose codes are 0..{card - 1} (cardinality {card}); x contains "
                f"{found.count} code(s) out of range, the first is {found.values[0]} at row {found.row}, "
                f"column {found.col}."
            )
        return xm

    def validate_params(self, params, x=None) -> None:
        """Raise unless ``params`` is one :class:`BayesNetParams` of this network: a CPT per
        node of the right shape, entries in ``[0, 1]``, rows summing to 1 (values checked
        when concrete)."""
        if not isinstance(params, BayesNetParams):
            fitted = "restart_params" in getattr(type(params), "__dataclass_fields__", ())
            hint = " (this is a FitResult: pass result.params)" if fitted else ""
            raise TypeError(f"DiscreteBayesNet parameters must be a BayesNetParams{hint}; got {type(params).__name__}.")
        cpts = params.cpts
        if not isinstance(cpts, (tuple, list)) or len(cpts) != self.n_nodes:
            got = len(cpts) if isinstance(cpts, (tuple, list)) else type(cpts).__name__
            raise ValueError(f"BayesNetParams.cpts must be a tuple of {self.n_nodes} tables, one per node; got {got}.")
        for v, cpt in enumerate(cpts):
            name = f"the CPT entries of node {v}"
            p = check_probabilities(cpt, self.cpt_shape(v), name)
            if p is None:
                continue
            sums = p.sum(axis=-1, dtype=np.float64)
            if np.any(np.abs(sums - 1) > 1e-5):
                worst = np.unravel_index(np.argmax(np.abs(sums - 1)), sums.shape)
                raise ValueError(
                    f"{name} must sum to 1 over node {v}'s states (the last axis); the row for parent "
                    f"configuration {tuple(int(i) for i in worst)} sums to {sums[worst]}."
                )

    # -- the fitted network --------------------------------------------------------------

    def _map(self, name: str, params: BayesNetParams, x):
        self.validate_params(params)
        x = self.validate_data(x)
        return rowwise(self, name, params, x, default_chunk_size(n_rows(x), self.row_width(x)))

    def _row_log_prob(self, params, x):
        return logsumexp(self.log_joint(params, x), axis=1)

    def _row_posterior(self, params, x):
        return jax.nn.softmax(self.log_joint(params, x), axis=1)

    def _row_predict(self, params, x):
        return jnp.asarray(self._layout().configs, jnp.int32)[jnp.argmax(self.log_joint(params, x), axis=1)]

    def log_prob(self, params: BayesNetParams, x) -> Array:
        """``log p(x_n)`` of each row, the hidden nodes summed out: ``(N,)``.

        Raises:
            TypeError / ValueError: ``x`` or ``params`` invalid, as at fit time.
        """
        return self._map("_row_log_prob", params, x)

    def posterior(self, params: BayesNetParams, x) -> Array:
        """``p(hidden configuration h | x_n)``: ``(N, H)``, the columns ordered as
        :attr:`hidden_states` (for one hidden node, its states ``0..card - 1``)."""
        return self._map("_row_posterior", params, x)

    def hidden_marginals(self, params: BayesNetParams, x) -> tuple[Array, ...]:
        """Each hidden node's posterior marginal, ``(N, card[h])`` for ``h`` in :attr:`hidden`."""
        post = self.posterior(params, x).reshape((-1,) + tuple(self.cardinalities[h] for h in self.hidden))
        axes = range(1, len(self.hidden) + 1)
        return tuple(jnp.sum(post, axis=tuple(a for a in axes if a != j)) for j in axes)

    def predict(self, params: BayesNetParams, x) -> Array:
        """The most probable joint hidden configuration of each row: ``(N, n_hidden)`` codes, columns as
        :attr:`hidden`."""
        return self._map("_row_predict", params, x)

    def sample(self, key, params: BayesNetParams, n: int) -> Array:
        """Ancestral sampling of every node, parents first.

        Args:
            key: PRNG key.
            params: the CPTs.
            n: the number of rows, a positive integer.

        Returns:
            ``(n, V)`` int32 codes of all the nodes, hidden ones included; the data a fit
            takes are ``x[:, model.observed]``.

        Example:
            >>> model = emjax.DiscreteBayesNet((3, 2, 4, 2), {1: (0,), 2: (0,), 3: (0, 1)}, hidden=0)
            >>> x = model.validate_data(np.random.default_rng(0).integers(0, (2, 4, 2), size=(500, 3)))
            >>> params = model.init(jax.random.key(0), x)
            >>> full = model.sample(jax.random.key(1), params, 500)
            >>> full.shape   # the hidden node's column included
            (500, 4)
            >>> result = emjax.fit(model, full[:, model.observed], key=jax.random.key(0), n_restarts=2)
        """
        n = check_int("n", n)
        key = check_key(key)
        self.validate_params(params)
        return _ancestral(self, key, params, n)


@eqx.filter_jit
def _random_tables(model: DiscreteBayesNet, key, dtype) -> BayesNetParams:
    """Every CPT row a ``Dirichlet(1)`` draw, as normalised standard exponentials (which
    compile in a fraction of the time of ``jax.random.dirichlet``'s Gamma rejection loops)."""
    keys = jax.random.split(key, model.n_nodes)
    return BayesNetParams(tuple(
        _normalize_rows(jax.random.exponential(keys[v], model.cpt_shape(v), dtype)) for v in range(model.n_nodes)
    ))


@eqx.filter_jit
def _ancestral(model: DiscreteBayesNet, key, params: BayesNetParams, n: int) -> Array:
    """``(n, V)`` codes of every node, drawn parents first."""
    keys = jax.random.split(key, model.n_nodes)
    values = [None] * model.n_nodes
    for v in model.order:
        cpt = jnp.asarray(params.cpts[v])
        parents = model.parents[v]
        probs = cpt[tuple(values[p] for p in parents)] if parents else jnp.broadcast_to(cpt, (n,) + cpt.shape)
        values[v] = jax.random.categorical(keys[v], jnp.log(probs), axis=-1).astype(jnp.int32)
    return jnp.stack(values, axis=1)
