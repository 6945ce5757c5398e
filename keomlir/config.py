"""Run-time settings, readable and writable as pykeops's `pykeops.config` and
`keopscore.config` are (`keomlir.install_as_pykeops()` maps both names here).

- `use_cuda`: may backend='auto' send NumPy (or CPU tensor) problems to a GPU?
  Defaults to whether the GPU backend is usable here; setting it False keeps
  'auto' on the CPU (CUDA tensors still run where they live).
- `gpu_available`: whether the GPU backend is usable (read-only by meaning).
- `numpy_found`, `torch_found`: which front ends can be imported.
- `get_build_folder()` / `set_build_folder(path)`: the kernel cache directory.
- `config`: this module, for code written against `keopscore.config.config.use_cuda`.
- `verbose` / `set_verbose(val)`: whether pykeops-style messages (`keomlir.common.utils`)
  are printed; False when the environment sets PYKEOPS_VERBOSE=0, as in pykeops.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from .backends import cache, registry

numpy_found = importlib.util.find_spec("numpy") is not None
torch_found = importlib.util.find_spec("torch") is not None
config = sys.modules[__name__]
verbose = os.environ.get("PYKEOPS_VERBOSE") != "0"


def set_verbose(val):
    """Print pykeops-style messages (True) or not (False)."""
    global verbose
    verbose = bool(val)


def __getattr__(name):
    """Settings read from the driver each time until set (`use_cuda = False` is stored as a
    module attribute and wins; deleting it goes back to the driver's answer)."""
    if name in ("use_cuda", "gpu_available"):
        return registry.get("GPU").available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_build_folder():
    """Where compiled kernels are cached ($KEOMLIR_CACHE_DIR, else ~/.cache/keomlir)."""
    return str(cache.cache_dir())


def set_build_folder(path=None):
    """Cache kernels under `path` from now on (None: back to the default)."""
    if path is None:
        os.environ.pop("KEOMLIR_CACHE_DIR", None)
    else:
        os.environ["KEOMLIR_CACHE_DIR"] = os.fspath(path)
