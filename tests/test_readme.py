"""Execute every Python block of the README, in order, in one namespace (small data).

The README's blocks are fragments of one session: what they take for granted
(``key``, ``x``, a ``model``, files named ``points.npy``) is set up here, small
(``x`` is reset to 10,000 rows before every block that does not load its own),
and the multi-machine block runs as one process of one (``jax.distributed``
stubbed: one process holds all the rows). The user-model block is also checked
against its closed form in ``tests/models/test_user_model.py``.
"""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import emjax
import emjax._select

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, _ = emjax.datasets.gaussian_mixture_sample(0, n=10_000, d=2, k=3, separation=4.0)
    np.save("points.npy", x.astype(np.float32))
    np.save("counts.npy", np.ones(len(x), np.float32))
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    # The blocks' fits run at most 5 iterations here: this checks that the code runs
    # as written (names, arguments, data sources), not where the fits converge.
    fit = emjax.fit
    capped = lambda *a, **kw: fit(*a, **{**kw, "max_iter": min(kw.get("max_iter", 100), 5)})  # noqa: E731
    monkeypatch.setattr(emjax, "fit", capped)
    monkeypatch.setattr(emjax._select, "fit", capped)  # emjax.select's fits too
    key = jax.random.key(0)
    namespace = {
        "__name__": "__main__", "jax": jax, "jnp": jnp, "np": np, "optax": optax, "emjax": emjax,
        "key": key, "x": x, "x_host": x, "model": emjax.Mixture(emjax.Gaussian("full"), 3),
        # the multi-machine block: this process is rank 0 of 1 and loads every row
        "rank": 0, "load_my_rows": lambda index, count: x, "init_params": None,
        "read_csv_chunks": lambda path: iter(np.array_split(x, 4)),
    }
    found = blocks()
    assert len(found) >= 12, "README lost python blocks"
    for i, block in enumerate(found):
        if not re.search(r"^x = ", block, re.M):
            namespace["x"] = x  # the fragments' "your data": 10,000 rows, whatever an earlier block loaded
        if "init=init_params" in block:
            namespace["init_params"] = emjax.Mixture(emjax.Gaussian("full"), 8).init(key, jnp.asarray(x), "kmeans")
        exec(compile(block, f"README.md[python block {i}]", "exec"), namespace)
    assert calls and calls[0]["num_processes"] == 4
    assert np.all(np.isfinite(np.asarray(namespace["result"].objective)))
