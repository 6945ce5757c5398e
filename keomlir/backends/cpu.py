"""The host CPU runtime: LLVM IR -> optimized object code -> MCJIT -> ctypes.

Compiled kernels are cached in memory and on disk (object code, see
`cache.py`); a cached kernel loads without any LLVM optimization or code
generation.  Calls split the rows i (or, for few rows, j) over threads; ctypes
releases the GIL during the foreign call, so the threads run in parallel.  Each
thread's share runs in chunks that Ctrl-C stops (`threads.py`); a forked child
makes its own threads and keeps the kernels compiled before the fork.  Arrays
are passed as `Arguments` lays them out (the kernels' calling convention), for a
whole call (`run`) or for the raw states of parts of j (`PartialStates`, what
keomlir.dask distributes); `BACKEND` is this runtime's `Backend` ("CPU").
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time

import numpy as np

from ..schedule import host, schedule, with_env
from ..schedule.record import ENV as SCHEDULE_ENV
from ..schedule.targets import ENV as TARGET_ENV, detect_host
from . import cache, threads, tuned, xla_ffi
from .base import Backend, register, untimed
from .launch import HALF, float32_values, numpy_dtype
from .llvm import flops, toolchain
from .llvm.renderer import (CELLS_NAME, COMBINE_NAME, J_BLOCK_NAME, KERNEL_NAME, MERGE_NAME, PARTIAL_NAME,
                            RANGES_NAME, RESUME_NAME, ROW_BLOCK_NAME, kernel_program, render)

_lock = threading.Lock()
# held across fork: a child must not inherit it locked, nor LLVM in the middle of a compilation
os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_lock.release)
# (program, dtype, acc, scheme, variant, schedule overrides, $KEOMLIR_TARGET, $KEOMLIR_SCHEDULE) -> kernel
_kernels: dict[tuple, "CpuKernel"] = {}
_by_class: dict[tuple, "CpuKernel"] = {}  # the kernel of a launch, by size class (see `launch_kernel`)
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_KERNEL_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR)  # also `partial`, `resume`
_COMBINE_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _I64, _PTR, _PTR)
_MERGE_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _PTR, _PTR)
_CELLS_TYPE = ctypes.CFUNCTYPE(_I64)
_RANGES_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _PTR)
MAX_CHUNK_PAIRS = 1 << 26  # the most pairs a call's smallest chunk may hold (else j is cut too)

_num_threads = None


def set_num_threads(n=None):
    """Threads used by CPU kernels (None: every core, or $KEOMLIR_NUM_THREADS)."""
    global _num_threads
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")
    _num_threads = n


def num_threads():
    if _num_threads is not None:
        return _num_threads
    env = os.environ.get("KEOMLIR_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def kernel_schedule(program, dtype, overrides=()):
    """The schedule of `program`'s host kernels for `dtype`: the host's (`schedule.host`),
    $KEOMLIR_SCHEDULE's overrides, then `overrides`."""
    return schedule(program, host(), dtype=dtype, overrides=with_env(overrides))


class CpuKernel:
    """A loaded kernel; `stats` says how it was obtained and how long that took.
    The other variants of the program (the functions that split j across
    threads, the block-sparse kernel) are compiled on first need."""

    def __init__(self, obj: bytes, stats, variant_of=None, schedule=None):
        self.engine = toolchain.host_engine(obj)
        self.stats = stats
        self.variant_of = variant_of  # variant name -> the CpuKernel of that variant
        self.schedule = schedule  # the schedule it was compiled with
        address = self.engine.get_function_address
        if address(KERNEL_NAME):
            self.fn = _KERNEL_TYPE(address(KERNEL_NAME))
        elif address(RANGES_NAME):
            self.blocks = _RANGES_TYPE(address(RANGES_NAME))
        else:
            self.partial = _KERNEL_TYPE(address(PARTIAL_NAME))
            self.resume = _KERNEL_TYPE(address(RESUME_NAME))
            self.combine = _COMBINE_TYPE(address(COMBINE_NAME))
            self.merge = _MERGE_TYPE(address(MERGE_NAME))
            self.state_cells = _CELLS_TYPE(address(CELLS_NAME))()
        if address(ROW_BLOCK_NAME):  # the ranges a call is best cut at (see threads.chunks)
            self.row_block = _CELLS_TYPE(address(ROW_BLOCK_NAME))()
            self.j_block = _CELLS_TYPE(address(J_BLOCK_NAME))()

    def __call__(self, arg_ptrs, out_ptrs, n_i, n_j):
        """Rows over threads, each thread's rows in chunks (`threads.chunks`); few rows:
        j over threads instead, each thread's j in chunks, partial states merged in order of j."""
        args = (ctypes.c_void_p * max(len(arg_ptrs), 1))(*arg_ptrs)
        outs = (ctypes.c_void_p * max(len(out_ptrs), 1))(*out_ptrs)
        n_threads, strategy = self.schedule.thread_plan(n_i, n_j, num_threads())
        if strategy == "one" and n_i * n_j <= threads.FIRST_PAIRS:
            # one chunk's work in this thread: what threads.run would do, without its machinery
            # (its cost is most of a small call's: bench/ab.py's per-call overhead row)
            self.fn(0, n_i, 0, n_j, n_j, args, outs)
            return
        if strategy == "split_j":
            split = self.variant_of("split_j")
            shares = threads.bounds(n_j, n_threads, split.j_block, fallback=64)  # (whole SIMD vectors)
            part_bytes = n_i * split.state_cells * 8
            parts = ctypes.create_string_buffer(part_bytes * len(shares))
            base = ctypes.addressof(parts)
            threads.run([functools.partial(_j_chunks, split, 0, n_i, lo, hi, n_j, args, base + t * part_bytes)
                         for t, (lo, hi) in enumerate(shares)])
            split.combine(0, n_i, n_i, len(shares), base, outs)
            return
        block = self.row_block
        shares = threads.bounds(n_i, n_threads, block)
        if min(block, n_i) * n_j <= MAX_CHUNK_PAIRS:
            def rows(a, b):
                self.fn(a, b, 0, n_j, n_j, args, outs)

            threads.run([functools.partial(threads.chunks, rows, lo, hi, threads.uniform(hi, n_j, block))
                         for lo, hi in shares])
            return
        # rows so long that one block of them is too much work for a chunk: each block
        # of rows reduced over j in chunks (states resumed), then finalized
        split = self.variant_of("split_j")
        parts = ctypes.create_string_buffer(max(n_i, 1) * split.state_cells * 8)
        base = ctypes.addressof(parts)

        def long_rows(lo, hi, stop):
            budget = None  # (each block goes on at the pace the one before found)
            for a in range(lo, hi, block):
                b = min(a + block, hi)
                budget = _j_chunks(split, a, b, 0, n_j, n_j, args, base, stop, budget)
                if budget is None:
                    return
                split.combine(a, b, n_i, 1, base, outs)

        threads.run([functools.partial(long_rows, lo, hi) for lo, hi in shares])

    def run_ranges(self, arg_ptrs, out_ptrs, n_i, n_j, ranges_i, slices_i, redranges_j):
        """The block-sparse reduction: int64 C-contiguous ranges, checked by the caller.
        Rows of no block get the reduction of an empty set; blocks run in parallel,
        split into parts of about equal work, each part in chunks of blocks."""
        args = (ctypes.c_void_p * max(len(arg_ptrs), 1))(*arg_ptrs)
        outs = (ctypes.c_void_p * max(len(out_ptrs), 1))(*out_ptrs)
        self.fn(0, n_i, 0, 0, n_j, args, outs)  # every row: the empty reduction
        n_blocks = len(ranges_i)
        if n_blocks == 0:
            return
        # a block of more work than a chunk is cut into blocks of fewer rows; few blocks
        # are cut so that every core has work
        pieces = -(-_work(ranges_i, slices_i, redranges_j) // MAX_CHUNK_PAIRS)
        if n_blocks < 4 * num_threads():
            pieces = np.maximum(pieces, -(-4 * num_threads() // n_blocks))
        if (pieces > 1).any():
            ranges_i, slices_i, redranges_j = _split_rows(ranges_i, slices_i, redranges_j, pieces)
            n_blocks = len(ranges_i)
        cumulative = np.concatenate([[0], np.cumsum(_work(ranges_i, slices_i, redranges_j))])
        n_threads = int(min(num_threads(), n_blocks, max(1, cumulative[-1] // self.schedule.min_pairs_per_thread)))
        # part t ends after the block whose cumulative work is closest to t/threads of the total
        cuts = [0] + [int(np.abs(cumulative[1:] - cumulative[-1] * t / n_threads).argmin()) + 1
                      for t in range(1, n_threads)] + [n_blocks]
        blocks = self.variant_of("ranges").blocks
        pointers = (ranges_i.ctypes.data, slices_i.ctypes.data, redranges_j.ctypes.data)

        def run_blocks(a, b):
            blocks(a, b, *pointers, n_j, args, outs)

        extent = threads.weighted(cumulative)
        threads.run([functools.partial(threads.chunks, run_blocks, lo, hi, extent)
                     for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo])


def _j_chunks(split, i0, i1, j0, j1, n_j, args, part, stop, budget=None):
    """Rows [i0, i1) of the split_j variant reduced over [j0, j1) into `part` in chunks of j,
    each continuing the states the one before left; as `threads.chunks`."""
    resume = False

    def columns(a, b):
        nonlocal resume
        (split.resume if resume else split.partial)(i0, i1, a, b, n_j, args, part)
        resume = True

    return threads.chunks(columns, j0, j1, threads.uniform(j1, i1 - i0, split.j_block), stop, budget)


def _work(ranges_i, slices_i, redranges_j):
    """The pairs of each block (plus one, the cost of a block of no work)."""
    lengths = redranges_j[:, 1] - redranges_j[:, 0]
    done = np.concatenate([[0], np.cumsum(lengths)])
    starts = np.concatenate([[0], slices_i[:-1]])
    return (ranges_i[:, 1] - ranges_i[:, 0]) * (done[slices_i] - done[starts]) + 1


def _split_rows(ranges_i, slices_i, redranges_j, pieces):
    """The same block-sparse reduction with block k cut into up to pieces[k] blocks of
    consecutive rows, each with a copy of the block's j intervals."""
    lo, hi = ranges_i[:, 0], ranges_i[:, 1]
    pieces = np.clip(pieces, 1, np.maximum(hi - lo, 1))
    block = np.repeat(np.arange(len(ranges_i)), pieces)  # the block each piece comes from
    q = np.arange(len(block)) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # its place in the block
    rows, n = (hi - lo)[block], pieces[block]
    new_ranges = np.stack([lo[block] + rows * q // n, lo[block] + rows * (q + 1) // n], axis=1)
    starts = np.concatenate([[0], slices_i[:-1]])
    counts = (slices_i - starts)[block]
    new_slices = np.cumsum(counts)
    first = np.repeat(starts[block] - (new_slices - counts), counts)  # a piece's interval -> the block's
    new_intervals = redranges_j[first + np.arange(new_slices[-1] if len(new_slices) else 0)]
    return (np.ascontiguousarray(new_ranges, dtype=np.int64), np.ascontiguousarray(new_slices, dtype=np.int64),
            np.ascontiguousarray(new_intervals, dtype=np.int64).reshape(-1, 2))


def _build(program, dtype, acc_dtype, sum_scheme, variant, sched):
    """Object code for `program` run as `sched` says, with the time of each stage."""
    t0 = time.perf_counter()
    module = render(program, dtype, acc_dtype, sum_scheme, variant, sched)
    t1 = time.perf_counter()
    tm = toolchain.target_machine(sched.target)
    mod = toolchain.optimize(module, tm)
    t2 = time.perf_counter()
    obj = tm.emit_object(mod)
    t3 = time.perf_counter()
    return obj, {"source": "compiled", "render_s": t1 - t0, "optimize_s": t2 - t1, "codegen_s": t3 - t2}


def kernel_cache_key(program, sched, acc_dtype=None, sum_scheme="block_sum", variant="kernel"):
    """The disk cache key of `program`'s host kernel (one variant) run as `sched` says."""
    return cache.kernel_key(kernel_program(program, sched), sched.target.key, dtype=sched.dtype, acc=acc_dtype,
                            scheme=sum_scheme, variant=variant, schedule=sched.key())


def compile_program(program, dtype, acc_dtype=None, sum_scheme="block_sum", variant="kernel", overrides=()):
    """The CpuKernel of a target-independent `program` (one variant, see renderer.VARIANTS) run as
    `kernel_schedule` says: from memory (keyed by the hash-consed IR), from disk (keyed by the
    IR text, the target and the schedule), or freshly compiled."""
    memo = (program, dtype, acc_dtype, sum_scheme, variant, overrides, os.environ.get(TARGET_ENV),
            os.environ.get(SCHEDULE_ENV))
    kernel = _kernels.get(memo)
    if kernel is not None:
        return kernel
    with _lock:
        kernel = _kernels.get(memo)
        if kernel is not None:
            return kernel
        t0 = time.perf_counter()
        sched = kernel_schedule(program, dtype, overrides)
        key = kernel_cache_key(program, sched, acc_dtype, sum_scheme, variant)
        siblings = functools.partial(_sibling, program, dtype, acc_dtype, sum_scheme, overrides)
        obj = cache.load(key)
        if obj is not None:
            try:
                kernel = CpuKernel(obj, {"source": "disk"}, siblings, sched)
            except Exception:  # passed its checksum yet does not load: rebuild it
                kernel = None
        if kernel is None:
            obj, stats = _build(program, dtype, acc_dtype, sum_scheme, variant, sched)
            cache.store(key, obj)
            kernel = CpuKernel(obj, stats, siblings, sched)
        kernel.stats["total_s"] = time.perf_counter() - t0
        kernel.stats["key"] = key
        _kernels[memo] = kernel
        return kernel


def kernels_loaded():
    """How many kernels this process has loaded (compiled or from the disk cache)."""
    return len(_kernels)


def _sibling(program, dtype, acc_dtype, sum_scheme, overrides, variant):
    return compile_program(program, dtype, acc_dtype, sum_scheme, variant, overrides)


def launch_kernel(launch):
    """The kernel a launch runs: scheduled with the caller's overrides (and $KEOMLIR_SCHEDULE's)
    if any, else, for a dense call, as `keomlir tune` found best for its program at its size
    class, if it stored a schedule (`tuned.py`), else by default.  Memoized by size class: a
    call reads three environment variables and one dict."""
    env = os.environ
    memo = (launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, launch.schedule, launch.ranges is None,
            launch.n_i.bit_length(), launch.n_j.bit_length(), tuned.version, env.get(TARGET_ENV),
            env.get(SCHEDULE_ENV), env.get(tuned.CACHE_ENV))
    kernel = _by_class.get(memo)
    if kernel is None:
        overrides = launch.schedule
        if not overrides and launch.ranges is None and not memo[-2]:
            overrides = tuned.lookup(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, launch.n_i,
                                     launch.n_j) or ()
        kernel = _by_class[memo] = compile_program(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme,
                                                   overrides=overrides)
    return kernel


def run(launch, arrays, kernel=None):
    """Run a checked Launch on NumPy arrays on the host (with `kernel`, a CpuKernel of its
    program, if given: the tuner's candidates); returns the outputs."""
    kernel = kernel or launch_kernel(launch)
    args = Arguments(kernel.schedule, arrays, launch.arg_cats)
    outs = launch.numpy_outputs()
    if args.block:  # the kernel of a block of b's columns, on each block (the columns strategy)
        part = np.empty((outs[0].shape[0], args.block), outs[0].dtype)
        for c0, width, pointers in args.calls():
            _call(kernel, launch, pointers, [part.ctypes.data])
            outs[0][:, c0:c0 + width] = part[:, :width]
    else:
        _call(kernel, launch, args.pointers, [o.ctypes.data for o in outs])
    # The kernel read the arrays of `args` through raw addresses: they must live until here,
    # so this is their last use.  A frame evaluator that drops locals after their last use (as
    # torch.compile's Dynamo did when it traced this function) would otherwise free a
    # transposed copy before the kernel runs, and the kernel would read freed memory.
    del args
    return outs


def _call(kernel, launch, arg_ptrs, out_ptrs):
    if launch.ranges is None:
        kernel(arg_ptrs, out_ptrs, launch.n_i, launch.n_j)
    else:
        kernel.run_ranges(arg_ptrs, out_ptrs, launch.n_i, launch.n_j, *launch.ranges)


# ---- the calling convention -----------------------------------------------------------------
_ADDRESS = 1 << 64


class Arguments:
    """Arrays as the CPU kernels read them (see renderer.py): i variables and parameters
    row-major, j variables transposed to (dim, rows) for contiguous vector loads, their
    base pointers shifted back by j0 so that a kernel reads j in [j0, j1) at its global
    index j (rows j0.. of the j data given); b of the columns strategy row-major, a block of
    its columns at a time (`calls`); half data's i variables and parameters as float32 (read
    once a row, they would be converted for every j).  A copy only where needed; inputs never
    written."""

    __slots__ = ("block", "j0", "pos", "keep", "pointers")

    def __init__(self, sched, arrays, cats, dtype=None, j0=0):
        self.block, self.j0 = sched.column_block, j0
        self.pos = pos = sched.column_arg if self.block else -1  # (b: copied by blocks of columns in `calls`)
        if dtype is not None:  # (not passed on otherwise: numpy's copies take twice as long with dtype=None)
            arrays = [np.asarray(a, dtype) for a in arrays]
        if sched.dtype in HALF:
            arrays = [a if cat == 1 else float32_values(a, sched.dtype) for a, cat in zip(arrays, cats)]
        keep = self.keep = [a if p == pos else np.ascontiguousarray(a.T if cat == 1 else a)
                            for p, (a, cat) in enumerate(zip(arrays, cats))]
        self.pointers = ([None if p == pos else a.ctypes.data for p, a in enumerate(keep)] if self.block
                         else [a.ctypes.data for a in keep])
        if j0:  # component c of j is read at base + c*rows + j: the base shifted back by j0
            self.pointers = [(q - j0 * a.itemsize) % _ADDRESS if cat == 1 and q is not None else q
                             for q, a, cat in zip(self.pointers, keep, cats)]

    @property
    def n_blocks(self):
        """The calls of a reduction (`calls`): one, or one a block of b's columns."""
        return -(-self.keep[self.pos].shape[1] // self.block) if self.block else 1

    def calls(self):
        """(first column, columns, argument pointers) of each call: one call (0, None, pointers)
        or, for the columns strategy, one a block of b's columns, the block copied row-major
        beside zeros (never read past b: the last block's columns past b are discarded)."""
        if not self.block:
            yield 0, None, self.pointers
            return
        b = self.keep[self.pos]  # (rows, columns)
        cols = np.zeros((b.shape[0], self.block), b.dtype)
        pointers = list(self.pointers)
        # column c of j is read at base + j*block + c: the base shifted back by j0 rows
        pointers[self.pos] = (cols.ctypes.data - self.j0 * self.block * cols.itemsize) % _ADDRESS
        for c0 in range(0, b.shape[1], self.block):
            width = min(self.block, b.shape[1] - c0)
            cols[:, :width] = b[:, c0:c0 + width]
            yield c0, width, pointers


class PartialStates:
    """Raw reduction states of rows over parts of j, merged in order of j, then finalized: a
    reduction distributed over parts of j (keomlir.dask), run by the kernel's split_j
    variant (`partial`, `resume`, `merge`, `combine`) called as every CPU kernel is
    (`Arguments`).  States are uint64 arrays (rows, cells): a row's raw 8-byte cells as
    `partial` writes them (the columns strategy: those of its blocks of columns side by side)."""

    def __init__(self, program, dtype, acc_dtype, sum_scheme, overrides=()):
        self.split = compile_program(program, dtype, acc_dtype, sum_scheme, "split_j", overrides)
        self.schedule = sched = self.split.schedule
        self.dtype = numpy_dtype(dtype)
        self.cats = tuple(cat for _, _, cat in program.arguments)
        self.n_blocks = -(-program.arguments[sched.column_arg][1] // sched.column_block) if sched.column_block else 1
        self.cells = self.split.state_cells * self.n_blocks

    def partial(self, arrays, n_i, j0, j1, state=None):
        """The states of n_i rows over j in [j0, j1) (global numbers: stored indices are global),
        continuing `state` (of the same rows over the j before j0; not modified) if given.
        arrays[p]: the rows' data of an i variable, rows j0..j1 of a j variable, a parameter."""
        out = np.empty((n_i, self.cells), np.uint64) if state is None else np.array(state, np.uint64, order="C")
        fn = self.split.partial if state is None else self.split.resume
        args = Arguments(self.schedule, arrays, self.cats, self.dtype, j0)
        cells = self.split.state_cells
        part = out if self.n_blocks == 1 else np.empty((n_i, cells), np.uint64)
        for k, (_, _, pointers) in enumerate(args.calls()):
            if part is not out:
                part[:] = out[:, k * cells:(k + 1) * cells]
            fn(0, n_i, j0, j1, j1 - j0, (_PTR * max(len(pointers), 1))(*pointers), part.ctypes.data)
            if part is not out:
                out[:, k * cells:(k + 1) * cells] = part
        del args  # (its arrays, read through raw addresses, live until here)
        return out

    def merge(self, states):
        """The states of consecutive parts of j, in order of j, merged into one (not finalized)."""
        if len(states) == 1:
            return states[0]
        parts = [np.ascontiguousarray(s, dtype=np.uint64) for s in states]
        n = parts[0].shape[0]
        out = np.empty_like(parts[0])
        # (blocks of columns: each row's states of its blocks, merged as rows of their own)
        self.split.merge(0, n * self.n_blocks, len(parts), (_PTR * len(parts))(*[s.ctypes.data for s in parts]),
                         out.ctypes.data)
        return out

    def finalize(self, state, outputs):
        """The finalized `outputs` (arrays of each output's shape, written) of merged states."""
        n = state.shape[0]
        state = np.ascontiguousarray(state, dtype=np.uint64)
        if self.schedule.column_block:  # the Sum of each block of columns, side by side, then b's columns
            blocks = np.empty((n, self.n_blocks * self.schedule.column_block), self.dtype)
            self.split.combine(0, n * self.n_blocks, n * self.n_blocks, 1, state.ctypes.data,
                               (_PTR * 1)(blocks.ctypes.data))
            outputs[0][:] = blocks[:, :outputs[0].shape[1]]
            return outputs
        pointers = (_PTR * max(len(outputs), 1))(*[o.ctypes.data for o in outputs])
        self.split.combine(0, n, n, 1, state.ctypes.data, pointers)
        return outputs


# ---- the backend -------------------------------------------------------------------------------
class CpuBackend(Backend):
    """The host's CPU: every core, threads as the schedule says."""

    name, kind = "CPU", "cpu"

    def target(self, device_id=-1):
        return host()

    def schedule(self, program, dtype="float32", overrides=(), sizes=None, target=None):
        return schedule(program, target or host(), sizes, dtype=dtype, overrides=with_env(overrides))

    def compile(self, program, dtype, acc_dtype=None, sum_scheme="block_sum", overrides=(), variant="kernel"):
        """The loaded `CpuKernel` of one variant (renderer.VARIANTS)."""
        return compile_program(program, dtype, acc_dtype, sum_scheme, variant, overrides)

    def run(self, launch, arrays, device_id=-1, kernel=None):
        """(kernel: a CpuKernel of the launch's program to run instead of `launch_kernel`'s.)"""
        return run(launch, arrays, kernel)

    def wants(self, launch):
        return True

    def launch_kernel(self, launch):
        return launch_kernel(launch)

    def flops(self, program, dtype="float32", target=None):
        return flops.count(program, dtype, target or host())

    def num_threads(self):
        return num_threads()

    def xla_handler(self, launch):
        """The address of a generated XLA FFI handler that runs `launch`'s kernel as `run` would
        (`xla_ffi.direct_handler`: the rows split over threads as `CpuKernel.__call__` splits
        them), for a dense call of float32 or float64 data; None for the rest (block-sparse,
        half data, j split over threads, the columns strategy, rows too long for one chunk)."""
        if launch.ranges is not None or launch.dtype in HALF:
            return None
        kernel = launch_kernel(launch)
        sched = kernel.schedule
        n_threads, strategy = sched.thread_plan(launch.n_i, launch.n_j, num_threads())
        if strategy == "split_j" or sched.column_block or getattr(kernel, "fn", None) is None or \
                min(kernel.row_block, launch.n_i) * launch.n_j > MAX_CHUNK_PAIRS:
            return None
        cuts = None if n_threads == 1 else tuple(
            lo for lo, _ in threads.bounds(launch.n_i, n_threads, kernel.row_block)) + (launch.n_i,)
        j_arg = next((k for k, cat in enumerate(launch.arg_cats) if cat == 1), -1)
        return xla_ffi.direct_handler(kernel, j_arg, cuts)

    def kernels_loaded(self):
        return kernels_loaded()

    def partial_states(self, program, dtype, acc_dtype, sum_scheme, overrides=()):
        return PartialStates(program, dtype, acc_dtype, sum_scheme, overrides)

    def emit(self, program, dtype, acc_dtype, sum_scheme, sched, forms, timed=untimed, variant="kernel"):
        """LLVM IR before and after the optimizer, assembly and object code of the kernel for
        `sched.target` (another CPU's: cross-compiled)."""
        out = {}
        if not {"llvm", "llvm-opt", "asm", "obj"} & set(forms):
            return out
        tm = toolchain.target_machine(sched.target)
        module = timed("LLVM IR rendering", render, program, dtype, acc_dtype, sum_scheme, variant, sched)
        if sched.target.triple != detect_host().triple:  # cross-compiled
            module.triple, module.data_layout = sched.target.triple, str(tm.target_data)
        if "llvm" in forms:
            out["llvm"] = str(module)
        if {"llvm-opt", "asm", "obj"} & set(forms):
            mod = timed("LLVM optimization", toolchain.optimize, module, tm)
            if "llvm-opt" in forms:
                out["llvm-opt"] = str(mod)
            if "obj" in forms:
                out["obj"] = timed("machine code", tm.emit_object, mod)
            if "asm" in forms:
                out["asm"] = timed("assembly", tm.emit_assembly, mod)
        return out


BACKEND = register(CpuBackend())
