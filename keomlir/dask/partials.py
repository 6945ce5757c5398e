"""The worker side of keomlir.dask: partial reduction states of one (i-block,
j-block), their ordered merge, and the final step that turns states into outputs.

This is the only module of keomlir.dask that touches the engine: `Genred(...)
.reduction` (program, kernel_arguments, acc_dtype, sum_scheme, output_shapes,
and formula, formula2, names, passes to write the Spec), `to_formula`, and the
CPU kernel's split_j variant (from the disk cache like every kernel): `partial`
(states of a block), `resume` (a block's states continued over the next j
block), `merge` (states of consecutive j ranges, not finalized), `combine`
(merged and finalized) and `state_cells`.

States are NumPy uint64 arrays of shape (rows, cells): one row's raw 8-byte
cells, exactly as `partial` writes them.  Only a `Spec` (the formula as text and
its options) travels in tasks: each process builds and compiles its kernels once.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import threading

import numpy as np

from ..backends import cpu
from ..ir.node import to_formula
from ..numpy import Genred
from ..passes import DEFAULT_PIPELINE

_PTR = ctypes.c_void_p
_ADDRESS = 1 << 64


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
    """One reduction's compiled functions in this process, and the NumPy around them."""

    def __init__(self, spec: Spec):
        red = spec.reduction()
        acc = red.acc_dtype(spec.dtype)
        self.dtype = np.dtype(spec.dtype)
        self.arguments = red.kernel_arguments
        self.output_shapes = red.output_shapes
        self.split = cpu.compile_program(red.program, spec.dtype, acc, red.sum_scheme, variant="split_j")
        # a Sum of s * b run per block of b's columns (the schedule's columns strategy): a row's state
        # is the states of its blocks side by side, each block's kernel given b's columns row-major
        sched = self.split.schedule
        self.columns = (sched.column_arg, sched.column_block) if sched.column_block else ()
        self.n_blocks = -(-self.arguments[self.columns[0]][1] // self.columns[1]) if self.columns else 1
        self.cells = self.split.state_cells * self.n_blocks

    def partial(self, blocks, j0, j1, state=None, rows=None):
        """States of a block of rows over the reduced rows [j0, j1) (global numbers, so that
        stored indices are global), continuing `state` (those of the rows over the j just
        before j0; not modified) if given.  blocks[p] is argument p's block: its rows in the
        block for kernel i-variables, rows j0..j1 for kernel j-variables, the whole parameter;
        rows=(r0, r1): only rows r0..r1 of the i-variables' blocks."""
        width = j1 - j0
        n_i = None
        keep, pointers = [], []
        for p, (block, (_, dim, cat)) in enumerate(zip(blocks, self.arguments)):
            a = np.asarray(block)
            if cat == 0 and rows is not None:
                if not 0 <= rows[0] <= rows[1] <= a.shape[0]:
                    raise ValueError(f"keomlir.dask: rows {rows} of argument {p}'s block of {a.shape[0]} rows")
                a = a[rows[0]:rows[1]]
            if cat == 0 and n_i is None:
                n_i = a.shape[0]
            expected = {0: (n_i, dim), 1: (width, dim), 2: (dim,)}[cat]
            if (a.reshape(-1).shape if cat == 2 else a.shape) != expected:  # never read out of bounds
                raise ValueError(f"keomlir.dask: argument {p} has a block of shape {a.shape}, expected "
                                 f"{expected}: the dask array's chunks do not match its data")
            if self.columns and p == self.columns[0]:  # row-major, copied by blocks in `_run`
                a = np.asarray(a, dtype=self.dtype)
                pointers.append(None)
            elif cat == 1:  # transposed to (dim, width), as the kernel reads j data
                a = np.ascontiguousarray(a.T, dtype=self.dtype)
                # component c of j is read at base + c*width + j: the base shifted back by j0
                pointers.append((a.ctypes.data - j0 * self.dtype.itemsize) % _ADDRESS)
            else:
                a = np.ascontiguousarray(a, dtype=self.dtype)
                pointers.append(a.ctypes.data)
            keep.append(a)
        n_i = 1 if n_i is None else n_i
        if state is None:
            out = np.empty((n_i, self.cells), np.uint64)
        else:
            if state.shape != (n_i, self.cells):
                raise ValueError(f"keomlir.dask: a state of shape {state.shape} cannot continue over a block of "
                                 f"{n_i} rows ({self.cells} cells each)")
            out = np.array(state, dtype=np.uint64, order="C")  # a copy: a rerun task finds its input intact
        self._run(self.split.partial if state is None else self.split.resume, pointers, keep, out, j0, j1)
        return out

    def _run(self, fn, pointers, keep, out, j0, j1):
        """fn (`partial` or `resume`) over [j0, j1) into out, once per block of columns."""
        n_i, width = out.shape[0], j1 - j0
        if not self.columns:
            fn(0, n_i, j0, j1, width, (_PTR * max(len(pointers), 1))(*pointers), out.ctypes.data)
            return
        pos, block = self.columns
        b, cells = keep[pos], self.split.state_cells
        cols = np.zeros((width, block), self.dtype)
        part = np.empty((n_i, cells), np.uint64)
        for k in range(self.n_blocks):
            c0 = k * block
            cols[:, :min(block, b.shape[1] - c0)] = b[:, c0:c0 + block]
            # column c of j is read at base + j*block + c: the base shifted back by j0 rows
            pointers[pos] = (cols.ctypes.data - j0 * block * self.dtype.itemsize) % _ADDRESS
            part[:] = out[:, k * cells:(k + 1) * cells]
            fn(0, n_i, j0, j1, width, (_PTR * len(pointers))(*pointers), part.ctypes.data)
            out[:, k * cells:(k + 1) * cells] = part

    def merge(self, states):
        """The states of consecutive j ranges, in order of j, merged into one (not finalized)."""
        if len(states) == 1:
            return states[0]
        parts = [np.ascontiguousarray(s, dtype=np.uint64) for s in states]
        n = parts[0].shape[0]
        if any(s.shape != (n, self.cells) for s in parts):
            raise ValueError(f"keomlir.dask: states of shapes {[s.shape for s in parts]} cannot be merged")
        out = np.empty_like(parts[0])
        # (blocks of columns: each row's states of its blocks, merged as rows of their own)
        self.split.merge(0, n * self.n_blocks, len(parts), (_PTR * len(parts))(*[s.ctypes.data for s in parts]),
                         out.ctypes.data)
        return out

    def finish(self, pieces):
        """The outputs (a tuple of arrays) of consecutive pieces of rows, each given as
        its states of every j in order of j (merged here, then finalized)."""
        state = np.concatenate([self.merge(states) for states in pieces])
        n = state.shape[0]
        outs = [np.empty(shape, dtype=np.int64 if kind == "index" else self.dtype)
                for shape, kind in self.output_shapes(n)]
        if self.columns:  # the Sum of every block of columns, side by side, then the columns of b
            blocks = np.empty((n, self.n_blocks * self.columns[1]), self.dtype)
            self.split.combine(0, n * self.n_blocks, n * self.n_blocks, 1, state.ctypes.data,
                               (_PTR * 1)(blocks.ctypes.data))
            outs[0][:] = blocks[:, :outs[0].shape[1]]
            return tuple(outs)
        ptrs = (_PTR * len(outs))(*[o.ctypes.data for o in outs])
        self.split.combine(0, n, n, 1, state.ctypes.data, ptrs)
        return tuple(outs)


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
