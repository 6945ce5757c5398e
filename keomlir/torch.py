"""The PyTorch front end, call-compatible with `pykeops.torch`: torch tensors
in and out, differentiable to any order.

The backward of a reduction is itself a set of keomlir reductions whose
formulas contain `Grad(...)`; the autodiff pass expands them and they run
through this same autograd Function, so double backward and beyond work.
"""

from __future__ import annotations

import torch

from .frontend import Reduction, check_backend
from .passes import DEFAULT_PIPELINE

__all__ = ["Genred"]

_DIFFERENTIABLE = ("Sum", "LogSumExp", "SumSoftMaxWeight")


class Genred:
    """A generic reduction on torch tensors (see keomlir.numpy.Genred)."""

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
                 formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False, passes=DEFAULT_PIPELINE):
        if use_double_acc:
            dtype_acc = "float64"
        self.options = dict(dtype_acc=dtype_acc, sum_scheme=sum_scheme, passes=passes)
        self.reduction = Reduction(formula, aliases, reduction_op, axis, opt_arg, formula2,
                                   dtype_acc, sum_scheme, passes)
        self._gradients = {}

    @property
    def program(self):
        return self.reduction.program

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None):
        if ranges is not None:
            raise ValueError("ranges: block-sparse reductions are not supported yet; pass ranges=None")
        for k, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a torch tensor, got {type(a).__name__}")
            if a.device.type != "cpu":
                raise ValueError(f"{self.reduction.arg_label(k)}: tensors on {a.device} need the GPU backend, "
                                 "which is not available in this version of keomlir")
        check_backend(backend)
        outs = _GenredFunction.apply(self, backend, *args)
        return outs[0] if len(outs) == 1 else outs

    # ---- gradients ---------------------------------------------------------------
    def gradient(self, pos):
        """The Genred computing the vector-Jacobian product for argument `pos`, and how
        to call it: extra argument names in order ('G' grad_output, 'O' output, 'L' lse)."""
        found = self._gradients.get(pos)
        if found is None:
            found = self._gradients[pos] = self._build_gradient(pos)
        return found

    def _build_gradient(self, pos):
        red = self.reduction
        name = red.reduction_op
        if name not in _DIFFERENTIABLE:
            raise NotImplementedError(f"reduction {name} has no gradient in this version of keomlir")
        n = len(red.arguments)
        _, dim, cat = red.arguments[pos]
        out_cat = 0 if red.axis == 1 else 1
        F = f"({red.formula})"
        V = f"Var({pos},{dim},{cat})"
        dim_f = red.parsed.formula.dim
        dim_g = red.parsed.formula2.dim if red.parsed.formula2 is not None else None
        if name == "Sum":
            formula, extras = f"Grad({F}, {V}, Var({n},{dim_f},{out_cat}))", ["G"]
        elif name == "LogSumExp" and red.formula2 is None:
            G, O = f"Var({n},1,{out_cat})", f"Var({n + 1},1,{out_cat})"
            formula, extras = f"Grad({F}, {V}, Exp({F} - {O}) * {G})", ["G", "O"]
        elif name == "LogSumExp":
            F2 = f"({red.formula2})"
            G, O = f"Var({n},{dim_g},{out_cat})", f"Var({n + 1},{dim_g},{out_cat})"
            W = f"(Exp({F} - {O}) * {G})"
            formula, extras = f"Grad({F}, {V}, ({W} | {F2})) + Grad({F2}, {V}, {W})", ["G", "O"]
        else:  # SumSoftMaxWeight: p_ij = exp(F_ij - L_i), dO = Σ_j p (dG + (G - O) dF)
            F2 = f"({red.formula2})"
            G, O, L = (f"Var({n},{dim_g},{out_cat})", f"Var({n + 1},{dim_g},{out_cat})",
                       f"Var({n + 2},1,{out_cat})")
            P = f"Exp({F} - {L})"
            formula = f"Grad({F}, {V}, {P} * ({G} | {F2} - {O})) + Grad({F2}, {V}, {P} * {G})"
            extras = ["G", "O", "L"]
        grad_axis = 1 - red.axis if cat == 1 - out_cat else red.axis
        genred = Genred(formula, list(red.aliases), "Sum", grad_axis, **self.options)
        lse = Genred(red.formula, list(red.aliases), "LogSumExp", red.axis, **self.options) if "L" in extras else None
        return genred, extras, lse


class _GenredFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, genred, backend, *args):
        arrays = [a.detach().contiguous().numpy() for a in args]
        outs = genred.reduction.run_numpy(arrays, backend)
        results = tuple(torch.from_numpy(o) for o in outs)
        ctx.genred, ctx.backend = genred, backend
        ctx.save_for_backward(*args, *results)
        ctx.n_args = len(args)
        for r in results:
            if not r.dtype.is_floating_point:
                ctx.mark_non_differentiable(r)
        return results

    @staticmethod
    def backward(ctx, *grad_outputs):
        genred = ctx.genred
        saved = ctx.saved_tensors
        args, results = saved[:ctx.n_args], saved[ctx.n_args:]
        grads = [None] * ctx.n_args
        for pos in range(ctx.n_args):
            if not ctx.needs_input_grad[2 + pos]:
                continue
            grad_genred, extras, lse = genred.gradient(pos)
            values = {"G": grad_outputs[0], "O": results[0]}
            if lse is not None:
                values["L"] = lse(*args, backend=ctx.backend)
            g = grad_genred(*args, *[values[e] for e in extras], backend=ctx.backend)
            if genred.reduction.arguments[pos][2] == 2:  # a parameter: summed over both indices
                g = g.sum(0).reshape(args[pos].shape)
            grads[pos] = g
        return (None, None, *grads)
