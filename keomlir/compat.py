"""`install_as_pykeops()`: unmodified pykeops client code (GeomLoss, GPyTorch,
Falkon...) runs on keomlir.

It only maps names: after the call, `import pykeops`, `pykeops.numpy`,
`pykeops.torch`, their submodules (`cluster`, `utils`, and `operations`, `generic`,
`lazytensor`, whose names the front end module itself exports), `pykeops.common`,
`pykeops.config`, `keopscore` and `keopscore.config` resolve, for the rest of the
process, to keomlir's own modules (`keomlir`, `keomlir.numpy`, `keomlir.torch`, ...,
`keomlir.common`, `keomlir.config`).  Nothing is imitated: every name they expose is
keomlir's code.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

from . import common, config
from . import numpy as numpy_front_end
from .common import gpu_utils, lazy_tensor, utils
from .numpy import cluster as numpy_cluster
from .numpy import utils as numpy_utils

# pykeops's submodules of a front end whose public names are the front end's own
_FRONT_END_PARTS = ("operations", "generic", "generic.generic_red", "generic.generic_ops", "lazytensor",
                    "lazytensor.LazyTensor")


def _keomlir():
    return sys.modules[__name__.rsplit(".", 1)[0]]


def _front_end(name, module, cluster, helpers):
    found = {f"pykeops.{name}": module, f"pykeops.{name}.cluster": cluster, f"pykeops.{name}.utils": helpers}
    found.update({f"pykeops.{name}.{part}": module for part in _FRONT_END_PARTS})
    return found


def install_as_pykeops():
    """Make the pykeops and keopscore module names resolve to keomlir; returns the
    mapping {name: module} installed.  Call it before the client library is imported
    (libraries look pykeops up when they are imported).  Torch's names are mapped when
    torch is installed."""
    package = _keomlir()
    modules = {"pykeops": package, "pykeops.config": config, "keopscore": package, "keopscore.config": config,
               "pykeops.common": common, "pykeops.common.utils": utils, "pykeops.common.gpu_utils": gpu_utils,
               "pykeops.common.lazy_tensor": lazy_tensor}
    modules.update(_front_end("numpy", numpy_front_end, numpy_cluster, numpy_utils))
    if importlib.util.find_spec("torch") is not None:
        from . import torch as torch_front_end  # optional: only with torch installed
        from .torch import cluster as torch_cluster
        from .torch import utils as torch_utils

        modules.update(_front_end("torch", torch_front_end, torch_cluster, torch_utils))
    replaced = sorted(name for name, module in modules.items()
                      if name in sys.modules and sys.modules[name] is not module)
    if replaced:
        warnings.warn(f"install_as_pykeops: {', '.join(replaced)} had already been imported; code that kept "
                      "references to them still uses them", RuntimeWarning, stacklevel=2)
    sys.modules.update(modules)
    return modules
