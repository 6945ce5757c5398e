"""LazyTensor on dask arrays: keomlir's LazyTensor with keomlir.dask's Genred and
KernelSolve underneath, so `K_ij @ b`, `.sum(dim)`, `.argKmin(K, dim)` and
`.solve(b)` on dask arrays return dask arrays reduced on the cluster."""

from __future__ import annotations

from ..lazy import GenericLazyTensor, make_variable_helpers
from .arrays import DASK
from .genred import Genred
from .solve import KernelSolve

__all__ = ["LazyTensor", "Var", "Vi", "Vj", "Pm"]


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of dask (or NumPy) arrays; see keomlir.lazy.GenericLazyTensor."""

    _arrays = DASK
    genred_class = Genred
    kernel_solve_class = KernelSolve


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
