"""Tiling: choose the loop schedule of the kernel for a target.

The IR has no loops to rewrite, so the schedule is recorded on the program
(`Program.tiling`, printed with the IR) and code generators follow it: SIMD
vectors across j at the target's register width, and as many i rows per load
of j data as the reduction's state can keep in registers.  Contractions over the
components of a wide i variable and a wide j variable (`SqDist(x,y)`, `(x|y)`)
are load-bound when each row runs its own loop over components; the renderer
runs them as one register-blocked loop for the whole tile (`CONTRACT_ROWS`
rows: each j vector loaded once per component for all of them), and reduces j
in blocks that stay in cache while every tile of a chunk of rows reads them.
A Sum of `s * b` with s a scalar and b a wide j variable (`K @ B`) runs as
one kernel of at most COLUMN_BLOCK columns of b called on each block of
columns (no kernel per large width), b passed row-major per block: a GEMM-like
micro-kernel (`backends/llvm/columns.py`) multiplies s of COLUMN_ROWS rows into
register accumulators across columns, 3.5x faster than a Sum state of one
vector of j lanes per column (2 loads and a store of L1 per multiply-add).
A K-min of F = SqDist(x,y) itself is screened: the expanded form |x|^2 + |y|^2 -
2<x,y> (one FMA per component, not two operations) tells which j may beat a row's
K-th value, with a bound on its rounding error, and only those get exact values.

This is the one target-aware pass: it is not in the generic pipeline (which
`Reduction` runs once, for every backend) but run by a backend, or by
`keomlir ir`, with the `Target` it compiles for.
"""

from __future__ import annotations

import dataclasses

from ..ir.program import WIDE_THRESHOLD, Tiling, replace_vars
from ..schedule import Target  # noqa: F401  (what the pass is constructed with)
from .manager import Pass, register_pass


CONTRACTIONS = ("SqDist", "Scalprod")
CONTRACT_ROWS = 8  # rows per tile with a contraction: 8 accumulators in flight, 1 j load per 8 FMA
# j data per cache block with a contraction: half of the target's L2, the rows' data and states beside it
# (streamed from L3 once per tile instead, the j data of a wide contraction is what the kernel waits
# for; 128 / 256 / 512 KiB measured 0.264 / 0.244 / 0.238 s for a Gaussian at D = 128 on one core of
# 1 MiB of L2)
CACHE_SHARE = 2
# columns of a wide right-hand side per kernel call, and rows of its register tiles, for Exp(-SqDist(x,y))
# * b, 1000 columns, M = N = 4000, one core: blocks of 128 / 256 / 512 / 1024 columns took 0.37 / 0.34 /
# 0.33 / 0.45 s at D = 3 (1024: b's columns of a block of j no longer in L2), 0.71 / 0.51 / 0.46 / 0.61 s
# at D = 64 (s made again for every block); 4 rows instead of 6: 0.36 s at D = 3.  No cache blocking of
# j with them: 0.51 s instead of 0.64 s at D = 64 and 256 columns, and code generation in 0.3 s, not 6 s
# (the wide states of the chunk's rows saved and merged between blocks)
COLUMN_BLOCK = 512
COLUMN_ROWS = 6


def wide_contractions(program):
    """The contraction nodes of `program` with one wide i and one wide j variable, in walk order."""
    found = {}
    for _, root in program.roots():
        for n in root.walk():
            if n.name in CONTRACTIONS and n.args[0].dim > WIDE_THRESHOLD and all(a.name == "Var" for a in n.args):
                if sorted(a.attrs[2] for a in n.args) == [0, 1]:  # one i and one j variable
                    found[id(n)] = n
    return list(found.values())


def column_split(program):
    """(pos, width) of the j variable b when the program is a Sum of s * b (b used nowhere
    else, s a scalar) and b is wide (a Sum state kept in loops, `WIDE_THRESHOLD`), else None."""
    f = program.formula
    if program.reduction != "Sum" or program.formula2 is not None or f.name != "Mult":
        return None
    scalars = [a for a in f.args if a.dim == 1]
    wide_vars = [a for a in f.args if a.name == "Var" and a.attrs[2] == 1 and a.dim > WIDE_THRESHOLD]
    if len(scalars) != 1 or len(wide_vars) != 1:
        return None
    b = wide_vars[0]
    if any(n is b for n in scalars[0].walk()):
        return None
    return b.attrs[0], b.dim


def split_columns(program, pos, width):
    """The program on `block` columns of argument pos, where `block` (at most COLUMN_BLOCK,
    a multiple of 16) covers `width` in as few equal blocks as possible."""
    n = -(-width // COLUMN_BLOCK)
    block = 16 * -(-width // (16 * n))

    def narrow(p, dim, cat):
        return (p, block if p == pos else dim, cat)

    return dataclasses.replace(
        program, formula=replace_vars(program.formula, narrow), arguments=tuple(narrow(*a) for a in program.arguments),
        names=tuple((narrow(*a), name) for a, name in program.names)), (pos, block)


@register_pass
class TilingPass(Pass):
    name = "tiling"
    needs_target = True

    def __init__(self, target):
        self.target = target

    def run(self, program):
        if self.target.vector_bits is None:  # no SIMD across j: the backend's own launch plan schedules
            return dataclasses.replace(program, tiling=None)
        columns = column_split(program)
        if columns:
            program, columns = split_columns(program, *columns)
        n = len(wide_contractions(program))
        rows = program.red.tile_rows
        screen = (n == 1 and program.red.update_screened is not None and program.formula2 is None
                  and wide_contractions(program)[0] is program.formula and program.formula.name == "SqDist")
        if n and (screen or not program.red.lanes_share_state):
            # (an unscreened K-min's insertion is unrolled per row: 8 rows doubled its compile time,
            # 0.63 -> 1.15 s at D = 512, for 2% of speed; screened, one loop over the rows inserts, and
            # 8 rows took 0.69x the time of 4 at D = 256, 0.95x at D = 32; other states are small)
            rows = max(rows, CONTRACT_ROWS)
        if columns:
            rows = max(rows, COLUMN_ROWS)
        cache = self.target.l2_bytes // CACHE_SHARE
        tiling = Tiling(vector_bits=self.target.vector_bits, rows=rows, contractions=n,
                        cache_bytes=cache if n and not columns else 0, columns=columns or (), screen=screen,
                        registers=self.target.vector_registers)
        return dataclasses.replace(program, tiling=tiling)
