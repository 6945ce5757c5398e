"""The host CPU runtime: LLVM IR -> optimized object code -> MCJIT -> ctypes.

Compiled kernels are cached in memory and on disk (object code, see
`cache.py`); a cached kernel loads without any LLVM optimization or code
generation.  Calls split the rows i over threads; ctypes releases the GIL
during the foreign call, so the threads run in parallel.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import os
import threading
import time

import numpy as np

from ..schedule import host, schedule, with_env
from ..schedule.record import ENV as SCHEDULE_ENV
from ..schedule.targets import ENV as TARGET_ENV
from . import cache
from .llvm import toolchain
from .llvm.renderer import (CELLS_NAME, COMBINE_NAME, KERNEL_NAME, MERGE_NAME, PARTIAL_NAME, RANGES_NAME,
                            RESUME_NAME, kernel_program, render)

_lock = threading.Lock()
# (program, dtype, acc, scheme, variant, schedule overrides, $KEOMLIR_TARGET, $KEOMLIR_SCHEDULE) -> kernel
_kernels: dict[tuple, "CpuKernel"] = {}
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_KERNEL_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR)  # also `partial`, `resume`
_COMBINE_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _I64, _PTR, _PTR)
_MERGE_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _PTR, _PTR)
_CELLS_TYPE = ctypes.CFUNCTYPE(_I64)
_RANGES_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _PTR)

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


@functools.lru_cache(maxsize=None)
def _pool(n):
    return concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="keomlir")


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

    def __call__(self, arg_ptrs, out_ptrs, n_i, n_j):
        args = (ctypes.c_void_p * max(len(arg_ptrs), 1))(*arg_ptrs)
        outs = (ctypes.c_void_p * max(len(out_ptrs), 1))(*out_ptrs)
        threads, split = self.schedule.thread_plan(n_i, n_j, num_threads())
        if split == "one":
            self.fn(0, n_i, 0, n_j, n_j, args, outs)
        elif split == "rows":  # rows over threads
            bounds = [n_i * t // threads for t in range(threads + 1)]
            _run(self.fn, [(lo, hi, 0, n_j, n_j, args, outs) for lo, hi in zip(bounds[:-1], bounds[1:])])
        else:  # few rows: j over threads, partial states merged in order of j
            split = self.variant_of("split_j")
            bounds = [n_j * t // threads for t in range(threads + 1)]
            part_bytes = n_i * split.state_cells * 8
            parts = ctypes.create_string_buffer(part_bytes * threads)
            base = ctypes.addressof(parts)
            _run(split.partial, [(0, n_i, lo, hi, n_j, args, base + t * part_bytes)
                                 for t, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))])
            split.combine(0, n_i, n_i, threads, base, outs)

    def run_ranges(self, arg_ptrs, out_ptrs, n_i, n_j, ranges_i, slices_i, redranges_j):
        """The block-sparse reduction: int64 C-contiguous ranges, checked by the caller.
        Rows of no block get the reduction of an empty set; blocks run in parallel,
        split into parts of about equal work."""
        args = (ctypes.c_void_p * max(len(arg_ptrs), 1))(*arg_ptrs)
        outs = (ctypes.c_void_p * max(len(out_ptrs), 1))(*out_ptrs)
        self.fn(0, n_i, 0, 0, n_j, args, outs)  # every row: the empty reduction
        n_blocks = len(ranges_i)
        if n_blocks == 0:
            return
        if n_blocks < 4 * num_threads():  # few blocks: cut them into parts of rows, so every core has work
            ranges_i, slices_i, redranges_j = _split_rows(ranges_i, slices_i, redranges_j,
                                                          -(-4 * num_threads() // n_blocks))
            n_blocks = len(ranges_i)
        lengths = redranges_j[:, 1] - redranges_j[:, 0]
        done = np.concatenate([[0], np.cumsum(lengths)])
        starts = np.concatenate([[0], slices_i[:-1]])
        work = (ranges_i[:, 1] - ranges_i[:, 0]) * (done[slices_i] - done[starts]) + 1
        cumulative = np.cumsum(work)
        threads = int(min(num_threads(), n_blocks, max(1, cumulative[-1] // self.schedule.min_pairs_per_thread)))
        # part t ends after the block whose cumulative work is closest to t/threads of the total
        cuts = [0] + [int(np.abs(cumulative - cumulative[-1] * t / threads).argmin()) + 1
                      for t in range(1, threads)] + [n_blocks]
        blocks = self.variant_of("ranges").blocks
        pointers = (ranges_i.ctypes.data, slices_i.ctypes.data, redranges_j.ctypes.data)
        calls = [(lo, hi, *pointers, n_j, args, outs) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
        if len(calls) == 1:
            blocks(*calls[0])
        else:
            _run(blocks, calls)


def _split_rows(ranges_i, slices_i, redranges_j, parts):
    """The same block-sparse reduction with every block cut into up to `parts` blocks of
    consecutive rows, each with a copy of the block's j intervals."""
    new_ranges, new_slices, new_intervals, end = [], [], [], 0
    first = 0
    for (lo, hi), last in zip(ranges_i.tolist(), slices_i.tolist()):
        intervals = redranges_j[first:last]
        first = last
        pieces = max(1, min(parts, hi - lo))
        bounds = [lo + (hi - lo) * p // pieces for p in range(pieces + 1)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            new_ranges.append((a, b))
            new_intervals.append(intervals)
            end += len(intervals)
            new_slices.append(end)
    return (np.array(new_ranges, dtype=np.int64).reshape(-1, 2), np.array(new_slices, dtype=np.int64),
            np.ascontiguousarray(np.concatenate(new_intervals), dtype=np.int64).reshape(-1, 2))


def _run(fn, calls):
    futures = [_pool(len(calls)).submit(fn, *c) for c in calls]
    for f in futures:
        f.result()


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
        key = cache.kernel_key(kernel_program(program, sched), sched.target.key, dtype=dtype, acc=acc_dtype, scheme=sum_scheme,
                               variant=variant, schedule=sched.key())
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


def _sibling(program, dtype, acc_dtype, sum_scheme, overrides, variant):
    return compile_program(program, dtype, acc_dtype, sum_scheme, variant, overrides)


def run(launch, arrays):
    """Run a checked Launch on NumPy arrays on the host; returns the outputs."""
    kernel = compile_program(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme,
                             overrides=launch.schedule)
    sched = kernel.schedule
    columns = (sched.column_arg, sched.column_block) if sched.column_block else ()
    row_major = columns[0] if columns else -1
    # j data transposed to (dim, rows) for contiguous vector loads (b of the columns strategy stays
    # row-major, copied by blocks); a copy only where needed, inputs never written
    buffers = [np.ascontiguousarray(a.T if cat == 1 and p != row_major else a)
               for p, (a, cat) in enumerate(zip(arrays, launch.arg_cats))]
    outs = launch.numpy_outputs()
    arg_ptrs = [b.ctypes.data for b in buffers]
    if columns:
        _column_blocks(kernel, launch, arg_ptrs, buffers, outs[0], *columns)
    else:
        _call(kernel, launch, arg_ptrs, [o.ctypes.data for o in outs])
    return outs


def _call(kernel, launch, arg_ptrs, out_ptrs):
    if launch.ranges is None:
        kernel(arg_ptrs, out_ptrs, launch.n_i, launch.n_j)
    else:
        kernel.run_ranges(arg_ptrs, out_ptrs, launch.n_i, launch.n_j, *launch.ranges)


def _column_blocks(kernel, launch, arg_ptrs, buffers, out, pos, block):
    """A Sum of s * b (the columns strategy): the kernel of `block` columns of b called on each
    block of b's columns, passed as a row-major (n_j, block) copy, the last one zero-padded."""
    b = buffers[pos]  # (n_j, columns)
    part = np.empty((out.shape[0], block), out.dtype)
    cols = np.zeros((b.shape[0], block), b.dtype)
    for c0 in range(0, b.shape[1], block):
        width = min(block, b.shape[1] - c0)
        cols[:, :width] = b[:, c0:c0 + width]  # never read past b: the last columns beside zeros
        _call(kernel, launch, arg_ptrs[:pos] + [cols.ctypes.data] + arg_ptrs[pos + 1:], [part.ctypes.data])
        out[:, c0:c0 + width] = part[:, :width]
