"""LazyTensor on dask arrays: keomlir's LazyTensor with keomlir.dask's Genred and
KernelSolve underneath, so `K_ij @ b`, `.sum(dim)`, `.argKmin(K, dim)` and
`.solve(b)` on dask arrays return dask arrays reduced on the cluster."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..lazy import GenericLazyTensor, NumpyTools, make_variable_helpers
from .genred import Genred
from .solve import KernelSolve

__all__ = ["LazyTensor", "Var", "Vi", "Vj", "Pm"]


class DaskTools(NumpyTools):
    """The array hooks of the NumPy LazyTensor, with dask arrays accepted beside NumPy
    ones and the dask front ends called.  Complex data is refused (as a dtype)."""

    name = "dask"

    def is_array(self, x):
        return isinstance(x, (da.Array, np.ndarray))

    def is_complex(self, x):
        return False

    def genred(self, *args, **kwargs):
        return Genred(*args, **kwargs)

    def kernel_solve(self, *args, **kwargs):
        return KernelSolve(*args, **kwargs)


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of dask (or NumPy) arrays; see keomlir.lazy.GenericLazyTensor."""

    _tools = DaskTools()


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
