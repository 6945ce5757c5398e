"""Launch planning as plain data: which kernels of `llvm/nvptx.py` run, on which
grids, with which parameters and scratch buffers.  No driver here, so the GPU
runtime and the host simulator run the very same plans.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...schedule import two_d_chunk
from ...schedule.choose import FAN


@dataclasses.dataclass(frozen=True)
class Step:
    kernel: str
    grid: tuple  # (blocks along x, blocks along y)
    block: int
    params: tuple  # ints, or buffer names: 'in<k>', 'out<k>', 's0', 's1', 'plan', 'redranges'


def _cdiv(a, b):
    return -(-a // b)


def plan(n_i, n_j, n_in, n_out, info, sm_count, threads_per_sm=2048, scheme="auto", chunk=None, fan=FAN):
    """The kernel launches of one reduction, and the state buffers they need
    ({name: i64 words}).  scheme: '1d', '2d' or 'auto', and chunk (j per block of
    the 2-D scheme, None: chosen) as the schedule's `plan` and `chunk` (`two_d_chunk`)."""
    B = info.block
    gx = _cdiv(n_i, B)
    ins = tuple(f"in{k}" for k in range(n_in))
    outs = tuple(f"out{k}" for k in range(n_out))
    one_d = ([Step("keomlir_1d", (gx, 1), B, (n_i, n_j) + ins + outs)], {})
    if n_i == 0:
        return [], {}
    chunk = two_d_chunk(n_i, n_j, B, info.tile, sm_count, threads_per_sm, scheme, chunk)
    if chunk is None:
        return one_d
    gj = _cdiv(n_j, chunk)
    S = info.state_slots
    steps = [Step("keomlir_partial", (gx, gj), B, (n_i, n_j, chunk) + ins + ("s0",))]
    buffers = {"s0": gj * S * n_i}
    mx = _cdiv(n_i, info.merge_block)
    n, src, dst = gj, "s0", "s1"
    while n > fan:
        groups = _cdiv(n, fan)
        buffers[dst] = max(buffers.get(dst, 0), groups * S * n_i)
        steps.append(Step("keomlir_merge", (mx, groups), info.merge_block, (n_i, n, fan, src, dst)))
        n, src, dst = groups, dst, src
    steps.append(Step("keomlir_final", (mx, 1), info.merge_block, (n_i, n, src) + outs))
    return steps, buffers


def ranges_plan(ranges_i, slices_i, block):
    """The (n_chunks, 4) int64 launch plan of the block-sparse kernel: every block
    of ranges_i cut into chunks of at most `block` rows, each with its slice of
    intervals: (first row, end row, first interval, end interval)."""
    first = np.concatenate([[0], slices_i[:-1]]).astype(np.int64)
    chunks = -(-(ranges_i[:, 1] - ranges_i[:, 0]) // block)  # per block of rows (0 when empty)
    owner = np.repeat(np.arange(len(ranges_i)), chunks)
    index = np.arange(len(owner)) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    start = ranges_i[owner, 0] + index * block
    end = np.minimum(start + block, ranges_i[owner, 1])
    return np.ascontiguousarray(np.stack([start, end, first[owner], slices_i[owner]], axis=1), dtype=np.int64)


def ranges_steps(n_i, n_j, n_in, n_out, info, ranges):
    """Launches of a block-sparse reduction (`ranges`: the kernel's checked half of the
    6-tuple) and the int64 tables they read: every row gets the empty reduction
    (keomlir_1d over no j), then the blocks' rows are reduced over their intervals."""
    if n_i == 0:
        return [], {}
    ranges_i, slices_i, redranges = ranges
    chunks = ranges_plan(ranges_i, slices_i, info.block)
    ins = tuple(f"in{k}" for k in range(n_in))
    outs = tuple(f"out{k}" for k in range(n_out))
    steps = [Step("keomlir_1d", (_cdiv(n_i, info.block), 1), info.block, (n_i, 0) + ins + outs)]
    if len(chunks):
        steps.append(Step("keomlir_ranges", (len(chunks), 1), info.block, (n_i, n_j, "plan", "redranges") + ins + outs))
    return steps, {"plan": chunks, "redranges": np.ascontiguousarray(redranges, dtype=np.int64)}


def launch_steps(launch, info, sm_count, threads_per_sm=2048, scheme="auto", chunk=None, fan=FAN):
    """The plan of a `Launch`, dense or block-sparse: (steps, scratch state buffers
    {name: i64 words}, int64 tables to upload {name: array})."""
    n_in, n_out = len(launch.arg_cats), len(launch.outputs)
    if launch.ranges is None:
        return (*plan(launch.n_i, launch.n_j, n_in, n_out, info, sm_count, threads_per_sm, scheme, chunk, fan), {})
    steps, tables = ranges_steps(launch.n_i, launch.n_j, n_in, n_out, info, launch.ranges)
    return steps, {}, tables
