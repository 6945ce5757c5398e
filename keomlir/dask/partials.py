"""The worker side of keomlir.dask: partial reduction states of one (i-block,
j-block), their ordered merge, and the final step that turns states into outputs.

This is the only module of keomlir.dask that touches the engine: `Genred(...)
.reduction` (program, kernel_arguments, acc_dtype, sum_scheme, output_shapes,
and formula, formula2, names, passes to write the Spec), `to_formula`, and the
CPU backend's `partial_states` (its kernels' split_j variant, from the disk cache
like every kernel, called as the CPU runtime calls every kernel): states of a
block, continued over the next j block, merged in order of j, finalized.

States are NumPy uint64 arrays of shape (rows, cells): one row's raw 8-byte
cells, exactly as the kernel writes them.  Only a `Spec` (the formula as text and
its options) travels in tasks: each process builds and compiles its kernels once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading

import numpy as np

from ..backends import registry
from ..backends.launch import numpy_dtype
from ..ir.node import to_formula
from ..numpy import Genred
from ..passes import DEFAULT_PIPELINE



@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything a worker needs to rebuild a reduction's kernels: its text, its options,
    and a digest of the optimized program, so a worker with another keomlir says so."""

    formula: str
    formula2: str | None
    aliases: tuple
    reduction_op: str
    axis: int
    opt_arg: int | None
    dtype_acc: str
    sum_scheme: str
    dtype: str
    digest: str

    def reduction(self):
        red = Genred(self.formula, list(self.aliases), self.reduction_op, self.axis, opt_arg=self.opt_arg,
                     formula2=self.formula2, dtype_acc=self.dtype_acc, sum_scheme=self.sum_scheme).reduction
        if _digest(red) != self.digest:
            raise RuntimeError("keomlir.dask: this worker compiles the reduction to another program than the "
                               "client did: workers and client must run the same keomlir")
        return red


def _digest(red):
    return hashlib.sha256(red.program.text().encode()).hexdigest()[:16]


def spec_of(red, dtype):
    """The Spec of a reduction (made from formula text or from IR: it travels as text,
    variables written Var(pos,dim,cat)) for arguments of `dtype`."""
    if tuple(red.passes) != tuple(DEFAULT_PIPELINE):
        raise ValueError("passes: keomlir.dask workers compile with the default pass pipeline only")
    aliases = tuple(f"{name} = Var({','.join(map(str, var.attrs))})" for name, var in red.names.items())
    return Spec(to_formula(red.formula), None if red.formula2 is None else to_formula(red.formula2), aliases,
                red.reduction_op, red.axis, red.opt_arg, red.dtype_acc, red.sum_scheme, dtype, _digest(red))


class Engine:
    """One reduction's partial states in this process (the CPU backend's `partial_states`),
    and the checks of the blocks dask gives them."""

    def __init__(self, spec: Spec):
        red = spec.reduction()
        self.arguments = red.kernel_arguments
        self.output_shapes = red.output_shapes
        self.dtype = numpy_dtype(spec.dtype)
        self.states = registry.get("CPU").partial_states(red.program, spec.dtype, red.acc_dtype(spec.dtype),
                                                         red.sum_scheme)
        self.cells = self.states.cells

    def partial(self, blocks, j0, j1, state=None, rows=None):
        """States of a block of rows over the reduced rows [j0, j1) (global numbers, so that
        stored indices are global), continuing `state` (those of the rows over the j just
        before j0; not modified) if given.  blocks[p] is argument p's block: its rows in the
        block for kernel i-variables, rows j0..j1 for kernel j-variables, the whole parameter;
        rows=(r0, r1): only rows r0..r1 of the i-variables' blocks."""
        n_i = None
        arrays = []
        for p, (block, (_, dim, cat)) in enumerate(zip(blocks, self.arguments)):
            a = np.asarray(block)
            if cat == 0 and rows is not None:
                if not 0 <= rows[0] <= rows[1] <= a.shape[0]:
                    raise ValueError(f"keomlir.dask: rows {rows} of argument {p}'s block of {a.shape[0]} rows")
                a = a[rows[0]:rows[1]]
            if cat == 0 and n_i is None:
                n_i = a.shape[0]
            expected = {0: (n_i, dim), 1: (j1 - j0, dim), 2: (dim,)}[cat]
            if (a.reshape(-1).shape if cat == 2 else a.shape) != expected:  # never read out of bounds
                raise ValueError(f"keomlir.dask: argument {p} has a block of shape {a.shape}, expected "
                                 f"{expected}: the dask array's chunks do not match its data")
            arrays.append(a)
        n_i = 1 if n_i is None else n_i
        if state is not None and state.shape != (n_i, self.cells):
            raise ValueError(f"keomlir.dask: a state of shape {state.shape} cannot continue over a block of "
                             f"{n_i} rows ({self.cells} cells each)")
        return self.states.partial(arrays, n_i, j0, j1, state)

    def merge(self, states):
        """The states of consecutive j ranges, in order of j, merged into one (not finalized)."""
        if len(states) == 1:
            return states[0]
        n = states[0].shape[0]
        if any(s.shape != (n, self.cells) for s in states):
            raise ValueError(f"keomlir.dask: states of shapes {[s.shape for s in states]} cannot be merged")
        return self.states.merge(states)

    def finish(self, pieces):
        """The outputs (a tuple of arrays) of consecutive pieces of rows, each given as
        its states of every j in order of j (merged here, then finalized)."""
        state = np.concatenate([self.merge(states) for states in pieces])
        outs = [np.empty(shape, dtype=np.int64 if kind == "index" else self.dtype)
                for shape, kind in self.output_shapes(state.shape[0])]
        return tuple(self.states.finalize(state, outs))


_engines: dict[Spec, Engine] = {}
_lock = threading.Lock()


def _new_lock():
    """In a forked child: a lock another thread of the parent held would never be released."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


def engine(spec: Spec) -> Engine:
    """This process's Engine for `spec`, built on first use."""
    found = _engines.get(spec)
    if found is None:
        with _lock:
            found = _engines.get(spec)
            if found is None:
                found = _engines[spec] = Engine(spec)
    return found


# ---- task functions (what the graph names; picklable by reference) ------------------
def partial_task(spec, j0, j1, blocks, state=None, rows=None):
    return engine(spec).partial(blocks, j0, j1, state, rows)


def merge_task(spec, states):
    return engine(spec).merge(states)


def finish_task(spec, pieces):
    return engine(spec).finish(pieces)
