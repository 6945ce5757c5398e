"""Launch planning as plain data: which kernels of `llvm/nvptx.py` run, on which
grids, with which parameters and scratch buffers.  No driver here, so the GPU
runtime and the host simulator run the very same plans.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FAN = 32  # states merged per thread in one merge pass of the 2-D scheme


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
    ({name: i64 words}).  scheme: '1d', '2d' or 'auto' (2-D when the rows alone
    leave most of the GPU idle and there are many j)."""
    B = info.block
    gx = _cdiv(n_i, B)
    ins = tuple(f"in{k}" for k in range(n_in))
    outs = tuple(f"out{k}" for k in range(n_out))
    one_d = ([Step("keomlir_1d", (gx, 1), B, (n_i, n_j) + ins + outs)], {})
    if n_i == 0:
        return [], {}
    if n_j == 0 or scheme == "1d":
        return one_d
    if chunk is None:
        if scheme == "auto":
            resident = sm_count * max(1, threads_per_sm // B)
            if 2 * gx > resident or n_j < 8 * B:
                return one_d
            gj = min(_cdiv(2 * resident, gx), _cdiv(n_j, 4 * B))
            if gj < 2:
                return one_d
        else:
            gj = min(_cdiv(n_j, B), 64)
        chunk = _cdiv(_cdiv(n_j, gj), info.tile) * info.tile  # whole tiles
    chunk = max(chunk, _cdiv(n_j, 65535))  # the y dimension of a grid is at most 65535
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
