import os
import tempfile

import numpy as np
import pytest

# every test run gets its own kernel cache directory, so tests never read a
# user's cache and cache tests start from a known state
os.environ.setdefault("KEOMLIR_CACHE_DIR", tempfile.mkdtemp(prefix="keomlir-test-cache-"))

# `python -m pytest` runs the quick suite; .ci/run then runs the tests marked slow and the
# hypothesis tests again with KEOMLIR_TEST_THOROUGH=1 (see pyproject.toml and .ci/run)
THOROUGH = os.environ.get("KEOMLIR_TEST_THOROUGH") == "1"


def examples(quick, thorough):
    """A hypothesis test's max_examples: `quick` by default, `thorough` in CI's long run."""
    return thorough if THOROUGH else quick


def assert_close(actual, expected, dtype, rtol=None, atol=None):
    """Compare with tolerances fit for the dtype (NaN equal to NaN, inf to inf)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if rtol is None:
        rtol = 2e-4 if str(dtype) == "float32" else 1e-10
    if atol is None:
        atol = 2e-4 if str(dtype) == "float32" else 1e-10
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
