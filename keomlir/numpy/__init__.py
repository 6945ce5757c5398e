"""The NumPy front end, call-compatible with `pykeops.numpy`."""

from __future__ import annotations

import numpy as np

from .. import solve
from ..arrays import NUMPY
from ..calls import batch_plan, generic_reductions, stack_batch
from ..compile import CompiledReduction
from ..lazy import ComplexMixin, GenericLazyTensor, make_variable_helpers
from ..passes import DEFAULT_PIPELINE
from ..solve import ConvergenceError  # noqa: F401

__all__ = ["Genred", "KernelSolve", "LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Var",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]


class Genred:
    """A generic reduction `Red_j F(x_i, y_j, p)` (axis=1) or `Red_i ...` (axis=0).

    >>> g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"],
    ...            reduction_op="Sum", axis=1)
    >>> out = g(x, y, b)          # (M, 1)
    """

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
                 formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False, passes=DEFAULT_PIPELINE):
        # dtype, cuda_type, enable_chunks and rec_multVar_highdim are accepted for pykeops
        # compatibility: the dtype comes from the arguments at call time.
        if use_double_acc:
            dtype_acc = "float64"
        self._set_reduction(CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2,
                                              dtype_acc, sum_scheme, passes))

    @classmethod
    def from_ir(cls, formula, formula2=None, reduction_op="Sum", axis=0, opt_arg=None, names=None,
                dtype_acc="auto", sum_scheme="auto", passes=DEFAULT_PIPELINE):
        """A Genred of IR nodes (see CompiledReduction.from_ir): for code that builds
        formulas (LazyTensor, KernelSolve, gradients) instead of writing text."""
        self = cls.__new__(cls)
        self._set_reduction(CompiledReduction.from_ir(formula, formula2, reduction_op, axis, opt_arg, names,
                                                      dtype_acc, sum_scheme, passes))
        return self

    def _set_reduction(self, reduction):
        self.reduction = reduction

    @property
    def program(self):
        """The optimized IR this Genred compiles."""
        return self.reduction.program

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        arrays = []
        for k, a in enumerate(args):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a NumPy array, got {type(a).__name__}")
            arrays.append(a)
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
