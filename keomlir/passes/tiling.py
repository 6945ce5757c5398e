"""Tiling: choose the loop schedule of the kernel for the target.

The IR has no loops to rewrite, so the schedule is recorded on the program
(`Program.tiling`, printed with the IR) and code generators follow it: SIMD
vectors across j at the host's register width, and as many i rows per load of j
data as the reduction's state can keep in registers.
"""

from __future__ import annotations

import dataclasses
import functools

from ..ir.program import Tiling
from .manager import Pass, register_pass


@functools.lru_cache(maxsize=None)
def host_vector_bits():
    """The host's SIMD register width, from LLVM's view of the CPU's features."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return 512
    if features.get("avx") or features.get("avx2"):
        return 256
    return 128


@register_pass
class TilingPass(Pass):
    name = "tiling"

    def run(self, program):
        tiling = Tiling(vector_bits=host_vector_bits(), rows=program.red.tile_rows)
        return dataclasses.replace(program, tiling=tiling)
