import importlib
import importlib.util
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


# torch is optional where a module's NumPy tests must run without it (tests/platforms/aarch64.sh has no
# torch): such a module imports it with `optional` and marks its torch tests `needs_torch`
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")


def optional(module):
    """The module `module` where torch is installed, else None (its tests are skipped)."""
    return importlib.import_module(module) if HAS_TORCH else None


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
