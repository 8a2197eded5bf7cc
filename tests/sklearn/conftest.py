"""The fixtures scikit-learn's own test files take from ``sklearn/conftest.py``, at
scikit-learn's defaults (float64 only; the seed 42), so its
``test_gaussian_mixture.py`` runs here unchanged apart from the import."""

import numpy as np
import pytest


@pytest.fixture(params=[np.float64])
def global_dtype(request):
    return request.param


@pytest.fixture
def global_random_seed():
    return 42
