"""The worker side of keomlir.dask: partial reduction states of one (i-block,
j-block), their ordered merge, and the final step that turns states into outputs.

This is the only module of keomlir.dask that touches the engine: `Genred(...)
.reduction` (program, kernel_arguments, acc_dtype, sum_scheme, output_shapes,
and formula, formula2, names, passes to write the Spec), `to_formula`, the CPU
kernel's split_j variant (`partial`, `combine`, `state_cells`) and, for the merge
of two states without finalizing them (which the engine does not export yet), a
small function rendered with the CPU renderer's own state helpers and reduction
`merge` (see `_Merger`).

States are NumPy uint64 arrays of shape (rows, cells): one row's raw 8-byte
cells, exactly as `partial` writes them.  Only a `Spec` (the formula as text and
its options) travels in tasks: each process builds and compiles its kernels once.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import threading

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ..backends import cpu
from ..backends.llvm import renderer
from ..ir.node import to_formula
from ..numpy import Genred
from ..passes import DEFAULT_PIPELINE

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_MERGE_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _PTR, _PTR)
MERGE_NAME = "keomlir_dask_merge"
CELLS_NAME = "keomlir_dask_cells"
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


class _Merger(renderer._Kernel):
    """The renderer with one more entry point:

        void merge(i64 i0, i64 i1, i64 n_parts, i8** parts, i8* out)

    folds the states of rows [i0, i1) of parts[0], parts[1], ... (in that order:
    parts in order of j) with the reduction's `merge` and writes the merged,
    unfinalized states to out (which may be parts[0]).  `combine` cannot serve:
    it finalizes, and a finalized Kahan sum or LogSumExp cannot be merged again."""

    def build_merge(self):
        i8p = ir.IntType(8).as_pointer()
        i0, i1, n_parts, parts, out = self._function(
            MERGE_NAME, [renderer.I64, renderer.I64, renderer.I64, i8p.as_pointer(), i8p])
        b = self.b
        n_cells = self._n_cells(self._fresh_state())
        with renderer.counted_loop(b, i0, i1, "i") as i:
            state = self._load_state(b.load(parts), i)
            with renderer.counted_loop(b, renderer.c64(1), n_parts, "part") as p:
                self.red.merge(self.em, self.ea, state, self._load_state(b.load(b.gep(parts, [p])), i))
            self._save_state(out, i, state)
        b.ret_void()
        cells = ir.Function(self.module, ir.FunctionType(renderer.I64, []), CELLS_NAME)
        ir.IRBuilder(cells.append_basic_block("entry")).ret(renderer.c64(n_cells))
        return self.module


def _host_machine():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)


def _merge_function(program, dtype, acc_dtype, sum_scheme):
    """(engine, merge function, cells per row) for `program`, JIT-compiled here (it is
    small: a few ms of LLVM work, once per process and reduction)."""
    module = _Merger(program, dtype, acc_dtype, sum_scheme).build_merge()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    machine = _host_machine()
    builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=2))
    builder.getModulePassManager().run(mod, builder)
    engine = llvm.create_mcjit_compiler(mod, machine)  # the engine owns the module and the machine
    engine.finalize_object()
    cells = ctypes.CFUNCTYPE(_I64)(engine.get_function_address(CELLS_NAME))()
    return engine, _MERGE_TYPE(engine.get_function_address(MERGE_NAME)), cells


class Engine:
    """One reduction's compiled functions in this process, and the NumPy around them."""

    def __init__(self, spec: Spec):
        red = spec.reduction()
        acc = red.acc_dtype(spec.dtype)
        self.dtype = np.dtype(spec.dtype)
        self.arguments = red.kernel_arguments
        self.output_shapes = red.output_shapes
        self.split = cpu.compile_program(red.program, spec.dtype, acc, red.sum_scheme, variant="split_j")
        self._engine, self._merge, cells = _merge_function(red.program, spec.dtype, acc, red.sum_scheme)
        if cells != self.split.state_cells:  # both sides must agree on the state layout
            raise RuntimeError(f"keomlir.dask: merge states have {cells} cells, the kernel's "
                               f"{self.split.state_cells}")
        self.cells = cells

    def partial(self, blocks, j0, j1):
        """States of a block of rows over the reduced rows [j0, j1) (global numbers, so that
        stored indices are global).  blocks[p] is argument p's block: its rows in the block
        for kernel i-variables, rows j0..j1 for kernel j-variables, the whole parameter."""
        width = j1 - j0
        n_i = None
        keep, pointers = [], []
        for p, (block, (_, dim, cat)) in enumerate(zip(blocks, self.arguments)):
            a = np.asarray(block)
            if cat == 0 and n_i is None:
                n_i = a.shape[0]
            expected = {0: (n_i, dim), 1: (width, dim), 2: (dim,)}[cat]
            if (a.reshape(-1).shape if cat == 2 else a.shape) != expected:  # never read out of bounds
                raise ValueError(f"keomlir.dask: argument {p} has a block of shape {a.shape}, expected "
                                 f"{expected}: the dask array's chunks do not match its data")
            if cat == 1:  # transposed to (dim, width), as the kernel reads j data
                a = np.ascontiguousarray(a.T, dtype=self.dtype)
                # component c of j is read at base + c*width + j: the base shifted back by j0
                pointers.append((a.ctypes.data - j0 * self.dtype.itemsize) % _ADDRESS)
            else:
                a = np.ascontiguousarray(a, dtype=self.dtype)
                pointers.append(a.ctypes.data)
            keep.append(a)
        n_i = 1 if n_i is None else n_i
        state = np.empty((n_i, self.cells), np.uint64)
        args = (_PTR * max(len(pointers), 1))(*pointers)
        self.split.partial(0, n_i, j0, j1, width, args, state.ctypes.data)
        return state

    def merge(self, states):
        """The states of consecutive j ranges, in order of j, merged into one (not finalized)."""
        if len(states) == 1:
            return states[0]
        parts = [np.ascontiguousarray(s, dtype=np.uint64) for s in states]
        n = parts[0].shape[0]
        if any(s.shape != (n, self.cells) for s in parts):
            raise ValueError(f"keomlir.dask: states of shapes {[s.shape for s in parts]} cannot be merged")
        out = np.empty_like(parts[0])
        self._merge(0, n, len(parts), (_PTR * len(parts))(*[s.ctypes.data for s in parts]), out.ctypes.data)
        return out

    def finish(self, states):
        """The outputs (a tuple of arrays) of the merged states of every j, in order of j."""
        state = self.merge(states)
        n = state.shape[0]
        outs = [np.empty(shape, dtype=np.int64 if kind == "index" else self.dtype)
                for shape, kind in self.output_shapes(n)]
        ptrs = (_PTR * len(outs))(*[o.ctypes.data for o in outs])
        self.split.combine(0, n, n, 1, state.ctypes.data, ptrs)
        return tuple(outs)


_engines: dict[Spec, Engine] = {}
_lock = threading.Lock()


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
def partial_task(spec, j0, j1, blocks):
    return engine(spec).partial(blocks, j0, j1)


def merge_task(spec, states):
    return engine(spec).merge(states)


def finish_task(spec, states):
    return engine(spec).finish(states)
