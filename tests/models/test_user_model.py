"""A user-defined latent-variable model through the EMModel protocol: the README's example, run."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import emjax

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example():
    text = README.read_text()
    block = re.search(r"<!-- user-model-example.*?-->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its user-model example"
    namespace = {}
    exec(compile(block.group(1), "README.md[user-model-example]", "exec"), namespace)
    return namespace


def test_readme_linkage_example_reaches_the_closed_form_mle():
    ns = readme_example()
    res = ns["result"]
    mle = (15 + np.sqrt(15**2 + 4 * 197 * 68)) / (2 * 197)
    assert np.allclose(np.asarray(res.restart_params), mle, atol=1e-9)
    assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)
    trace = np.asarray(res.trace)
    assert np.all(np.diff(trace, axis=1) >= -1e-12 * np.abs(trace[:, 1:]))


def test_linkage_iterates_match_dempster_laird_rubin():
    ns = readme_example()
    model = ns["Linkage"]()
    x = ns["x"]
    res = emjax.fit(model, x, key=jax.random.key(0), init=jnp.asarray(0.5), max_iter=8, tol=0.0)
    t = [0.5]
    for _ in range(8):  # the EM map by hand: t' = (x2 + y4) / (x2 + y2 + y3 + y4)
        x2 = 125 * (t[-1] / 4) / (0.5 + t[-1] / 4)
        t.append((x2 + 34) / (x2 + 18 + 20 + 34))
    assert abs(t[1] - 59 / 97) < 1e-15  # DLR (1977), Table 1, first iterate 0.608247423
    np.testing.assert_allclose(float(res.params), t[-1], rtol=1e-12)
    # The trace is the observed-data log-likelihood at each iterate.
    expected = [125 * np.log(0.5 + s / 4) + 38 * np.log((1 - s) / 4) + 34 * np.log(s / 4) for s in t]
    np.testing.assert_allclose(np.asarray(res.trace[0]), expected, rtol=1e-12)
