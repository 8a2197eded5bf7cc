"""The one registry of component families the tests run.

Every family the library ships is a :class:`FamilyCase` in :data:`CASES`: its
model (K components, with or without conjugate priors), a sampler of a planted
mixture with its true labels, the scipy reference of one component's log
density, and a sampler of random mixtures for the algorithm tests.
``tests/families/test_conformance.py`` runs every check on every case, so a new
family gets all of them by adding one entry here.

The data generators of the whole suite live here as well (``make_blobs``, the
planted Bernoulli / Categorical / count mixtures); ``tests/conftest.py`` and the
family test modules re-export the names other modules import from them.

Nothing here enables float64: ``tests/conftest.py`` does (before any test
module is imported). Planted parameters are built on call, not at import, so
they take the precision in force when they are used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats as st

import emjax

# -- Gaussian blobs ----------------------------------------------------------------------------


def make_blobs(seed, n=600, d=3, k=3, sep=4.0, dtype=np.float64):
    """A well-separated Gaussian mixture sample with random full covariances: ``(x, labels)``."""
    x, z = emjax.datasets.gaussian_mixture_sample(seed, n, d, k, sep)
    return x.astype(dtype), z


#: The Gaussian cases' number of features (their priors are written for it).
D_GAUSS = 3


def gaussian_prior():
    """A proper Normal-inverse-Wishart prior for ``D_GAUSS`` features (kappa0 > 0, a non-diagonal S0)."""
    return emjax.NormalInverseWishart(
        m0=[0.3, -0.2, 0.1], kappa0=0.5, nu0=D_GAUSS + 3.0, S0=[[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 1.5]]
    )


# -- Bernoulli and Categorical: planted latent classes ---------------------------------------

KB, DB = 3, 8  # Bernoulli: components, features
KC, DC, SC = 3, 3, 4  # Categorical: components, features, categories

B_MEANS = np.array(
    [
        [0.9, 0.8, 0.9, 0.1, 0.2, 0.1, 0.7, 0.3],
        [0.1, 0.2, 0.1, 0.9, 0.8, 0.9, 0.6, 0.2],
        [0.8, 0.1, 0.2, 0.8, 0.1, 0.7, 0.1, 0.9],
    ]
)
B_WEIGHTS = np.array([0.3, 0.3, 0.4])
C_WEIGHTS = np.array([0.25, 0.35, 0.4])


def planted_probs():
    """Three classes, each favouring a different category (0.85) in every feature."""
    p = np.full((KC, DC, SC), 0.05)
    for k in range(KC):
        for d in range(DC):
            p[k, d, (k + d) % SC] = 0.85
    return p


def bern_params(means=B_MEANS, weights=B_WEIGHTS):
    return emjax.MixtureParams(jnp.asarray(weights), emjax.BernoulliParams(jnp.asarray(means)))


def cat_params(probs=None, weights=C_WEIGHTS):
    probs = planted_probs() if probs is None else probs
    return emjax.MixtureParams(jnp.asarray(weights), emjax.CategoricalParams(jnp.asarray(probs)))


def bern_data(n, seed=0):
    """``n`` rows of the planted Bernoulli mixture (``Mixture.sample``): ``(x, labels)``."""
    x, z = emjax.Mixture(emjax.Bernoulli(), KB).sample(jax.random.key(seed), bern_params(), n)
    return np.asarray(x), np.asarray(z)


def cat_data(n, seed=0):
    """``n`` rows of the planted Categorical mixture (``Mixture.sample``): ``(x, labels)``."""
    x, z = emjax.Mixture(emjax.Categorical(SC), KC).sample(jax.random.key(seed), cat_params(), n)
    return np.asarray(x), np.asarray(z)


#: Per-feature prior hyperparameters of the Bernoulli and Categorical cases.
BERNOULLI_PRIOR_A = np.linspace(1.5, 3.0, DB)
CATEGORICAL_PRIOR_ALPHA = 1.0 + np.random.default_rng(5).uniform(0.5, 2.0, size=(DC, SC))

# -- count families: Poisson, Binomial (known and per-point trials), Multinomial ---------------

K_COUNTS, D_COUNTS, N_TRIALS, N_DRAWS = 3, 4, 12, 30
COUNT_WEIGHTS = np.array([0.2, 0.3, 0.5])
COUNT_COMPONENTS = {  # well-separated components, K = 3, D = 4
    "poisson": np.array([[1.0, 8.0, 3.0, 15.0], [10.0, 2.0, 6.0, 4.0], [5.0, 5.0, 12.0, 0.5]]),
    "binomial": np.array([[0.1, 0.8, 0.5, 0.3], [0.7, 0.2, 0.4, 0.9], [0.45, 0.5, 0.05, 0.6]]),
    "multinomial": np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.3, 0.1, 0.1], [0.25, 0.05, 0.6, 0.1]]),
}
_COUNT_PARAMS = {"poisson": emjax.PoissonParams, "binomial": emjax.BinomialParams, "multinomial": emjax.MultinomialParams}


def count_truth(name):
    """The planted count mixture of family ``name`` (per-point trials: ``binomial``'s)."""
    return emjax.MixtureParams(jnp.asarray(COUNT_WEIGHTS), _COUNT_PARAMS[name](jnp.asarray(COUNT_COMPONENTS[name])))


def count_sample(name, n, seed):
    """``n`` rows of the planted count mixture, drawn with numpy: ``(x, labels)``."""
    rng = np.random.default_rng(seed)
    z = rng.choice(K_COUNTS, size=n, p=COUNT_WEIGHTS)
    theta = COUNT_COMPONENTS[name][z]
    if name == "poisson":
        x = rng.poisson(theta)
    elif name == "binomial":
        x = rng.binomial(N_TRIALS, theta)
    else:
        x = np.stack([rng.multinomial(N_DRAWS, t) for t in theta])
    return x.astype(np.float64), z


def sample_per_point(n, seed, per_feature=False, allow_zero=False):
    """The planted binomial mixture with trials varying between points (numpy):
    ``(successes (n, D), trials (n,) or (n, D), labels)``; trials in ``0..39``
    (``1..39`` unless ``allow_zero``)."""
    rng = np.random.default_rng(seed)
    z = rng.choice(K_COUNTS, size=n, p=COUNT_WEIGHTS)
    theta = COUNT_COMPONENTS["binomial"][z]
    trials = rng.integers(0 if allow_zero else 1, 40, size=(n, D_COUNTS) if per_feature else n)
    s = rng.binomial(trials if per_feature else trials[:, None], theta)
    return s.astype(np.float64), trials, z


# -- scipy references: log p(x_n | theta_k), (N, K) --------------------------------------------


def _leaf(components):
    return np.asarray(jax.tree.leaves(components)[0], dtype=np.float64)


def _full_matrices(covariance_type, cov, k, d):
    """K ``(D, D)`` matrices from covariances in ``covariance_type``'s shape."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return [cov] * k
    if covariance_type == "diag":
        return [np.diag(c) for c in cov]
    return [c * np.eye(d) for c in cov]


def _gaussian_reference(covariance_type):
    def reference(components, x):
        mu, cov = np.asarray(components.means, np.float64), np.asarray(components.covariances, np.float64)
        k, d = mu.shape
        full = _full_matrices(covariance_type, cov, k, d)
        return np.stack([st.multivariate_normal.logpdf(x, mu[j], full[j]) for j in range(k)], axis=1)

    return reference


def _bernoulli_reference(components, x):
    return st.bernoulli.logpmf(x[:, None, :], _leaf(components)[None]).sum(-1)


def _categorical_reference(components, x):
    """A table look-up: ``sum_d log theta[k, d, x_d]``."""
    theta = _leaf(components)  # (K, D, S)
    codes = np.asarray(x).astype(int)
    picked = theta[:, np.arange(theta.shape[1])[None, :], codes]  # (K, N, D)
    return np.log(picked).sum(-1).T


def _multinomial_reference(components, x):
    return np.stack([st.multinomial.logpmf(x, x.sum(1), t) for t in _leaf(components)], axis=1)


def _binomial_reference(components, x):
    return np.stack([st.binom.logpmf(x, N_TRIALS, p).sum(1) for p in _leaf(components)], axis=1)


def _binomial_per_point_reference(components, data):
    s, t = (np.asarray(a, np.float64) for a in data)
    t = t[:, None] if t.ndim == 1 else t
    return np.stack([st.binom.logpmf(s, t, p).sum(1) for p in _leaf(components)], axis=1)


def _poisson_reference(components, x):
    return np.stack([st.poisson.logpmf(x, rate).sum(1) for rate in _leaf(components)], axis=1)


# -- random mixtures of any K and D (the algorithm tests' data) --------------------------------


def _random_labels(seed, n, k):
    rng = np.random.default_rng(seed)
    return rng, rng.integers(0, k, size=n)


def _random_gaussian(n, seed, k, d):
    return make_blobs(seed, n=n, d=d, k=k, sep=2.0)[0]


def _random_bernoulli(n, seed, k, d):
    rng, z = _random_labels(seed, n, k)
    p = rng.uniform(0.1, 0.9, size=(k, d + 3))
    return (rng.random((n, d + 3)) < p[z]).astype(np.float64)


def _random_categorical(n, seed, k, d):
    rng, z = _random_labels(seed, n, k)
    probs = rng.dirichlet(np.full(SC, 0.5), size=(k, d + 3))  # peaked, so K is identifiable
    u = rng.random((n, d + 3, 1))
    return (u > np.cumsum(probs[z], axis=-1)).sum(-1).astype(np.float64)


def _random_multinomial(n, seed, k, d):
    rng, z = _random_labels(seed, n, k)
    probs = rng.dirichlet(np.ones(d + 1), size=k)
    return np.stack([rng.multinomial(20, probs[c]) for c in z]).astype(np.float64)


def _random_binomial(n, seed, k, d):
    rng, z = _random_labels(seed, n, k)
    return rng.binomial(N_TRIALS, rng.uniform(0.1, 0.9, size=(k, d))[z]).astype(np.float64)


def _random_poisson(n, seed, k, d):
    rng, z = _random_labels(seed, n, k)
    return rng.poisson(rng.uniform(0.5, 8.0, size=(k, d))[z]).astype(np.float64)


# -- the registry ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FamilyCase:
    """One component family as the tests exercise it.

    Attributes:
        name: the case's id in test names.
        family: ``prior -> Family``: the family with this case's configuration,
            with its conjugate prior (``True``) or without (``False``). The
            priors are proper and per feature where the family allows, written
            for the planted data's number of features.
        sample: ``(n, seed) -> (x, labels)``: rows of the planted mixture and
            their true components (``x`` a pytree for pair data).
        log_density: ``(components, x) -> (N, K)``: ``log p(x_n | theta_k)``
            from scipy.stats (or a hand-written table), on raw numpy data.
        sample_random: ``(n, seed, k, d) -> x``: rows of a random K-component
            mixture over about ``d`` features (``family_sample``), or ``None``
            for pair data.
        n_components: K of the planted mixture.
        pair_data: the data are a ``(successes, trials)`` pair, not an array.
    """

    name: str
    family: Callable[[bool], Any]
    sample: Callable[[int, int], tuple]
    log_density: Callable[[Any, Any], np.ndarray]
    sample_random: Callable[[int, int, int, int], np.ndarray] | None = None
    n_components: int = 3
    pair_data: bool = False

    def model(self, k=None, prior=False, **kw):
        """A K-component mixture (K of the planted mixture by default); ``prior``
        adds the family's prior and a Dirichlet on the weights (unequal alphas).
        ``kw`` go to :class:`emjax.Mixture` (``frozen``, ``weights_prior``, ...)."""
        k = self.n_components if k is None else k
        if prior:
            kw.setdefault("weights_prior", emjax.Dirichlet(np.linspace(1.5, 3.5, k)))
        return emjax.Mixture(self.family(prior), k, **kw)


def _gaussian_case(covariance_type):
    return FamilyCase(
        name=covariance_type,
        family=lambda prior: emjax.Gaussian(covariance_type, prior=gaussian_prior() if prior else None),
        sample=lambda n, seed: make_blobs(seed, n=n, d=D_GAUSS, k=3),
        log_density=_gaussian_reference(covariance_type),
        sample_random=_random_gaussian,
    )


def student_t_blobs(n, seed, dof=5.0):
    """Gaussian blobs made heavy-tailed: each point's offset from its component's
    sample mean divided by ``sqrt(u)``, ``u ~ Gamma(dof/2, rate dof/2)`` (a planted
    Student-t mixture with ``dof`` degrees of freedom): ``(x, labels)``."""
    x, z = make_blobs(seed, n=n, d=D_GAUSS, k=3)
    u = np.random.default_rng(seed + 101).gamma(dof / 2, 2 / dof, size=n)
    centres = np.stack([x[z == j].mean(0) for j in range(3)])
    return centres[z] + (x - centres[z]) / np.sqrt(u)[:, None], z


def _student_t_reference(covariance_type):
    def reference(components, x):
        mu, nu = np.asarray(components.means, np.float64), np.asarray(components.dofs, np.float64)
        k, d = mu.shape
        full = _full_matrices(covariance_type, np.asarray(components.covariances, np.float64), k, d)
        return np.stack([st.multivariate_t.logpdf(x, mu[j], full[j], df=nu[j]) for j in range(k)], axis=1)

    return reference


def _student_t_case(covariance_type):
    return FamilyCase(
        name=f"student_t_{covariance_type}",
        family=lambda prior: emjax.StudentT(covariance_type, prior=gaussian_prior() if prior else None),
        sample=lambda n, seed: student_t_blobs(n, seed),
        log_density=_student_t_reference(covariance_type),
        sample_random=lambda n, seed, k, d: make_blobs(seed, n=n, d=d, k=k, sep=2.0)[0],
    )


_CASE_LIST = [
    *(_gaussian_case(ct) for ct in ("full", "diag", "spherical", "tied")),
    _student_t_case("full"),  # one structure: the structures are the Gaussian cases' code, tested there
    FamilyCase(
        name="bernoulli",
        family=lambda prior: emjax.Bernoulli(prior=emjax.BetaPrior(BERNOULLI_PRIOR_A, 2.0) if prior else None),
        sample=bern_data,
        log_density=_bernoulli_reference,
        sample_random=_random_bernoulli,
    ),
    FamilyCase(
        name="categorical",
        family=lambda prior: emjax.Categorical(SC, prior=CATEGORICAL_PRIOR_ALPHA if prior else None),
        sample=cat_data,
        log_density=_categorical_reference,
        sample_random=_random_categorical,
    ),
    FamilyCase(
        name="multinomial",
        family=lambda prior: emjax.Multinomial(prior=emjax.Dirichlet(1.5) if prior else None, n_draws=N_DRAWS),
        sample=lambda n, seed: count_sample("multinomial", n, seed),
        log_density=_multinomial_reference,
        sample_random=_random_multinomial,
    ),
    FamilyCase(
        name="binomial",
        family=lambda prior: emjax.Binomial(N_TRIALS, prior=emjax.BetaPrior(2.0, 3.0) if prior else None),
        sample=lambda n, seed: count_sample("binomial", n, seed),
        log_density=_binomial_reference,
        sample_random=_random_binomial,
    ),
    FamilyCase(
        name="binomial_per_point",
        family=lambda prior: emjax.Binomial(None, prior=emjax.BetaPrior(2.0, 3.0) if prior else None),
        sample=lambda n, seed: (lambda s, t, z: ((s, t), z))(*sample_per_point(n, seed, allow_zero=True)),
        log_density=_binomial_per_point_reference,
        pair_data=True,
    ),
    FamilyCase(
        name="poisson",
        family=lambda prior: emjax.Poisson(prior=emjax.GammaPrior(2.0, 0.1) if prior else None),
        sample=lambda n, seed: count_sample("poisson", n, seed),
        log_density=_poisson_reference,
        sample_random=_random_poisson,
    ),
]

#: Every family case by name.
CASES: dict[str, FamilyCase] = {case.name: case for case in _CASE_LIST}

#: The families with array data (every case but the pair-data ones), for tests
#: parametrised over ``family_model`` / ``family_sample``.
FAMILY_NAMES = [name for name, case in CASES.items() if not case.pair_data]
assert all(CASES[name].sample_random is not None for name in FAMILY_NAMES)


def family_model(name, k=3, **kw):
    """A K-component mixture of the family ``name`` without priors; ``kw`` go to :class:`emjax.Mixture`."""
    return CASES[name].model(k, **kw)


def family_sample(name, n, seed, k=3, d=3):
    """``n`` rows drawn from a random K-component mixture of family ``name``."""
    return CASES[name].sample_random(n, seed, k, d)
