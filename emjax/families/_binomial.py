"""Binomial components: D independent success counts out of a known number of trials.

``p(x | p_k) = prod_d C(n, x_d) p_kd^x_d (1 - p_kd)^(n - x_d)``, the full
normalised pmf, with ``n = n_trials`` the same for every point and feature, or,
with ``n_trials=None``, per-point trials ``n_nd`` given with the data as a pair
``(successes, trials)``.
Statistics are the responsibility-weighted successes ``S_kd = sum r x`` and
failures ``F_kd = sum r (n - x)`` (kept separately, so ``n N_k - S_kd`` is never
formed by a cancelling subtraction); the ML M-step is ``p_kd = S_kd / (S_kd + F_kd)``
(``S_kd / (n N_k)`` for a fixed ``n``) and the MAP M-step under a ``Beta(a, b)``
prior (``a, b >= 1``) is ``p_kd = (S_kd + a - 1) / (S_kd + F_kd + a + b - 2)``.

Numerics: ``log_prob`` clips ``p`` to ``[tiny, 1 - eps/2]`` (``tiny`` the
smallest normal number, ``1 - eps/2`` the largest number below 1), so an ML
probability of exactly 0 or 1 gives ``log p = 0`` for the outcome it allows and
a very negative but finite value elsewhere, never NaN.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import gammaln

from jax.sharding import NamedSharding, PartitionSpec

from .._checks import check_probabilities, count_matrix, find_first, is_sharded, is_traced, not_count, outside, raise_first
from ._priors import BetaPrior
from ._base import Family, rows_times
from ._bernoulli import prob_floor

_EXACT = jax.lax.Precision.HIGHEST


def _clip_prob(p: Array) -> Array:
    """``p`` clipped into ``[tiny, 1 - eps/2]``: both ``log p`` and ``log(1 - p)`` finite."""
    fi = jnp.finfo(p.dtype)
    return jnp.clip(p, fi.tiny, 1 - fi.eps / 2)


class BinomialParams(eqx.Module):
    """Parameters of K binomial components: success ``probs`` ``(K, D)`` in ``[0, 1]``."""

    probs: Array


class BinomialStats(eqx.Module):
    """Statistics of K binomial components (plain sums, additive leaf-wise).

    Attributes:
        counts: ``(K,)`` sum of responsibilities ``N_k``.
        successes: ``(K, D)`` ``S_kd = sum_n r_nk x_nd``.
        failures: ``(K, D)`` ``F_kd = sum_n r_nk (n_trials - x_nd)``.
    """

    counts: Array
    successes: Array
    failures: Array


class Binomial(Family):
    """Components of D independent binomial counts with known numbers of trials.

    Two modes:

    * ``Binomial(n)``: the same number of trials ``n`` for every point and
      feature; the data are a success-count matrix ``x`` ``(N, D)`` in ``0..n``.
    * ``Binomial(None)`` (per-point trials): the data are a pair
      ``(successes, trials)``: ``successes`` ``(N, D)`` and ``trials`` ``(N,)``
      (one count per point, shared by its features) or ``(N, D)``, all
      non-negative integers with ``successes <= trials``. A trial count of 0 is
      allowed: that entry is an observation of nothing (its likelihood is 1 and it
      adds nothing to the statistics), so ``(N, D)`` trials with zeros encode
      missing entries. Pass the pair wherever a mixture takes data
      (``emjax.fit(model, (successes, trials), ...)``, ``model.log_prob``,
      ``model.predict``, ...); every leaf is chunked along ``N``.
      Sampling cannot know the trials of new points, so :meth:`sample` (and so
      ``Mixture.sample``) and :meth:`moments` (``Mixture.mean``/``covariance``)
      raise; draw with :meth:`sample_successes` given the trials instead.
      With every ``trials`` equal to ``n`` the fit equals that of ``Binomial(n)``.

    Args:
        n_trials: the number of trials ``n``, a positive int, or ``None`` for
            per-point trials given with the data.
        prior: a :class:`BetaPrior` on every probability for MAP-EM, or ``None``
            for maximum likelihood.

    Example:
        >>> model = emjax.Mixture(Binomial(10), 2)    # ten tosses per point: the two-coin problem

        Tosses that differ between points: two coins, of heads probability 0.2 and 0.8.

        >>> rng = np.random.default_rng(0)
        >>> trials = rng.integers(5, 15, size=200)
        >>> successes = rng.binomial(trials, np.where(rng.uniform(size=200) < 0.5, 0.2, 0.8))[:, None]
        >>> model = emjax.Mixture(Binomial(None), 2)
        >>> result = emjax.fit(model, (successes, trials), key=jax.random.key(0))
        >>> print(np.sort(np.asarray(result.params.components.probs[:, 0]).round(1)))
        [0.2 0.8]
        >>> k1, k2 = jax.random.split(jax.random.key(1))
        >>> z = jax.random.categorical(k1, jnp.log(result.params.weights), shape=(5,))
        >>> new = model.family.sample_successes(k2, result.params.components, z, jnp.full(5, 10))
        >>> new.shape   # heads in ten tosses of five new points
        (5, 1)
    """

    n_trials: int | None = eqx.field(static=True)
    prior: BetaPrior | None

    param_groups: ClassVar[tuple[str, ...]] = ("probs",)

    def __init__(self, n_trials: int | None, prior: BetaPrior | None = None):
        if n_trials is not None:
            if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)):
                raise TypeError(f"n_trials must be a positive int, or None for per-point trials; got {n_trials!r}.")
            if n_trials < 1:
                raise ValueError(f"n_trials must be a positive int, or None for per-point trials; got {n_trials}.")
            n_trials = int(n_trials)
        if prior is not None and not isinstance(prior, BetaPrior):
            raise TypeError(f"prior must be a BetaPrior or None; got {type(prior).__name__}.")
        self.n_trials = n_trials
        self.prior = prior

    @property
    def per_point(self) -> bool:
        """Whether the trials come with the data (``n_trials=None``)."""
        return self.n_trials is None

    def _split(self, x):
        """``(successes (N, D), trials)``: ``trials`` ``(N, D)``, ``(N, 1)`` or the int ``n``."""
        if self.n_trials is not None:
            return x, self.n_trials
        s, t = x
        return s, (t[:, None] if t.ndim == 1 else t)

    # -- missing entries (fixed n_trials): left out, imputed at n p in the statistics

    @property
    def supports_missing(self) -> bool:
        return self.n_trials is not None

    def feature_log_prob(self, params: BinomialParams, x) -> Array:
        n = self.n_trials
        p = _clip_prob(params.probs)[None]
        xx = x[:, None, :]
        return xx * jnp.log(p) + (n - xx) * jnp.log1p(-p) + _log_binom(x, n)[:, None, :]

    def statistics_observed(self, x0, observed, resp, params: BinomialParams, cache) -> BinomialStats:
        n = self.n_trials
        m = observed.astype(resp.dtype)
        miss = jnp.matmul(resp.T, 1.0 - m, precision=_EXACT)
        p = params.probs
        return BinomialStats(
            jnp.sum(resp, axis=0),
            jnp.matmul(resp.T, x0, precision=_EXACT) + n * p * miss,
            jnp.matmul(resp.T, m * (n - x0), precision=_EXACT) + n * (1 - p) * miss,
        )

    def impute(self, params: BinomialParams, x0, observed):
        return jnp.where(observed[:, None, :], x0[:, None, :], self.n_trials * params.probs[None])

    def log_prob(self, params: BinomialParams, x) -> Array:
        x, n = self._split(x)
        p = _clip_prob(params.probs)
        lp = rows_times(x, jnp.log(p)) + rows_times(n - x, jnp.log1p(-p))
        return lp + jnp.sum(jnp.broadcast_to(_log_binom(x, n), x.shape), axis=1)[:, None]

    def statistics(self, x, resp: Array, params: BinomialParams | None = None) -> BinomialStats:
        x, n = self._split(x)
        return BinomialStats(
            jnp.sum(resp, axis=0),
            jnp.matmul(resp.T, x, precision=_EXACT),
            jnp.matmul(resp.T, n - x, precision=_EXACT),
        )

    def expected_log_likelihood(self, stats: BinomialStats, params: BinomialParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        p = _clip_prob(params.probs)
        return jnp.sum(stats.successes * jnp.log(p) + stats.failures * jnp.log1p(-p))

    def maximize(self, stats: BinomialStats, params=None, frozen: frozenset = frozenset()) -> BinomialParams:
        if "probs" in frozen:
            return BinomialParams(params.probs)
        s, f = stats.successes, stats.failures
        if self.prior is None:
            num, den = s, s + f
        else:
            d = s.shape[1]
            a = jnp.broadcast_to(self.prior.a.astype(s.dtype), (d,))
            b = jnp.broadcast_to(self.prior.b.astype(s.dtype), (d,))
            num, den = s + a - 1, s + f + a + b - 2
        # An empty component without prior pseudo-counts gets 1/2 rather than 0/0.
        safe = jnp.where(den > 0, den, 1.0)
        return BinomialParams(jnp.clip(jnp.where(den > 0, num / safe, 0.5), 0.0, 1.0))

    def log_prior(self, params: BinomialParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.probs.dtype)
        return jnp.sum(self.prior.log_prob(params.probs))

    def seed_points(self, x) -> Array:
        """k-means / random-point seeding runs on the counts themselves (all out of ``n``);
        with per-point trials on the success fractions ``successes / trials``, an
        entry with 0 trials taking its feature's pooled fraction (1/2 where a
        feature has no trials at all)."""
        if self.n_trials is not None:
            return x
        s, t = self._split(x)
        t = jnp.broadcast_to(t, s.shape)
        tot_s, tot_t = jnp.sum(s, axis=0), jnp.sum(t, axis=0)
        pooled = jnp.where(tot_t > 0, tot_s / jnp.where(tot_t > 0, tot_t, 1), 0.5)
        return jnp.where(t > 0, s / jnp.where(t > 0, t, 1), pooled[None, :])

    def init_from_centers(self, x, centers: Array) -> BinomialParams:
        # The centres' success fractions, shrunk 10% towards the mean fraction so
        # that a 0 or n in a centre does not give a probability of exactly 0 or 1.
        seeds = self.seed_points(x)
        mean = jnp.mean(seeds, axis=0)
        p = 0.9 * centers + 0.1 * mean[None, :]
        if self.n_trials is not None:
            p = p / self.n_trials
        # Strictly inside (0, 1): a feature without successes (or without failures)
        # must still start where a Beta prior's density is finite.
        lo = prob_floor(seeds.dtype, 0.0)
        return BinomialParams(jnp.clip(p, lo, 1.0 - lo).astype(seeds.dtype))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        return 0 if "probs" in frozen else n_components * n_features

    def sample(self, key, params: BinomialParams, components: Array) -> Array:
        if self.n_trials is None:
            raise ValueError(
                "Binomial(n_trials=None) takes its trials from the data, so it cannot draw new points "
                "without them (Mixture.sample cannot pass them). Draw the components yourself and call "
                "family.sample_successes(key, params, components, trials), e.g. "
                "z = jax.random.categorical(k1, jnp.log(params.weights), shape=(m,)); "
                "x = model.family.sample_successes(k2, params.components, z, trials)."
            )
        return self.sample_successes(key, params, components, self.n_trials)

    def sample_successes(self, key, params: BinomialParams, components: Array, trials) -> Array:
        """Success counts of new points with given trials: ``(M, D)``.

        Args:
            key: PRNG key.
            params: the components' :class:`BinomialParams`.
            components: ``(M,)`` the component of each point.
            trials: the number of trials: an int, ``(M,)`` (one per point) or ``(M, D)``.
        """
        p = params.probs[components]
        n = jnp.asarray(trials, p.dtype)
        if n.ndim == 1:
            n = n[:, None]
        n = jnp.broadcast_to(n, p.shape)
        return jax.random.binomial(key, n, p, p.shape, dtype=p.dtype)

    def moments(self, params: BinomialParams):
        if self.n_trials is None:
            raise ValueError(
                "Binomial(n_trials=None) has no fixed number of trials, so its component moments are "
                "undefined: for n trials the means are n * probs and the covariances diag(n p (1 - p))."
            )
        p = params.probs
        n = self.n_trials
        return n * p, jax.vmap(jnp.diag)(n * p * (1 - p))

    def unconstrain(self, params: BinomialParams) -> dict:
        """``{"logits": (K, D)}``, ``log(p / (1 - p))`` of the probabilities clipped
        into ``[tiny, 1 - eps/2]`` as ``log_prob`` does, so always finite."""
        p = _clip_prob(params.probs)
        return {"logits": jnp.log(p) - jnp.log1p(-p)}

    def constrain(self, u: dict) -> BinomialParams:
        """The inverse of :meth:`unconstrain`: ``probs = sigmoid(logits)``."""
        return BinomialParams(jax.nn.sigmoid(u["logits"]))

    def degenerate(self, params: BinomialParams, x: Array) -> Array:
        # The binomial likelihood is bounded: only non-finite parameters are flagged.
        return ~jnp.all(jnp.isfinite(params.probs), axis=1)

    def validate_data(self, x):
        if self.n_trials is None:
            return self._validate_pair(x)
        if (
            isinstance(x, tuple) and len(x) == 2 and all(hasattr(a, "ndim") for a in x)
            and (x[0].ndim == 2 or x[0].shape != x[1].shape)
        ):
            raise TypeError(
                f"Binomial(n_trials={self.n_trials}) takes a success-count matrix (N, D), not a pair; "
                "for data (successes, trials) with per-point trials use Binomial(n_trials=None)."
            )
        arr = count_matrix(x, what="success counts")
        if not is_traced(arr):
            raise_first(
                find_first(outside(0, self.n_trials), arr), "x", f"value(s) above {self.n_trials}",
                rule=f"x must hold success counts in 0..n_trials={self.n_trials}",
            )
        return arr

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, BinomialParams):
            raise TypeError(f"Binomial parameters must be a BinomialParams; got {type(params).__name__}.")
        check_probabilities(params.probs, (n_components, n_features), "Binomial probs")

    def _validate_pair(self, x):
        """Per-point mode: check ``(successes, trials)``; returns a tuple of float arrays."""
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise TypeError(
                "Binomial(n_trials=None) takes data as a pair (successes, trials): successes (N, D) and "
                f"trials (N,) or (N, D); got {type(x).__name__}"
                + (f" of length {len(x)}." if isinstance(x, (tuple, list)) else ".")
            )
        s = count_matrix(x[0], "successes", what="success counts")
        t = _checked_trials(x[1], s)
        if t.shape not in ((s.shape[0],), s.shape):
            raise ValueError(
                f"trials must have shape (N,) = ({s.shape[0]},) or (N, D) = {tuple(s.shape)} to match "
                f"successes; got {tuple(t.shape)}."
            )
        if not is_traced(s) and not is_traced(t):
            found = find_first(_exceeds, s, t)
            if found is not None:
                raise_first(
                    found, "successes", "value(s) above their trials", rule="successes must not exceed trials",
                    value=f"{found.values[0]} > {found.values[1]}",
                )
        return (s, t)


def _checked_trials(t, s: Array) -> Array:
    """Per-point trials, numeric ``(N,)`` or ``(N, D)`` non-negative integers, in the dtype of the successes ``s``.

    Sharded trials are checked on their devices and keep their sharding; trials
    from the host are split over rows like sharded successes, since the fit needs
    every leaf of the data split alike (see ``emjax._sharding.row_sharding``).
    """
    if is_traced(t):
        return t.astype(s.dtype)
    t = t if is_sharded(t) else np.asarray(t)
    if np.dtype(t.dtype).kind not in "biuf":
        raise TypeError(f"trials must be numeric; got dtype {t.dtype}.")
    if t.ndim not in (1, 2):
        raise ValueError(f"trials must be (N,) or (N, D); got shape {t.shape}.")
    raise_first(
        find_first(not_count, t), "trials", "negative, non-integer or non-finite value(s)",
        rule="trials must hold non-negative integer counts",
    )
    if is_sharded(t):
        return t.astype(s.dtype)  # elementwise: keeps the row sharding
    if is_sharded(s) and isinstance(s.sharding, NamedSharding):
        # From the host, as weights are placed: under jax.distributed every process
        # passes the same trials and keeps its own rows.
        spec = tuple(s.sharding.spec)
        rows = NamedSharding(s.sharding.mesh, PartitionSpec(spec[0] if spec else None))
        return jax.device_put(np.asarray(t, s.dtype), rows)
    return jnp.asarray(t, s.dtype)


def _exceeds(xp, successes, trials):
    return successes > trials



def _log_binom(x: Array, n) -> Array:
    """``log C(n, x)`` elementwise (``n`` an int or broadcastable array)."""
    return gammaln(jnp.asarray(n + 1, x.dtype)) - gammaln(x + 1) - gammaln(n - x + 1)
