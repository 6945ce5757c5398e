"""pykeops's `pykeops.common` helpers that programs import (`install_as_pykeops()` maps
`pykeops.common` here): `utils` (messages, axis/category conversions, batch
broadcasting, `get_tools`), `gpu_utils.get_gpu_number` and `lazy_tensor`, the
LazyTensor base classes for isinstance checks."""

from . import gpu_utils, lazy_tensor, utils  # noqa: F401
