"""The PyTorch front end, call-compatible with `pykeops.torch`: torch tensors
in and out, differentiable to any order.

The backward of a reduction is itself a set of keomlir reductions whose
formulas contain `Grad(...)`; the autodiff pass expands them and they run
through this same autograd Function, so double backward and beyond work.
"""

from __future__ import annotations

import torch

from ..calls import batch_plan, generic_reductions, run_batched
from ..compile import CompiledReduction, check_backend
from ..passes import DEFAULT_PIPELINE

__all__ = ["Genred", "KernelSolve", "LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Var",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]

_DIFFERENTIABLE = ("Sum", "LogSumExp", "SumSoftMaxWeight")
# reductions whose values are entries F_ij at selected j: differentiable through them
_SELECTING = ("Min", "Max", "Min_ArgMin", "Max_ArgMax", "KMin", "KMin_ArgKMin")


class Genred:
    """A generic reduction on torch tensors (see keomlir.numpy.Genred)."""

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
                 formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False, passes=DEFAULT_PIPELINE):
        if use_double_acc:
            dtype_acc = "float64"
        self.options = dict(dtype_acc=dtype_acc, sum_scheme=sum_scheme, passes=passes)
        self.reduction = CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2,
                                   dtype_acc, sum_scheme, passes)
        self._gradients = {}

    @property
    def program(self):
        return self.reduction.program

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None):
        for k, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a torch tensor, got {type(a).__name__}")
        check_backend(backend)
        _check_devices(self.reduction, args, backend)
        plan = batch_plan(self.reduction, [tuple(a.shape) for a in args])
        if plan is not None:  # leading batch dimensions: one plain call per batch element
            if ranges is not None:
                raise ValueError("ranges: block-sparse reductions with batch dimensions are not supported; "
                                 "call once per batch element")
            return run_batched(plan, args, lambda elements: self(*elements, backend=backend, device_id=device_id),
                               torch.stack)
        outs = _GenredFunction.apply(self, (backend, device_id, ranges), *args)
        return outs[0] if len(outs) == 1 else outs

    # ---- gradients ---------------------------------------------------------------
    def gradient(self, positions):
        """One Genred computing the vector-Jacobian products of the arguments at
        `positions` (which share the index reduced in backward) as one concatenated
        output: a fused kernel, one pass over the data.  Returns (genred, the extra
        arguments it takes: 'G' grad_output, 'O' output, 'L' log-normalizer, lse genred)."""
        found = self._gradients.get(positions)
        if found is None:
            found = self._gradients[positions] = self._build_gradient(positions)
        return found

    def pair_gradient(self):
        """For selecting reductions: a Genred of the vector-Jacobian product of F at
        one (i, j) pair per row, all variables of the reduced index made row-indexed
        (the caller gathers their selected rows and scatters the gradients back)."""
        found = self._gradients.get("pair")
        if found is None:
            from ..grammar import parse_alias

            red = self.reduction
            reduced = 1 if red.axis == 1 else 0
            aliases = []
            for k, text in enumerate(red.aliases):
                name, var = parse_alias(text, k)
                pos, dim, cat = var.attrs
                aliases.append(f"{name} = Var({pos},{dim},{1 - reduced if cat == reduced else cat})")
            n = len(red.arguments)
            kept_cats = [(p, d, 1 - reduced if c == reduced else c) for p, d, c in red.arguments]
            F = f"({red.formula})"
            dim_f = red.parsed.formula.dim
            parts = [f"Grad({F}, Var({p},{d},{c}), Var({n},{dim_f},{1 - reduced}))" for p, d, c in kept_cats]
            formula = parts[0]
            for part in parts[1:]:
                formula = f"Concat({formula}, {part})"
            found = self._gradients["pair"] = Genred(formula, aliases, "Sum", red.axis, **self.options)
        return found

    def declared_aliases(self):
        """The aliases, plus one for every argument only written inline, so that a Genred
        of part of the formulas still takes every argument."""
        red = self.reduction
        named = {p for (p, _, _), _ in red.parsed.names}
        extra = [f"_arg{p} = Var({p},{d},{c})" for p, d, c in red.arguments if p not in named]
        return list(red.aliases) + extra

    def grad_axis(self, pos):
        red = self.reduction
        out_cat = 0 if red.axis == 1 else 1
        return 1 - red.axis if red.arguments[pos][2] == 1 - out_cat else red.axis

    def _build_gradient(self, positions):
        red = self.reduction
        name = red.reduction_op
        if name not in _DIFFERENTIABLE:
            raise NotImplementedError(f"reduction {name} has no gradient in this version of keomlir")
        n = len(red.arguments)
        out_cat = 0 if red.axis == 1 else 1
        F = f"({red.formula})"
        F2 = f"({red.formula2})" if red.formula2 is not None else None
        dim_f = red.parsed.formula.dim
        dim_g = red.parsed.formula2.dim if red.parsed.formula2 is not None else None

        def vjp(V):
            if name == "Sum":
                return f"Grad({F}, {V}, Var({n},{dim_f},{out_cat}))"
            if name == "LogSumExp" and F2 is None:
                return f"Grad({F}, {V}, Exp({F} - Var({n + 1},1,{out_cat})) * Var({n},1,{out_cat}))"
            G, O = f"Var({n},{dim_g},{out_cat})", f"Var({n + 1},{dim_g},{out_cat})"
            if name == "LogSumExp":
                W = f"(Exp({F} - {O}) * {G})"
                return f"Grad({F}, {V}, ({W} | {F2})) + Grad({F2}, {V}, {W})"
            # SumSoftMaxWeight: p_ij = exp(F_ij - L_i), dO = Σ_j p (dG + (G - O) dF)
            P = f"Exp({F} - Var({n + 2},1,{out_cat}))"
            return f"Grad({F}, {V}, {P} * ({G} | {F2} - {O})) + Grad({F2}, {V}, {P} * {G})"

        parts = [vjp("Var({},{},{})".format(*red.arguments[pos])) for pos in positions]
        formula = parts[0]
        for part in parts[1:]:
            formula = f"Concat({formula}, {part})"
        extras = {"Sum": ["G"], "LogSumExp": ["G", "O"], "SumSoftMaxWeight": ["G", "O", "L"]}[name]
        aliases = self.declared_aliases()
        genred = Genred(formula, aliases, "Sum", self.grad_axis(positions[0]), **self.options)
        lse = Genred(red.formula, aliases, "LogSumExp", red.axis, **self.options) if "L" in extras else None
        return genred, extras, lse


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


class _GenredFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, genred, call, *args):
        """call = (backend, device_id, ranges): how to run, passed on to the gradients."""
        backend, device_id, ranges = call
        if args and args[0].device.type == "cuda":
            from ..backends import cuda

            results = tuple(cuda.run_torch(genred.reduction, args, device_id, ranges=ranges))
        else:
            arrays = [a.detach().contiguous().numpy() for a in args]
            outs = genred.reduction.run_numpy(arrays, backend, device_id, ranges)
            results = tuple(torch.from_numpy(o) for o in outs)
        ctx.genred, ctx.backend, ctx.ranges = genred, backend, ranges
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
        if genred.reduction.reduction_op in _SELECTING:
            return (None, None, *_selected_backward(genred, args, results, grad_outputs[0], ctx.backend,
                                                    ctx.ranges))
        wanted = [pos for pos in range(ctx.n_args) if ctx.needs_input_grad[2 + pos]]
        groups = {}
        for pos in wanted:  # arguments whose gradients reduce over the same index: one kernel
            groups.setdefault(genred.grad_axis(pos), []).append(pos)
        grads = [None] * ctx.n_args
        lse_value = None
        for positions in groups.values():
            grad_genred, extras, lse = genred.gradient(tuple(positions))
            values = {"G": grad_outputs[0], "O": results[0]}
            if lse is not None:
                lse_value = lse(*args, backend=ctx.backend, ranges=ctx.ranges) if lse_value is None else lse_value
                values["L"] = lse_value
            fused = grad_genred(*args, *[values[e] for e in extras], backend=ctx.backend, ranges=ctx.ranges)
            start = 0
            for pos in positions:
                _, dim, cat = genred.reduction.arguments[pos]
                g = fused[:, start:start + dim]
                start += dim
                if cat == 2:  # a parameter: summed over both indices
                    g = g.sum(0).reshape(args[pos].shape)
                grads[pos] = g
        return (None, None, *grads)


def _selected_backward(genred, args, results, grad_out, backend, ranges):
    """Gradients of Min/Max/KMin values: the derivative of F at the selected (i, j)
    pairs, as torch does for min and topk; each selected slot and component is one
    call of the pair kernel on gathered rows.  Slots with no j (index -1: an empty
    block-sparse row, or fewer j than K) have no gradient."""
    red = genred.reduction
    reduced = 1 if red.axis == 1 else 0
    values, indices = results[0], results[-1]
    if indices.dtype != torch.int64:  # Min / Max / KMin alone: recompute the indices
        arg_name = {"Min": "ArgMin", "Max": "ArgMax", "KMin": "ArgKMin"}[red.reduction_op]
        key = ("indices", arg_name)
        if key not in genred._gradients:
            genred._gradients[key] = Genred(red.formula, genred.declared_aliases(), arg_name, red.axis,
                                            opt_arg=red.opt_arg, **genred.options)
        indices = genred._gradients[key](*args, backend=backend, ranges=ranges)
    rows, dim_f = values.shape[0], red.parsed.formula.dim
    idx = indices.reshape(rows, -1, dim_f)
    gout = grad_out.reshape(rows, -1, dim_f)
    pair = genred.pair_gradient()
    grads = [torch.zeros_like(a) for a in args]
    for slot in range(idx.shape[1]):
        for c in range(dim_f):
            sel = idx[:, slot, c]
            found = sel >= 0
            sel = sel.clamp(min=0)
            gathered = [a[sel] if cat == reduced else a for a, (_, _, cat) in zip(args, red.arguments)]
            cot = torch.zeros(rows, dim_f, dtype=values.dtype, device=values.device)
            cot[:, c] = torch.where(found, gout[:, slot, c], torch.zeros((), dtype=values.dtype, device=values.device))
            fused = pair(*gathered, cot, backend=backend)
            fused = torch.where(found[:, None], fused, torch.zeros((), dtype=fused.dtype, device=fused.device))
            start = 0
            for k, (_, dim, cat) in enumerate(red.arguments):
                g = fused[:, start:start + dim]
                start += dim
                if cat == reduced:
                    grads[k] = grads[k].index_add(0, sel, g)
                elif cat == 2:
                    grads[k] = grads[k] + g.sum(0).reshape(args[k].shape)
                else:
                    grads[k] = grads[k] + g
    return grads


# ---- LazyTensor and KernelSolve (keomlir/lazy.py, keomlir/solve.py) ------------------------------
from ..lazy import TORCH_TOOLS, GenericLazyTensor, make_variable_helpers  # noqa: E402
from ..lazy_complex import ComplexMixin  # noqa: E402
from ..solve import ConvergenceError, TorchKernelSolve as KernelSolve  # noqa: E402,F401


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of torch arrays; see keomlir.lazy.GenericLazyTensor."""

    _tools = TORCH_TOOLS


class ComplexLazyTensor(ComplexMixin, LazyTensor):
    """A symbolic (M, N, D) tensor of complex torch tensors; see keomlir.lazy_complex."""


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
generic_sum, generic_logsumexp, generic_argmin, generic_argkmin = generic_reductions(Genred)
