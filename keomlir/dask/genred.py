"""keomlir.dask.Genred: the task graph of one reduction over chunked dask arrays
(see the package docstring)."""

from __future__ import annotations

import operator
import os

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..backends.launch import numpy_dtype
from ..numpy import Genred as _NumpyGenred
from .partials import finish_task, merge_task, partial_task, spec_of


class Genred(_NumpyGenred):
    """keomlir.numpy.Genred (same constructor, `from_ir`, checks and messages) whose call
    takes dask arrays (or NumPy arrays) and returns lazy dask arrays chunked like the
    rows of the output index (a tuple for Min_ArgMin, Max_ArgMax and KMin_ArgKMin)."""

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None, split_every=8, chains=None):
        if backend not in ("auto", "CPU"):
            raise ValueError(f"backend: keomlir.dask runs the CPU kernels on its workers, use 'auto' or 'CPU'; "
                             f"got {backend!r}")
        if ranges is not None:
            raise ValueError("ranges: block-sparse reductions are not supported by keomlir.dask")
        if out is not None:
            raise ValueError("out: keomlir.dask returns lazy dask arrays; out= is not supported")
        if isinstance(split_every, bool) or not isinstance(split_every, (int, np.integer)) or split_every < 2:
            raise ValueError(f"split_every must be an integer >= 2 (states merged per task), got {split_every!r}")
        if chains is not None and (isinstance(chains, bool) or not isinstance(chains, (int, np.integer))
                                   or chains < 1):
            raise ValueError(f"chains must be None or an integer >= 1 (chains of j blocks per row block), "
                             f"got {chains!r}")
        red = self.reduction
        for p, a in enumerate(args):
            if not isinstance(a, (da.Array, np.ndarray)):
                raise TypeError(f"{red.arg_label(p)}: expected a dask array or a NumPy array, got {type(a).__name__}")
            if any(np.isnan(s) for s in a.shape):
                raise ValueError(f"{red.arg_label(p)}: a dask array of unknown chunk sizes (shape {a.shape}); "
                                 "call .compute_chunk_sizes() on it first")
        # the same checks and messages as keomlir.numpy, on shapes and dtypes only: nothing runs
        dtype, n_i, n_j = red.check_arrays(args)
        spec = spec_of(red, dtype)
        return _graph(spec, red, args, n_i, n_j, int(split_every), chains)


def _row_chunks(args, cats, cat, n):
    """The row chunks of the kernel's cat-`cat` variables: those of the first dask array
    among them, dask's automatic chunks if they are all NumPy arrays, one row if none."""
    members = [a for a, c in zip(args, cats) if c == cat]
    if not members:
        return (n,)
    for a in members:
        if isinstance(a, da.Array):
            return a.chunks[0]
    first = members[0]
    return da.core.normalize_chunks(("auto", -1), first.shape, dtype=first.dtype)[0]


def _parallel_threads():
    """The threads that will run the tasks: the current dask.distributed client's
    workers', else this machine's cores."""
    try:
        from distributed import get_client
        return max(1, sum(get_client().nthreads().values()))
    except (ImportError, ValueError):  # no distributed, or no client: dask's local schedulers
        return os.cpu_count() or 1


MIN_PIECE_ROWS = 4096  # rows below which a block of rows is not cut into pieces


def _chain_count(n_row_blocks, n_j_blocks, chains, threads):
    """Chains of consecutive j blocks per row block: each chain's tasks continue one
    state (a K-min list resumed, not restarted in every block), chains merge in a tree.
    By default as few as give every one of `threads` two chains to take."""
    if chains is None:
        chains = -(-2 * threads // n_row_blocks)
    return max(1, min(int(chains), n_j_blocks))


def _pieces(rows, n_row_blocks, n_chains, threads):
    """Bounds of the pieces a block of `rows` rows is cut into, so that every one of
    `threads` has about four chains to take: two would leave one idle half the time
    whenever data locality draws three of them to one worker."""
    want = -(-4 * threads // (n_row_blocks * n_chains))
    n = max(1, min(want, rows // MIN_PIECE_ROWS))
    return [rows * p // n for p in range(n + 1)]


def _graph(spec, red, args, n_i, n_j, split_every, chains):
    """The task graph of one call and its output dask arrays: each row block cut into
    `_pieces`, each piece's j blocks into `_chain_count` chains of consecutive blocks
    (a task per block, continuing the previous block's states), the chains' states
    merged in a tree of `split_every` in order of j, the pieces' roots finalized
    together as the row block's output."""
    cats = [cat for _, _, cat in red.kernel_arguments]
    chunks = {0: _row_chunks(args, cats, 0, n_i), 1: _row_chunks(args, cats, 1, n_j)}
    inputs, refs = [], []  # dask collections the graph depends on; each argument as its tasks see it
    for a, cat in zip(args, cats):
        if cat == 2 and isinstance(a, np.ndarray):
            refs.append(np.asarray(a))  # a parameter is a few numbers: in the task itself
            continue
        if cat == 2:
            d = a.rechunk(-1)
        elif isinstance(a, da.Array):
            d = a.rechunk({0: chunks[cat], 1: -1})
        else:
            d = da.from_array(a, chunks=(chunks[cat], -1))
        inputs.append(d)
        refs.append(d)
    bounds = {c: np.concatenate([[0], np.cumsum(chunks[c])]).astype(int).tolist() for c in (0, 1)}
    n_b = len(chunks[1])
    threads = _parallel_threads()  # asked once: with a client, a round trip to the scheduler
    n_chains = _chain_count(len(chunks[0]), n_b, chains, threads)
    name = f"keomlir-{spec.reduction_op.lower()}-{tokenize(spec, split_every, n_chains, threads, refs)}"

    def block(ref, cat, a, b):
        if not isinstance(ref, da.Array):
            return ref
        return (ref.name, (a, b, 0)[cat]) + (0,) * (ref.ndim - 1)

    dsk = {}
    for a in range(len(chunks[0])):
        cuts = _pieces(chunks[0][a], len(chunks[0]), n_chains, threads)
        roots = []
        for piece, rows in enumerate(zip(cuts[:-1], cuts[1:])):
            level = []
            for first, last in zip([n_b * c // n_chains for c in range(n_chains)],
                                   [n_b * (c + 1) // n_chains for c in range(n_chains)]):
                state = None
                for b in range(first, last):
                    key = (name + "-partial", a, piece, b)
                    dsk[key] = (partial_task, spec, bounds[1][b], bounds[1][b + 1],
                                [block(r, c, a, b) for r, c in zip(refs, cats)], state, rows)
                    state = key
                level.append(state)
            depth = 0
            while len(level) > split_every:  # a tree over j: groups of consecutive states, in order
                depth += 1
                groups = [level[g:g + split_every] for g in range(0, len(level), split_every)]
                level = []
                for g, group in enumerate(groups):
                    if len(group) == 1:
                        level.append(group[0])
                        continue
                    key = (name + "-merge", depth, a, piece, g)
                    dsk[key] = (merge_task, spec, group)
                    level.append(key)
            roots.append(level)
        dsk[(name, a)] = (finish_task, spec, roots)

    outputs = []
    for k, (shape, kind) in enumerate(red.output_shapes(n_i)):
        out_name = f"{name}-{k}"
        layer = {(out_name, a) + (0,) * (len(shape) - 1): (operator.getitem, (name, a), k)
                 for a in range(len(chunks[0]))}
        graph = HighLevelGraph.from_collections(out_name, {**dsk, **layer}, dependencies=inputs)
        out_dtype = np.int64 if kind == "index" else numpy_dtype(spec.dtype)
        outputs.append(da.Array(graph, out_name, (chunks[0],) + tuple((s,) for s in shape[1:]),
                                meta=np.empty((0,) * len(shape), out_dtype)))
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
