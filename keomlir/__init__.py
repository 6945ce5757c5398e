"""keomlir: a compiler for reductions of huge symbolic matrices (pykeops-compatible)."""

from ._version import __version__  # noqa: F401

from .explain import explain  # noqa: E402,F401  (cheap: the compiler is imported on first call)
from .checks import clean_pykeops, test_numpy_bindings, test_torch_bindings  # noqa: E402,F401
