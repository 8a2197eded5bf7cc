"""Shared helpers for the benchmark scripts: timing, plain-text tables, machine description.

Only the standard library and numpy here; jax and scikit-learn are imported lazily
so that a script can configure jax (e.g. float64) before anything imports it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Iterable, Sequence

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "CUDA_VISIBLE_DEVICES",
)


# -- timing ---------------------------------------------------------------------------


class Timing:
    """Wall-clock samples (seconds) of one measured quantity."""

    def __init__(self, samples: Sequence[float]):
        if not samples:
            raise ValueError("no samples")
        self.samples = list(samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def scaled(self, factor: float) -> "Timing":
        return Timing([s * factor for s in self.samples])

    def ms(self, digits: int = 1) -> str:
        """``median (min)`` in milliseconds."""
        return f"{self.median * 1e3:.{digits}f} ({self.min * 1e3:.{digits}f})"

    def s(self, digits: int = 2) -> str:
        """``median (min)`` in seconds."""
        return f"{self.median:.{digits}f} ({self.min:.{digits}f})"


def time_calls(fn: Callable[[], object], repeats: int, setup: Callable[[], object] | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times; ``setup()`` (untimed) runs before each call.

    ``fn`` must block until its work is done (for jax: ``jax.block_until_ready``).
    """
    samples = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(samples)


def timed_once(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# -- tables ---------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table with aligned columns (``align``: one ``l``/``r`` per column)."""
    rows = [[str(c) for c in row] for row in rows]
    headers = [str(h) for h in headers]
    ncol = len(headers)
    if align is None:
        align = "l" + "r" * (ncol - 1)
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != ncol:
            raise ValueError(f"row has {len(row)} cells, expected {ncol}: {row}")
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, align):
            out.append(c.ljust(w) if a == "l" else c.rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


# -- machine --------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.lower().startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The SIMD flags that matter for dense linear algebra."""
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("flags"):
                    flags = set(ln.split(":", 1)[1].split())
                    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                    return " ".join(w for w in wanted if w in flags) or "-"
    except OSError:
        pass
    return "?"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemTotal"):
                    return f"{int(ln.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "?"


def blas_threads() -> str:
    """Thread pools numpy/scipy/scikit-learn will actually use (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for info in threadpool_info():
        parts.append(f"{info.get('internal_api')}={info.get('num_threads')}")
    return ", ".join(sorted(set(parts))) or "-"


def machine_description() -> list[tuple[str, str]]:
    """``(label, value)`` pairs describing the machine and the software stack."""
    import numpy as np
    import jax

    try:
        import sklearn

        sk = sklearn.__version__
    except ImportError:
        sk = "not installed"
    try:
        import jaxlib

        jl = jaxlib.__version__
    except (ImportError, AttributeError):
        jl = "?"
    devices = jax.devices()
    env = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_ENV_VARS if v in os.environ) or "(none set)"
    out = [
        ("cpu", f"{cpu_model()} [{cpu_flags()}]"),
        ("cores", f"{usable_cores()} usable (os.cpu_count()={os.cpu_count()})"),
        ("memory", memory_gib()),
        ("os / python", f"{platform.system()} {platform.release()} / Python {platform.python_version()}"),
        ("jax / jaxlib", f"{jax.__version__} / {jl}"),
        ("jax backend", f"{jax.default_backend()}: {', '.join(str(d) for d in devices)}"),
    ]
    kinds = sorted({getattr(d, "device_kind", "?") for d in devices})
    if jax.default_backend() != "cpu":
        out.append(("device kind", ", ".join(kinds)))
    out += [
        ("jax x64", str(bool(jax.config.read("jax_enable_x64")))),
        ("numpy / scikit-learn", f"{np.__version__} / {sk}"),
        ("BLAS/OpenMP threads", blas_threads()),
        ("thread env", env),
    ]
    return out


def format_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"  {k.ljust(width)} : {v}" for k, v in pairs)
