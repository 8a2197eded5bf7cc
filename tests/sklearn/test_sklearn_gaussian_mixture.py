"""scikit-learn's own ``sklearn/mixture/tests/test_gaussian_mixture.py``, run against
``emjax.sklearn.GaussianMixture``: the installed file's source with its one import of
``GaussianMixture`` swapped, nothing else changed.

The tests that cannot pass are marked ``xfail(strict=True)`` below with the reason
(they also appear in the README): they reach into scikit-learn's private
implementation rather than its API. Strict, so a test that starts passing fails
here and the list is corrected.
"""

import inspect

import pytest
import sklearn.mixture.tests.test_gaussian_mixture as _original

_IMPORT = "from sklearn.mixture import GaussianMixture\n"
_source = inspect.getsource(_original)
assert _source.count(_IMPORT) == 1, "scikit-learn's test file changed: its GaussianMixture import is not where it was"
exec(compile(_source.replace(_IMPORT, "from emjax.sklearn import GaussianMixture\n"), _original.__file__, "exec"))

# -- the exceptions (also listed in the README) ------------------------------------------------

# It replaces scikit-learn's private ``_estimate_gaussian_parameters`` with a mock and counts
# the calls: emjax's M-step is its own compiled code and never calls scikit-learn's.
test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters = pytest.mark.xfail(
    strict=True, reason="mocks scikit-learn's private _estimate_gaussian_parameters, which emjax never calls"
)(test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters)  # noqa: F821

# The array API tests feed PyTorch, CuPy, dpnp and array_api_strict arrays through
# scikit-learn's array-API dispatch (sklearn.set_config(array_api_dispatch=True)), which
# scikit-learn skips unless those libraries and SCIPY_ARRAY_API=1 are present. emjax
# computes in JAX whatever the input's library; it takes NumPy (and JAX) arrays. Not collected.
del test_gaussian_mixture_array_api_compliance  # noqa: F821
del test_gaussian_mixture_raises_where_array_api_not_implemented  # noqa: F821
