"""The array adapter (keomlir.arrays) of keomlir.dask's LazyTensor and KernelSolve."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..arrays import NumpyArrays

__all__ = ["DASK"]


class DaskArrays(NumpyArrays):
    """The NumPy array adapter with dask arrays accepted beside NumPy ones (what
    LazyTensor asks of its arrays, dtype and shape, is common to both).  Complex data
    is refused (as a dtype LazyTensor does not take)."""

    name = "dask"
    array_word = "a dask array or a NumPy array"

    def is_array(self, x):
        return isinstance(x, (da.Array, np.ndarray))

    def is_complex(self, x):
        return False


DASK = DaskArrays()
