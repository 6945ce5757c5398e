"""keomlir on Dask: reductions of huge symbolic matrices over chunked `dask.array`s.

    from keomlir.dask import Genred
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)
    a = g(x, y, b)                # x, y, b dask arrays chunked over rows: a lazy (M, 1) dask array
    a.compute()                   # or client.compute(a) on a dask.distributed cluster

The call builds a task graph and runs nothing.  Each task of the graph's first
level reduces one block of output rows over one block of reduced rows with the
compiled kernel and keeps the raw partial states (not finalized); the states of a
block of rows are merged in a tree (`split_every` at a time) in order of the
reduced rows, and the root finalizes them.  So results are those of keomlir.numpy
(ties go to the lower index, float32 sums stay compensated, K-min lists keep
their order) and indices are global.  Tasks carry only the formula: every worker
compiles (or loads from its disk cache) its own kernels.  Memory per task is set
by the chunk sizes: a block of rows, a block of reduced rows, and `split_every`
states of one block of rows.
"""

from __future__ import annotations

from .genred import Genred
from .lazy import LazyTensor, Pm, Var, Vi, Vj
from .solve import KernelSolve

__all__ = ["Genred", "KernelSolve", "LazyTensor", "Var", "Vi", "Vj", "Pm"]
