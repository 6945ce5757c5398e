"""The launch record: one checked call of a reduction, as every runtime takes it.

The compile entry (`keomlir.compile`) checks the arguments once and builds a
`Launch`; the CPU, GPU, simulator and reference runtimes read it and never call
back into the front end.
"""

from __future__ import annotations

import dataclasses

import functools

import numpy as np

# the dtypes of data every runtime takes; half data (float16, bfloat16) is stored in 16 bits and
# computed in float32.  NumPy has no bfloat16: ml_dtypes' (JAX's) where installed, else the raw
# bits of torch.bfloat16 tensors as uint16 arrays (`numpy_dtype`)
DTYPES = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")


@functools.lru_cache(maxsize=None)
def numpy_dtype(name):
    """The NumPy dtype holding data of dtype `name` ('bfloat16': ml_dtypes' if installed, else uint16 bits)."""
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes  # optional: installed with JAX
    except ImportError:
        return np.dtype(np.uint16)
    return np.dtype(ml_dtypes.bfloat16)


def float32_values(a, dtype):
    """The values of array `a` holding half data of `dtype`, as float32 (exact; bfloat16 bits widened)."""
    a = np.asarray(a)
    if dtype == "bfloat16" and a.dtype.kind in "iu":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def float_values(a, dtype):
    """The values of array `a` holding `dtype` data, as float64 (bfloat16 bits widened exactly)."""
    return (float32_values(a, dtype) if dtype in HALF else np.asarray(a)).astype(np.float64)


def rounded(values, dtype):
    """float64 `values` as an array of `dtype` data (`numpy_dtype`), each rounded once to nearest even."""
    values = np.asarray(values, np.float64)
    if dtype != "bfloat16":
        with np.errstate(over="ignore"):  # (beyond the range: infinite, as rounding says)
            return values.astype(dtype)
    # through float32 rounded to odd (truncated, the last bit set if inexact): then one rounding of
    # the float32 bits to bfloat16 is that of the float64 value
    with np.errstate(over="ignore", invalid="ignore"):
        f = values.astype(np.float32)
        bits = f.view(np.uint32).copy()
        bits -= (np.abs(f.astype(np.float64)) > np.abs(values)).astype(np.uint32)
        bits |= (f.astype(np.float64) != values).astype(np.uint32)
    nan = np.isnan(values)
    out = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    out[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return out.view(numpy_dtype("bfloat16"))


@dataclasses.dataclass(slots=True)  # not frozen: a frozen init costs more than the call it describes
class Launch:
    program: object  # the optimized, target-independent ir.Program (reduces over j)
    dtype: str  # of the data: one of DTYPES
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
        return [np.empty(shape, dtype=numpy_dtype(self.output_dtype(kind))) for shape, kind in self.outputs]
