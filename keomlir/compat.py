"""`install_as_pykeops()`: unmodified pykeops client code (GeomLoss, GPyTorch,
Falkon...) runs on keomlir.

It only maps names: after the call, `import pykeops`, `pykeops.numpy`,
`pykeops.torch`, their `cluster` submodules, `pykeops.config`, `keopscore` and
`keopscore.config` resolve, for the rest of the process, to keomlir's own
modules (`keomlir`, `keomlir.numpy`, `keomlir.torch`, ..., `keomlir.config`).
Nothing is imitated: every name they expose is keomlir's code.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

from . import config
from . import numpy as numpy_front_end
from .numpy import cluster as numpy_cluster


def _keomlir():
    return sys.modules[__name__.rsplit(".", 1)[0]]


def install_as_pykeops():
    """Make the pykeops and keopscore module names resolve to keomlir; returns the
    mapping {name: module} installed.  Call it before the client library is imported
    (libraries look pykeops up when they are imported).  Torch's names are mapped when
    torch is installed."""
    package = _keomlir()
    modules = {"pykeops": package, "pykeops.numpy": numpy_front_end, "pykeops.numpy.cluster": numpy_cluster,
               "pykeops.config": config, "keopscore": package, "keopscore.config": config}
    if importlib.util.find_spec("torch") is not None:
        from . import torch as torch_front_end  # optional: only with torch installed
        from .torch import cluster as torch_cluster

        modules.update({"pykeops.torch": torch_front_end, "pykeops.torch.cluster": torch_cluster})
    replaced = sorted(name for name, module in modules.items()
                      if name in sys.modules and sys.modules[name] is not module)
    if replaced:
        warnings.warn(f"install_as_pykeops: {', '.join(replaced)} had already been imported; code that kept "
                      "references to them still uses them", RuntimeWarning, stacklevel=2)
    sys.modules.update(modules)
    return modules
