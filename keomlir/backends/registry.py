"""The backends by name: the built-in ones registered (CPU, GPU, reference, host-sim), and the
lookups (`get`, `for_target`) through which the layers above reach every runtime."""

from .base import BACKENDS, Backend, canonical, for_target, get, names, register  # noqa: F401
from . import cpu, reference  # noqa: F401  (register the CPU and reference backends)
from .llvm.renderer import VARIANTS  # noqa: F401  (the CPU entry points a kernel is compiled as)
from .cuda import runner, simulator  # noqa: F401  (the GPU and its host simulator)
