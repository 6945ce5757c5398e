"""keomlir on Dask: reductions of huge symbolic matrices over chunked `dask.array`s.

    from keomlir.dask import Genred
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)
    a = g(x, y, b)                # x, y, b dask arrays chunked over rows: a lazy (M, 1) dask array
    a.compute()                   # or client.compute(a) on a dask.distributed cluster

The call builds a task graph and runs nothing.  Each partial task reduces a piece
of a block of output rows over one block of reduced rows with the compiled kernel,
continuing the raw states (not finalized) of the block of reduced rows before it:
a chain of consecutive blocks keeps one state (a K-min list is resumed, not
restarted).  Blocks of rows are cut into pieces and the reduced blocks into
`chains` so that every worker thread has a few chains to take (balance when data
locality draws tasks to one worker); the chains' states are merged in a tree
(`split_every` at a time) in order of the reduced rows, and the root finalizes
them.  So results are those of keomlir.numpy (ties go to the lower index, float32
sums stay compensated, K-min lists keep their order) and indices are global.
Tasks carry only the formula: every worker compiles (or loads from its disk
cache) its own kernels.  Memory per task is set by the chunk sizes: a block of
rows, a block of reduced rows, and `split_every` states of one block of rows.

On a cluster: `dask scheduler` on one machine, `dask worker tcp://HOST:8786` on
each machine (one worker with a thread per core: kernels release the GIL, or
processes of one thread each), the same keomlir everywhere (workers check that
they compile the client's program), then `Client("tcp://HOST:8786")`.  Read the
points on the workers (`dask.array.from_zarr`, `from_npy_stack`, `map_blocks`...):
NumPy arguments are put in the task graph and so travel through the scheduler.

LazyTensor (`from keomlir.dask import LazyTensor, Vi, Vj, Pm`) and KernelSolve take
dask arrays the same way; KernelSolve runs its conjugate gradient with the vectors
persisted on the workers.
"""

from __future__ import annotations

from .genred import Genred
from .lazy import LazyTensor, Pm, Var, Vi, Vj
from .solve import KernelSolve

__all__ = ["Genred", "KernelSolve", "LazyTensor", "Var", "Vi", "Vj", "Pm"]
