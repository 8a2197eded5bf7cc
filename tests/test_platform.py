"""The JAX the suite runs on: versions that emjax cannot be used with safely."""

import subprocess
import sys
import textwrap

# Two batched triangular solves large enough (batch x D^3 >= 200000) for jaxlib
# 0.10.0-0.11.1 to split each over the CPU's intra-op thread pool, which then blocks
# its workers waiting for the pieces: on a 2-core machine the program never returns
# (emjax's full-covariance fit with 8 restarts hung so). pyproject.toml excludes
# those versions; this catches an environment that has one anyway.
_DEADLOCK = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular
    L = jnp.broadcast_to(jnp.eye(16), (256, 16, 16))
    y = jnp.ones((256, 16, 512))
    f = jax.jit(lambda L, y: [solve_triangular(L * (k + 1), y, lower=True) for k in range(8)])
    jax.block_until_ready(f(L, y))
    """
)


def test_batched_lapack_calls_do_not_deadlock():
    try:
        subprocess.run([sys.executable, "-c", _DEADLOCK], timeout=120, check=True, capture_output=True)
    except subprocess.TimeoutExpired:
        import jax

        raise AssertionError(
            f"jax {jax.__version__} deadlocks on concurrent batched LAPACK calls on this CPU; "
            "emjax needs jax < 0.10 or >= 0.11.2 (see pyproject.toml)."
        ) from None
