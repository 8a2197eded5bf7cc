"""Every docstring example in the emjax package runs as a doctest.

The modules are found by walking the package's folders (``pkgutil.iter_modules``,
importing nothing), so a new module's examples are run without editing this file;
each module is one test, which imports it and runs its examples with
``ELLIPSIS | NORMALIZE_WHITESPACE`` and fails with the doctest report. Examples see
the module's globals plus ``emjax``, ``jax``, ``jnp`` and ``np`` (as a reader has
them after the usual imports). Every ``>>>`` line in a module's source (but a
comment alone) must belong to an example the finder reaches, so an example cannot
be skipped silently (one outside a docstring, or on an object the finder does not
visit, such as a function wrapped by ``jax.jit``).

The conftest enables float64; outputs are written to hold in float32 too (rounded
prints, shapes), but for the printed tables of ``select`` and ``cross_validate``.
Compile time dominates: the examples share small data (``old_faithful``) and model
shapes, so a fit compiled for one docstring is reused by the others in this process.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
#: Modules not imported: ``python -m emjax`` (it would run the command line).
SKIP = {"emjax.__main__"}


def _module_names(path, prefix):
    """The dotted names of every module and package under ``path``, without importing."""
    names = []
    for info in pkgutil.iter_modules(path):
        name = prefix + info.name
        if name in SKIP:
            continue
        names.append(name)
        if info.ispkg:
            names += _module_names([os.path.join(p, info.name) for p in path], name + ".")
    return names


MODULES = [emjax.__name__] + sorted(_module_names(emjax.__path__, emjax.__name__ + "."))


def _examples_in_source(module) -> int:
    """``>>>`` prompts in the module's source file (but those of a comment alone,
    which doctest skips)."""
    try:
        source = open(module.__file__, encoding="utf-8").read()
    except (OSError, TypeError):
        return 0
    prompts = [line.lstrip()[3:].strip() for line in source.splitlines() if line.lstrip().startswith(">>>")]
    return sum(bool(p) and not p.startswith("#") for p in prompts)


def test_discovery():
    """The walk finds the package's layers (and so the modules added to them later)."""
    for name in ("emjax._runner", "emjax.models._mixture", "emjax.families._gaussian", "emjax.algorithms._batch"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"emjax": emjax, "jax": jax, "jnp": jnp, "np": np}
    globs.update(vars(module))
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name, globs=globs)
    found = sum(len(t.examples) for t in tests)
    expected = _examples_in_source(module)
    assert found == expected, (
        f"{name}: {expected} '>>>' lines in the source but the doctest finder reaches {found} examples; "
        "put examples in the docstrings of the module, its classes and their methods."
    )
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    reports = []
    for test in sorted(tests, key=lambda t: t.lineno or 0):
        out = []
        result = runner.run(test, out=out.append, clear_globs=True)
        if result.failed:
            reports.append("".join(out))
    if reports:
        pytest.fail("\n".join(reports), pytrace=False)
