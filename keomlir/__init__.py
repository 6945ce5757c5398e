"""keomlir: a compiler for reductions of huge symbolic matrices (pykeops-compatible).

The pipeline, layer by layer (each imports only the layers before it; see
ARCHITECTURE.md): grammar/ir -> passes -> backends -> compile -> front ends
(numpy, torch, lazy, solve, cluster) -> explain, checks, cli.
"""

from ._version import __version__  # noqa: F401
from . import config  # noqa: F401  (pykeops.config's counterpart)
from .config import get_build_folder, numpy_found, set_build_folder, torch_found  # noqa: F401  (as pykeops)
from .checks import clean_pykeops, test_numpy_bindings, test_torch_bindings  # noqa: F401
from .compat import install_as_pykeops  # noqa: F401
from .explain import explain  # noqa: F401
