"""Tiling: choose the loop schedule of the kernel for a target.

The IR has no loops to rewrite, so the schedule is recorded on the program
(`Program.tiling`, printed with the IR) and code generators follow it: SIMD
vectors across j at the target's register width, and as many i rows per load
of j data as the reduction's state can keep in registers.

This is the one target-aware pass: it is not in the generic pipeline (which
`Reduction` runs once, for every backend) but run by a backend, or by
`keomlir ir`, with the `Target` it compiles for.
"""

from __future__ import annotations

import dataclasses

from ..ir.program import Tiling
from .manager import Pass, register_pass


@dataclasses.dataclass(frozen=True)
class Target:
    """What the schedule depends on: a name for printing and cache keys, and the SIMD
    register width across j (None: one j at a time per thread, as on a GPU)."""

    name: str
    vector_bits: int | None = None


@register_pass
class TilingPass(Pass):
    name = "tiling"
    needs_target = True

    def __init__(self, target):
        self.target = target

    def run(self, program):
        if self.target.vector_bits is None:  # no SIMD across j: the backend's own launch plan schedules
            return dataclasses.replace(program, tiling=None)
        tiling = Tiling(vector_bits=self.target.vector_bits, rows=program.red.tile_rows)
        return dataclasses.replace(program, tiling=tiling)
