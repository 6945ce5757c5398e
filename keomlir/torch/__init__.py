"""The PyTorch front end, call-compatible with `pykeops.torch`: torch tensors
in and out, differentiable to any order.

The backward of a reduction is itself a set of keomlir reductions whose
formulas contain `Grad(...)`; the autodiff pass expands them and they run
through this same autograd Function, so double backward and beyond work.
Every call runs the custom operator `keomlir::genred` (`ops.py`), so
`torch.compile` sees one opaque operator per reduction.
"""

from __future__ import annotations

import torch

from ..arrays import TORCH
from ..calls import GenredBase, as_columns, batch_plan, generic_reductions, stack_batch
from ..compile import check_backend
from ..ir import make
from ..lazy import ComplexMixin, GenericLazyTensor, make_variable_helpers
from ..lazy.reductions import genred_spec, solver_genred_spec
from ..solve import ConvergenceError  # noqa: F401
from . import ops
from .derivatives import Derivatives, GenredFunction
from .solve import TorchKernelSolve

__all__ = ["Genred", "KernelSolve", "LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Var",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]

class Genred(GenredBase):
    """A generic reduction on torch tensors (see keomlir.numpy.Genred).  With autotune=True, the
    first CPU call at each size class is slow: it tunes the schedule (see keomlir.tune)."""

    def _set_reduction(self, reduction):
        self.reduction = reduction
        self.derivatives = Derivatives(Genred, reduction)
        ops.GENREDS.add(self, reduction.spec)

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        result = self._call(args, backend, device_id, ops.ranges_tensors(ranges))
        return result if out is None else _write_out(self.reduction, result, out)

    def _call(self, args, backend, device_id, ranges):
        for k, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a torch tensor, got {type(a).__name__}")
        backend = check_backend(backend)
        args = as_columns(self.reduction, args)
        _check_devices(self.reduction, args, backend)
        plan = batch_plan(self.reduction, [tuple(a.shape) for a in args])
        if plan is not None:  # leading batch dimensions: one block-sparse call for the whole batch
            if ranges is not None:
                raise ValueError("ranges: block-sparse reductions with batch dimensions are not supported; "
                                 "call once per batch element")
            recat, stacked, batch_ranges, unstack = stack_batch(self.reduction, plan, args, TORCH)
            outs = self._with_categories(recat)._call(stacked, backend, device_id, ops.ranges_tensors(batch_ranges))
            outs = unstack(outs if isinstance(outs, tuple) else (outs,))
            return outs[0] if len(outs) == 1 else tuple(outs)
        if self.reduction.autotune and backend != "GPU" and args and args[0].device.type == "cpu" and \
                not torch.compiler.is_compiling():  # (the operator may run another Genred of this program)
            self.reduction.tune_call(args, ranges)
        if torch.compiler.is_compiling():  # Dynamo traces the operator (its backward: register_autograd)
            outs = tuple(ops.genred(self.reduction.spec, list(args), backend, device_id, ranges or []))
        else:  # eager: the operator inside an autograd Function, which adds forward mode and vmap rules
            outs = GenredFunction.apply(self, (backend, device_id, ranges), *args)
        return outs[0] if len(outs) == 1 else outs

    def _with_categories(self, positions):
        """This Genred with the parameters at `positions` made output-index variables
        (a batched call's parameters that vary over the batch); cached."""
        if not positions:
            return self
        if torch.compiler.is_compiling():
            return _traced_genred(self.reduction.spec, positions)

        def build():
            genred = Genred.__new__(Genred)
            genred._set_reduction(self.reduction.with_categories(positions, 0 if self.reduction.axis == 1 else 1))
            return genred

        return self.derivatives.once(("categories", positions), build)


def _write_out(reduction, result, out):
    """pykeops's `out=`: the result written into a given tensor, which is returned.  As
    torch's own out= arguments, not differentiable."""
    if isinstance(result, tuple):
        raise ValueError(f"out: reduction {reduction.reduction_op} returns {len(result)} outputs (a tuple); "
                         "out= takes a single output tensor")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a torch tensor, got {type(out).__name__}")
    if out.shape != result.shape or out.dtype != result.dtype or out.device != result.device:
        raise ValueError(f"out: expected a tensor of shape {tuple(result.shape)}, dtype {result.dtype} on "
                         f"{result.device}, got shape {tuple(out.shape)}, dtype {out.dtype} on {out.device}")
    if result.requires_grad:
        raise RuntimeError("out=: the result would need a gradient, and out= arguments are not differentiable "
                           "(as in torch): call it under torch.no_grad() or without out=")
    return out.copy_(result)


def _check_devices(reduction, args, backend):
    """CUDA tensors run on the GPU backend, in place; CPU and CUDA tensors do not mix."""
    devices = {a.device for a in args}
    if all(d.type == "cpu" for d in devices):
        return
    if len(devices) > 1:
        detail = ", ".join(f"{reduction.arg_label(k)} is on {a.device}" for k, a in enumerate(args))
        raise ValueError(f"all tensors must be on one device: {detail}")
    device = devices.pop()
    if device.type != "cuda":
        raise ValueError(f"{reduction.arg_label(0)}: tensors on {device} are not supported; use CPU or CUDA tensors")
    if backend not in ("auto", "GPU"):
        raise ValueError(f"backend={backend!r} cannot run tensors on {device}: use backend='auto' or 'GPU', "
                         "or move the tensors to the CPU")


# ---- KernelSolve and LazyTensor (keomlir/solve.py, keomlir/lazy/) over torch tensors and this Genred ------

class KernelSolve(TorchKernelSolve):
    """The torch KernelSolve (call-compatible with `pykeops.torch.KernelSolve`),
    differentiable with respect to every tensor argument and to alpha (a tensor)."""

    genred_class = Genred


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of torch arrays; see keomlir.lazy.GenericLazyTensor."""

    _arrays = TORCH
    genred_class = Genred
    kernel_solve_class = KernelSolve

    @classmethod
    def _genred(cls, formula, formula2, op, axis, opt_arg, init):
        if torch.compiler.is_compiling():  # Dynamo traces the tree and its IR, not the Genred's construction
            return _traced_genred(genred_spec(formula, formula2, op, axis, opt_arg, init))
        return super()._genred(formula, formula2, op, axis, opt_arg, init)


    @classmethod
    def _solver(cls, formula, unknown, axis, init):
        if torch.compiler.is_compiling():
            name = _pinned_solver(solver_genred_spec(formula, axis, init), unknown.attrs, axis)
            return getattr(ops.SOLVERS.pins, name)
        return super()._solver(formula, unknown, axis, init)


def _traced_genred(spec, positions=()):
    """Under Dynamo: the Genred of `spec` (made a batched variant by `positions`, see
    `Genred._with_categories`), built outside the trace and read from the registry's
    pins, which Dynamo guards."""
    return getattr(ops.GENREDS.pins, _pinned_genred(spec, positions))


@torch.compiler.assume_constant_result
def _pinned_genred(spec, positions):
    """Run by Dynamo, not traced (it does not trace compilers): the name of the pinned Genred."""
    genred = ops.GENREDS.lookup(spec)
    if positions:
        genred = genred._with_categories(positions)
    return ops.GENREDS.pin(genred, genred.reduction.spec)


@torch.compiler.assume_constant_result
def _pinned_solver(genred_spec, unknown, axis):
    """As `_pinned_genred`, for the KernelSolve of LazyTensor.solve (its Sum reduction's spec,
    the unknown's Var attributes, the axis)."""
    solver = KernelSolve.from_genred(ops.GENREDS.lookup(genred_spec), make("Var", (), unknown), axis)
    return ops.SOLVERS.pin(ops.SOLVERS.lookup(solver.core.spec), solver.core.spec)


class ComplexLazyTensor(ComplexMixin, LazyTensor):
    """A symbolic (M, N, D) tensor of complex torch tensors; see keomlir.lazy.complex."""


ops.GENREDS.build = Genred.from_spec
ops.SOLVERS.build = KernelSolve.from_spec
Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
generic_sum, generic_logsumexp, generic_argmin, generic_argkmin = generic_reductions(Genred)
