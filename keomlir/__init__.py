"""keomlir: a compiler for reductions of huge symbolic matrices (pykeops-compatible).

The pipeline, layer by layer (each imports only the layers before it; see
ARCHITECTURE.md): grammar/ir -> passes -> backends -> compile -> front ends
(numpy, torch, lazy, solve, cluster) -> explain, checks, cli.
"""

from ._version import __version__  # noqa: F401
from . import config  # noqa: F401  (pykeops.config's counterpart)
from .config import get_build_folder, numpy_found, set_build_folder, set_verbose, torch_found  # noqa: F401
from .checks import (check_health, clean_pykeops, show_cuda_status, test_numpy_bindings,  # noqa: F401
                     test_torch_bindings)
from .compat import install_as_pykeops  # noqa: F401
from .explain import explain  # noqa: F401

default_device_id = 0  # pykeops's name: the GPU a call uses when none is given (device_id=-1)
keops_get_build_folder = get_build_folder


def __getattr__(name):
    """`keomlir.verbose` (pykeops.verbose): read from the settings, changed with set_verbose()."""
    if name == "verbose":
        return config.verbose
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
