"""Every algorithm over every kind of data source equals the in-memory fit (float64).

The host-streamed sources (an array read in chunks, a list of unequal chunks, a
function returning an iterable, a .npy file) run the same algorithm init/step
through the host loop; blocks and mini-batches are read in the same order, so
the fits agree to rounding. Sharded arrays: tests/data/test_sharded.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import emjax
from tests.conftest import make_blobs
from tests.test_runner import collapse_case

N = 600
X = make_blobs(5, n=N, d=3, k=3, sep=3.0)[0]
W = np.random.default_rng(2).integers(0, 4, size=N).astype(np.float64)
MODEL = emjax.Mixture(emjax.Gaussian("diag"), 3)
ALGORITHMS = {
    "batch": lambda shuffle: emjax.BatchEM(),
    "incremental": lambda shuffle: emjax.IncrementalEM(n_blocks=4),
    "stepwise": lambda shuffle: emjax.StepwiseEM(batch_size=100, kappa=0.7, shuffle=shuffle),
    "gradient": lambda shuffle: emjax.GradientAscent(optax.adam(0.05)),
    "minibatch-gradient": lambda shuffle: emjax.GradientAscent(optax.adam(0.05), batch_size=150, shuffle=shuffle),
}
SPLITS = [0, 130, 131, 400, N]  # unequal list chunks, one of a single row


def sources(tmp_path):
    """(name, source, shuffle allowed): the host sources, each with weights travelling in chunks."""
    path = tmp_path / "x.npy"
    np.save(path, X)
    chunks = [X[a:b] for a, b in zip(SPLITS, SPLITS[1:])]
    w_chunks = [W[:300], W[300:]]
    return [
        ("array", emjax.Stream(X, weights=W, chunk_size=250), True),
        ("list", emjax.Stream(chunks, weights=w_chunks, chunk_size=250), True),  # re-cut across the uneven chunks
        ("function", emjax.Stream(lambda: iter(chunks), weights=lambda: iter(w_chunks), chunk_size=250), False),
        ("npy", emjax.Stream(str(path), weights=W, chunk_size=250), True),
    ]


def assert_same_fit(a, b):
    for u, v in zip(jax.tree.leaves(a.restart_params), jax.tree.leaves(b.restart_params)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_allclose(a.n_passes, b.n_passes, rtol=1e-12)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_over_every_source_equals_in_memory(algorithm, tmp_path):
    memory = {}
    for name, stream, shuffle in sources(tmp_path):
        if algorithm != "batch" and name == "npy":
            continue  # the .npy path reads like the array source; batch EM covers it
        if "gradient" in algorithm and name == "list":
            continue  # gradient ascent reads sources as the EMs do (array, function); CI's time
        if shuffle not in memory:
            memory[shuffle] = emjax.fit(MODEL, X, key=jax.random.key(0), weights=W, n_restarts=2, init="kmeans",
                                        algorithm=ALGORITHMS[algorithm](shuffle), max_iter=4, tol=0.0)
        streamed = emjax.fit(MODEL, stream, key=jax.random.key(0), n_restarts=2, init="kmeans",
                             algorithm=ALGORITHMS[algorithm](shuffle), max_iter=4, tol=0.0)
        assert_same_fit(streamed, memory[shuffle])
        np.testing.assert_allclose(streamed.n_points, W.sum(), rtol=1e-12)


def test_reinit_collapsed_over_a_stream():
    """The collapse remedy runs over a stream as in memory (the sample is the data here)."""
    x, model, p0 = collapse_case()
    kw = dict(key=jax.random.key(1), init=p0, max_iter=6, tol=0.0, reinit_collapsed=True)
    memory = emjax.fit(model, x, **kw)
    streamed = emjax.fit(model, emjax.Stream(x, chunk_size=64), **kw)
    assert int(memory.n_collapses[0]) >= 1
    assert_same_fit(streamed, memory)


def test_a_stream_larger_than_the_sample_initialises_from_the_sample():
    """init_size rows are the in-memory sample: a method runs on them, then the fit on all rows."""
    stream = emjax.Stream(X, chunk_size=200, init_size=300)
    res = emjax.fit(MODEL, stream, key=jax.random.key(0), max_iter=3, tol=0.0)
    data = emjax.data.make_data(MODEL, emjax.Stream(X, chunk_size=200, init_size=300), key=jax.random.key(0))
    assert jax.tree.leaves(data.sample)[0].shape == (300, 3)
    # fit measures the regularisation scale on all rows of the stream, then seeds from the sample.
    p0 = MODEL.adapt(X).init(jax.random.split(jax.random.key(0), 1)[0], data.sample, "kmeans")
    ref = emjax.fit(MODEL, X, key=jax.random.key(0), init=p0, max_iter=3, tol=0.0)
    np.testing.assert_allclose(res.trace, ref.trace, rtol=1e-10)


def test_user_model_over_a_stream_without_weights():
    """A duck-typed model without a weights argument runs over a stream (blocks that divide N need no mask)."""
    class Mean:
        def e_step(self, mu, x):
            return jnp.stack([jnp.sum(x), x.shape[0] * 1.0]), -0.5 * jnp.sum((x - mu) ** 2)

        def m_step(self, s, mu):
            return s[0] / s[1]

        def expected_log_joint(self, s, mu):
            return mu * s[0] - 0.5 * mu**2 * s[1]

    x = X[:, :1]
    for algorithm in (emjax.BatchEM(), emjax.IncrementalEM(n_blocks=3)):
        memory = emjax.fit(Mean(), x, key=jax.random.key(0), init=jnp.asarray(5.0), algorithm=algorithm, max_iter=3, tol=0.0)
        streamed = emjax.fit(Mean(), [x[:250], x[250:]], key=jax.random.key(0), init=jnp.asarray(5.0),
                             algorithm=algorithm, max_iter=3, tol=0.0)
        np.testing.assert_allclose(streamed.trace, memory.trace, rtol=1e-12)
        np.testing.assert_allclose(streamed.params, x.mean(), rtol=1e-12)
    with pytest.raises(TypeError, match="takes no weights argument"):
        emjax.fit(Mean(), x, key=jax.random.key(0), init=jnp.asarray(5.0), weights=np.ones(N))
    with pytest.raises(TypeError, match="do not divide N=600 .* choose n_blocks dividing N"):
        emjax.fit(Mean(), x, key=jax.random.key(0), init=jnp.asarray(5.0), algorithm=emjax.IncrementalEM(n_blocks=7))


def test_a_list_of_rows_is_in_memory_data_and_a_list_of_arrays_a_stream():
    rows = X[:50].tolist()
    memory = emjax.fit(MODEL, rows, key=jax.random.key(0), max_iter=3, tol=0.0)
    np.testing.assert_allclose(memory.trace, emjax.fit(MODEL, X[:50], key=jax.random.key(0), max_iter=3, tol=0.0).trace)
    assert isinstance(emjax.data.make_data(MODEL, [X[:20], X[20:50]]), emjax.data.StreamData)
