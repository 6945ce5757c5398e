"""schedule(program, target): every decision of how a program runs on a target, made here.

The IR has no loops to rewrite, and scheduling rewrites nothing: it reads the
program and the target and returns a `Schedule` (record.py) that the code
generators and runtimes follow.

On a CPU: SIMD vectors across j at the target's width, and as many i rows per
load of j data as the reduction's state can keep in registers.  Contractions over
the components of a wide i variable and a wide j variable (`SqDist(x,y)`, `(x|y)`)
are load-bound when each row runs its own loop over components; they run as one
register-blocked loop for the whole tile (`CONTRACT_ROWS` rows: each j vector loaded
once per component for all of them, `backends/llvm/microkernel.py`), j reduced in
cache blocks that stay in L2 while every tile of a chunk of rows reads them.  A Sum
of `s * b` with s a scalar and b a wide j variable (`K @ B`) runs one kernel of at
most `column_block` columns of b on each block of columns, b passed row-major per
block: a GEMM-like micro-kernel (`backends/llvm/strategies/columns.py`) multiplies s of
COLUMN_ROWS rows into register accumulators across columns, instead of a Sum state
of one vector of j lanes per column (2 loads and a store of L1 per multiply-add;
bench/wide_rhs.md has the numbers).  A K-min of F = SqDist(x,y) itself is screened: the expanded form
|x|^2 + |y|^2 - 2<x,y> (one FMA per component, not two operations) tells which j may
beat a row's K-th value, with a bound on its rounding error, and only those get
exact values.  Threads take rows, or for few rows parts of j.

On a GPU: one thread a row, j staged in shared memory by tiles, the 1-D scheme or,
for few rows and many j, the 2-D scheme (j split across blocks, states merged).
"""

from __future__ import annotations

import dataclasses
import functools

from ..ir.node import ssa_nodes
from ..ir.program import WIDE_THRESHOLD
from .record import Schedule, parse_overrides
from .strategies import STRATEGIES, column_split, possible, wide_contractions
from .targets import KiB

CONTRACT_ROWS = 8  # rows per tile with a contraction: 8 accumulators in flight, 1 j load per 8 FMA
# j data per cache block with a contraction: the target's L2 over CACHE_SHARE, the rows' data and states
# beside it (streamed from L3 once per tile instead, the j data of a wide contraction is what the kernel
# waits for; measurements: bench/schedule_defaults.md)
CACHE_SHARE = 2
# columns of a wide right-hand side per kernel call, and rows of its register tiles, for Exp(-SqDist(x,y))
# * b: a block holds as many columns as fill the L2 with b's rows of a block of `sum_block` j (larger
# blocks fall out of L2, smaller ones make s again too often), no cache blocking of j with them
# (measurements: bench/schedule_defaults.md)
COLUMN_ROWS = 6
COLUMN_VECTORS = 4  # column vectors of a register tile: one load of b for each row's multiply-add
SUM_BLOCK = 512  # j per block of the compensated sum
# a LogSumExp's (SumSoftMaxWeight's) block ends with the exps of its batch (`block_vectors` of j at
# most): twice as long, its end costs half as much a pair (measurements: bench/schedule_defaults.md)
SHIFTED_EXP_BLOCK = 1024
CHUNK_ROWS, CHUNK_BYTES = 256, 64 * KiB  # a cache-blocked chunk: at most these rows, their states on the stack
SCREEN_TRIAL = 64  # row-vectors screened before the screen may be found useless
# a K-min of SqDist of SCREEN_FROM to 16 components is screened too, its variables then loops over
# components (wide_threshold = SCREEN_FROM - 1): found by `keomlir tune`; below, the screen loses where
# K / N is large, so the tuner chooses (measurements: bench/schedule_defaults.md)
SCREEN_FROM = 12
MIN_PAIRS_PER_THREAD = 1 << 16
SPLIT_J_BELOW_ROWS = 64  # fewer rows than this per thread: split j instead
# GPU: the largest block whose tile of one j row per thread fits shared memory; else WIDE_BLOCK threads
# sharing tiles of as many rows as fit; not one row: no staging (each thread reads j from global memory)
GPU_BLOCKS = (256, 128, 64)
WIDE_BLOCK = 128
MERGE_BLOCK = 128
FAN = 32  # states merged per thread in one merge pass of the 2-D scheme
DATA_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}  # (half data computes in float32)


def strategies(program, target, threshold=WIDE_THRESHOLD):
    """The loop nests possible for `program` on `target`, the default first (`strategies.py`)."""
    return possible(program, target, threshold)


def default_threshold(program, target):
    """The default `wide_threshold`: WIDE_THRESHOLD, but SCREEN_FROM - 1 for a K-min of SqDist that
    is screened from SCREEN_FROM components on (see SCREEN_FROM)."""
    if "screened" not in strategies(program, target) and "screened" in strategies(program, target,
                                                                                  SCREEN_FROM - 1):
        return SCREEN_FROM - 1
    return WIDE_THRESHOLD


def schedule(program, target, sizes=None, dtype="float32", overrides=()):
    """The Schedule of `program` (target-independent, as the generic pipeline leaves it) on
    `target` for data of `dtype`: the defaults below, then `overrides` (a dict, text
    'rows=4,...' or (field, value) pairs; fields of the other kind of target are left to it).
    With sizes=(n_i, n_j), the fields of a call of those sizes too (threads, GPU plan)."""
    found = _schedule(program, target, dtype, parse_overrides(overrides))
    return found if sizes is None else with_sizes(found, sizes)


def with_sizes(sched, sizes):
    """`sched` with the fields of a call of sizes (n_i, n_j): its threads on the target's
    cores, or its GPU plan (1-D, or 2-D and the j per block) on the target's SMs."""
    n_i, n_j = sizes
    target = sched.target
    if target.kind == "gpu":
        chunk = two_d_chunk(n_i, n_j, sched.block, sched.tile, target.cores, target.threads_per_sm, sched.plan,
                            sched.chunk)
        return dataclasses.replace(sched, plan="1d" if chunk is None else "2d", chunk=chunk)
    threads, how = sched.thread_plan(n_i, n_j, target.cores)
    return dataclasses.replace(sched, threads=threads, thread_strategy=how)


@functools.lru_cache(maxsize=1024)
def _schedule(program, target, dtype, overrides):
    over = dict(overrides)
    if dtype not in DATA_BYTES:
        raise ValueError(f"schedule: dtype {dtype!r} is not compiled for {target.name}")
    threshold = over.get("wide_threshold", default_threshold(program, target))
    found = strategies(program, target, threshold)
    strategy = over.get("strategy", found[0])
    if strategy not in found:
        raise ValueError(f"schedule: strategy={strategy} is not possible for this program on {target.name}; "
                         f"possible: {', '.join(found)}")
    nodes = ssa_nodes(program.roots())
    wide = tuple(name for name, n in nodes.items() if n.dim > threshold or any(a.dim > threshold for a in n.args))
    common = dict(target=target, dtype=dtype, strategy=strategy, wide_threshold=threshold, wide_nodes=wide)
    if target.kind == "gpu":
        return Schedule(**common, **_gpu(program, target, dtype, over))
    return Schedule(**common, **_cpu(program, target, strategy, threshold, over))


def _cpu(program, target, strategy, threshold, over):
    red = program.red
    rules = STRATEGIES[strategy].rules  # a registered strategy's fields: as those of the built-in it is like
    contractions = wide_contractions(program, threshold)
    contract = over.get("contract", tuple(contractions) if rules != "lanes" else ())
    unknown = [name for name in contract if name not in contractions]
    if unknown:
        raise ValueError(f"schedule: contract={' '.join(unknown)}: not a contraction of a wide i and a wide j "
                         f"variable of this program; those it has: {' '.join(contractions) or 'none'}")
    if contract and rules == "lanes":
        raise ValueError(f"schedule: contract names micro-kernels, which strategy={strategy} does not run; "
                         "use strategy=contraction")
    if rules == "screened" and tuple(contract) != tuple(contractions):
        raise ValueError(f"schedule: strategy={strategy} screens the contraction {' '.join(contractions)}: "
                         f"contract must name it")
    rows = red.tile_rows
    if contract and (rules == "screened" or not red.lanes_share_state):
        # (an unscreened K-min's insertion is unrolled per row, so more rows cost compile time for
        # little speed; screened, one loop over the rows inserts; other states are small:
        # bench/schedule_defaults.md)
        rows = max(rows, CONTRACT_ROWS)
    sum_block = over.get("sum_block", SHIFTED_EXP_BLOCK if red.block_vectors else SUM_BLOCK)
    column_arg, column_block = None, 0
    if rules == "columns":
        rows = max(rows, COLUMN_ROWS)
        column_arg, width = column_split(program, threshold)
        # (at least twice the wide threshold: a block's b is a wide state, kept in loops)
        limit = max(2 * (threshold + 16), target.l2_bytes // (4 * sum_block)) // 16 * 16
        n = -(-width // over.get("column_block", limit))
        column_block = 16 * -(-width // (16 * n))  # as few equal blocks as cover the width
        if column_block <= threshold:
            raise ValueError(f"schedule: column_block={over['column_block']} makes blocks of {column_block} "
                             f"columns, not over wide_threshold={threshold}: at least {limit}")
    column_vectors = over.get("column_vectors", COLUMN_VECTORS)
    chosen = dict(
        vector_bits=target.vector_bits, rows=rows, sum_block=sum_block, contract=tuple(contract),
        screen_trial=SCREEN_TRIAL,
        cache_block=target.l2_bytes // CACHE_SHARE if contract and rules in ("contraction", "screened") else 0,
        chunk_rows=CHUNK_ROWS, chunk_bytes=CHUNK_BYTES, column_arg=column_arg, column_block=column_block,
        column_vectors=column_vectors,
        # half the vector registers hold a contraction's sums (the others: the j vector, the rows' x and
        # addresses); the column kernel's, all but its column vectors of b and a few for s and addresses
        contract_accumulators=target.vector_registers // 2,
        column_accumulators=max(1, target.vector_registers - column_vectors - 4),
        min_pairs_per_thread=MIN_PAIRS_PER_THREAD, split_j_below_rows=SPLIT_J_BELOW_ROWS)
    chosen.update((k, v) for k, v in over.items() if k in chosen and k not in ("contract", "column_block"))
    return chosen


def _gpu(program, target, dtype, over):
    row_bytes = sum(v.dim for v in program.used_variables() if v.attrs[2] == 1) * DATA_BYTES[dtype]
    shared = target.shared_bytes
    fits = shared // row_bytes if row_bytes else None  # j rows a tile may hold
    block = over.get("block", next((b for b in GPU_BLOCKS if b * row_bytes <= shared), WIDE_BLOCK))
    tile = over.get("tile", block if fits is None or block <= fits else fits or block)
    stage = over.get("stage", fits is None or fits > 0)
    if stage and fits is not None and tile > fits:
        raise ValueError(f"schedule: tile={tile} j rows of {row_bytes} bytes do not fit the "
                         f"{shared // KiB} KiB of shared memory of {target.name}: at most {fits}, or stage=off")
    return dict(block=block, tile=tile, stage=stage, fast_math=over.get("fast_math", False),
                merge_block=over.get("merge_block", MERGE_BLOCK), fan=over.get("fan", FAN),
                plan=over.get("plan", "auto"), chunk=over.get("chunk"))


def two_d_chunk(n_i, n_j, block, tile, sm_count, threads_per_sm, plan="auto", chunk=None):
    """j per block of the 2-D scheme for a call of n_i rows and n_j j, or None for the 1-D scheme:
    2-D when the rows alone leave most of the GPU idle and there are many j (plan 'auto')."""
    if n_i == 0 or n_j == 0 or plan == "1d":
        return None
    if chunk is None:
        gx = -(-n_i // block)
        if plan == "auto":
            resident = sm_count * max(1, threads_per_sm // block)
            if 2 * gx > resident or n_j < 8 * block:
                return None
            gj = min(-(-2 * resident // gx), -(-n_j // (4 * block)))
            if gj < 2:
                return None
        else:
            gj = min(-(-n_j // block), 64)
        chunk = -(-(-(-n_j // gj)) // tile) * tile  # whole tiles
    return max(chunk, -(-n_j // 65535))  # the y dimension of a grid is at most 65535
