"""The launch record: one checked call of a reduction, as every runtime takes it.

The compile entry (`keomlir.compile`) checks the arguments once and builds a
`Launch`; the CPU, GPU, simulator and reference runtimes read it and never call
back into the front end.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(slots=True)  # not frozen: a frozen init costs more than the call it describes
class Launch:
    program: object  # the optimized, target-independent ir.Program (reduces over j)
    dtype: str  # of the data: 'float16' (GPU only), 'float32' or 'float64'
    acc_dtype: str  # of the accumulators
    sum_scheme: str  # direct_sum, block_sum or kahan_scheme
    arg_cats: tuple  # per argument, in kernel terms: 0 i-variable, 1 j-variable, 2 parameter
    n_i: int  # output rows
    n_j: int  # reduced rows
    outputs: tuple  # ((shape with the rows, 'float' or 'index'), ...)
    ranges: tuple | None = None  # the kernel's checked half of a block-sparse 6-tuple (int64)
    schedule: tuple = ()  # the caller's schedule overrides ((field, value) pairs, see keomlir.schedule)

    def output_dtype(self, kind):
        return "int64" if kind == "index" else self.dtype

    def numpy_outputs(self):
        """Uninitialized NumPy arrays for the outputs."""
        return [np.empty(shape, dtype=self.output_dtype(kind)) for shape, kind in self.outputs]
