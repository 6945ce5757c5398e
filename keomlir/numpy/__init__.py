"""The NumPy front end, call-compatible with `pykeops.numpy`."""

from __future__ import annotations

import numpy as np

from .. import solve
from ..arrays import NUMPY
from ..calls import GenredBase, as_columns, batch_plan, generic_reductions, stack_batch
from ..lazy import ComplexMixin, GenericLazyTensor, make_variable_helpers
from ..solve import ConvergenceError  # noqa: F401

__all__ = ["Genred", "KernelSolve", "LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Var",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]


class Genred(GenredBase):
    """A generic reduction `Red_j F(x_i, y_j, p)` (axis=1) or `Red_i ...` (axis=0).

    >>> g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"],
    ...            reduction_op="Sum", axis=1)
    >>> out = g(x, y, b)          # (M, 1)

    With autotune=True (or a budget in seconds, default 20) the first call at each size class
    (log2 buckets of M and N) is slow: it measures candidate schedules on this machine and
    keeps the best for every later call of this program at such sizes (see keomlir.tune).
    """

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        arrays = []
        for k, a in enumerate(args):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a NumPy array, got {type(a).__name__}")
            arrays.append(a)
        arrays = as_columns(self.reduction, arrays)
        plan = batch_plan(self.reduction, [a.shape for a in arrays])
        if plan is not None:  # leading batch dimensions: one block-sparse call for the whole batch
            if ranges is not None:
                raise ValueError("ranges: block-sparse reductions with batch dimensions are not supported; "
                                 "call once per batch element")
            red = self.reduction
            recat, stacked, batch_ranges, unstack = stack_batch(red, plan, arrays, NUMPY)
            if recat:
                red = red.with_categories(recat, 0 if red.axis == 1 else 1)
            outs = unstack(red.run_numpy(stacked, backend, device_id=device_id, ranges=batch_ranges))
        else:
            outs = self.reduction.run_numpy(arrays, backend, device_id=device_id, ranges=ranges)
        if out is not None:
            if len(outs) != 1:
                raise ValueError(f"out: reduction {self.reduction.reduction_op} returns {len(outs)} outputs "
                                 "(a tuple); out= takes a single output array")
            if not isinstance(out, np.ndarray) or out.shape != outs[0].shape or out.dtype != outs[0].dtype:
                raise ValueError(f"out: expected an array of shape {outs[0].shape} and dtype {outs[0].dtype}")
            out[...] = outs[0]
            return out
        return outs[0] if len(outs) == 1 else tuple(outs)


# ---- KernelSolve and LazyTensor (keomlir/solve.py, keomlir/lazy/) over NumPy arrays and this Genred ------

class KernelSolve(solve.KernelSolve):
    """The NumPy KernelSolve (call-compatible with `pykeops.numpy.KernelSolve`); see keomlir.solve.

    >>> Kinv = KernelSolve("Exp(-g*SqDist(x,y)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"],
    ...                    "b", axis=1)
    >>> a = Kinv(x, x, b, g, alpha=0.01)       # (alpha Id + K_xx) a = b
    """

    genred_class = Genred


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of NumPy arrays; see keomlir.lazy.GenericLazyTensor."""

    _arrays = NUMPY
    genred_class = Genred
    kernel_solve_class = KernelSolve


class ComplexLazyTensor(ComplexMixin, LazyTensor):
    """A symbolic (M, N, D) tensor of complex NumPy arrays; see keomlir.lazy.complex."""


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
generic_sum, generic_logsumexp, generic_argmin, generic_argkmin = generic_reductions(Genred)
