"""The PyTorch front end, call-compatible with `pykeops.torch`: torch tensors
in and out, differentiable to any order.

The backward of a reduction is itself a set of keomlir reductions whose
formulas contain `Grad(...)`; the autodiff pass expands them and they run
through this same autograd Function, so double backward and beyond work.
"""

from __future__ import annotations

import torch

from ..arrays import TORCH
from ..backends import cuda
from ..calls import batch_plan, generic_reductions, stack_batch
from ..compile import CompiledReduction, check_backend
from ..ir import make, replace_vars
from ..ir.ops.base import mk
from ..lazy import ComplexMixin, GenericLazyTensor, make_variable_helpers
from ..passes import DEFAULT_PIPELINE
from ..solve import ConvergenceError  # noqa: F401
from .solve import TorchKernelSolve

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
        self._gradients = {}

    @property
    def program(self):
        return self.reduction.program

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None, out=None):
        result = self._call(args, backend, device_id, ranges)
        return result if out is None else _write_out(self.reduction, result, out)

    def _call(self, args, backend, device_id, ranges):
        for k, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{self.reduction.arg_label(k)}: expected a torch tensor, got {type(a).__name__}")
        check_backend(backend)
        _check_devices(self.reduction, args, backend)
        plan = batch_plan(self.reduction, [tuple(a.shape) for a in args])
        if plan is not None:  # leading batch dimensions: one block-sparse call for the whole batch
            if ranges is not None:
                raise ValueError("ranges: block-sparse reductions with batch dimensions are not supported; "
                                 "call once per batch element")
            recat, stacked, batch_ranges, unstack = stack_batch(self.reduction, plan, args, TORCH)
            outs = self._with_categories(recat)._call(stacked, backend, device_id, batch_ranges)
            outs = unstack(outs if isinstance(outs, tuple) else (outs,))
            return outs[0] if len(outs) == 1 else tuple(outs)
        outs = _GenredFunction.apply(self, (backend, device_id, ranges), *args)
        return outs[0] if len(outs) == 1 else outs

    def _with_categories(self, positions):
        """This Genred with the parameters at `positions` made output-index variables
        (a batched call's parameters that vary over the batch); cached."""
        if not positions:
            return self
        key = ("categories", positions)
        found = self._gradients.get(key)
        if found is None:
            red = self.reduction
            found = self._gradients[key] = Genred.__new__(Genred)
            found._set_reduction(red.with_categories(positions, 0 if red.axis == 1 else 1))
        return found

    # ---- gradients: keomlir reductions built as IR -----------------------------------
    def _derived(self, formula, reduction_op, axis, opt_arg=None, recat=None):
        """A Genred of another formula over this one's arguments (their categories
        changed by `recat(pos, dim, cat)` if given), with this one's options."""
        red = self.reduction
        names = red.argument_vars()
        if recat is not None:
            names = {k: _var(*recat(*v.attrs)) for k, v in names.items()}
        return Genred.from_ir(formula, None, reduction_op, axis, opt_arg, names, **red.options)

    def pullback(self, args, output, grad_output, wanted, backend="auto", ranges=None):
        """{position: vector-Jacobian product of the output along `grad_output`} for the
        arguments at `wanted`: one fused kernel per reduced index (`output` is read by
        LogSumExp and SumSoftMaxWeight only)."""
        groups = {}
        for pos in wanted:  # arguments whose gradients reduce over the same index: one kernel
            groups.setdefault(self.grad_axis(pos), []).append(pos)
        grads, lse_value = {}, None
        for positions in groups.values():
            grad_genred, extras, lse = self.gradient(tuple(positions))
            values = {"G": grad_output, "O": output}
            if lse is not None:
                lse_value = lse(*args, backend=backend, ranges=ranges) if lse_value is None else lse_value
                values["L"] = lse_value
            fused = grad_genred(*args, *[values[e] for e in extras], backend=backend, ranges=ranges)
            start = 0
            for pos in positions:
                _, dim, cat = self.reduction.arguments[pos]
                g = fused[:, start:start + dim]
                start += dim
                if cat == 2:  # a parameter: summed over both indices
                    g = g.sum(0).reshape(args[pos].shape)
                grads[pos] = g
        return grads

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
            red = self.reduction
            reduced = 1 if red.axis == 1 else 0

            def kept(pos, dim, cat):
                return pos, dim, 1 - reduced if cat == reduced else cat

            F = replace_vars(red.formula, kept)
            E = _var(len(red.arguments), red.formula.dim, 1 - reduced)
            formula = _concat([mk("Grad", F, E, attrs=(_var(*kept(*a)),)) for a in red.arguments])
            found = self._gradients["pair"] = self._derived(formula, "Sum", red.axis, recat=kept)
        return found

    def pair_tangent(self):
        """For selecting reductions in forward mode: a Genred of the derivative of F along
        every argument's tangent (tangents after the arguments) at one (i, j) pair per row,
        the reduced index's variables and tangents made row-indexed."""
        found = self._gradients.get("pair_jvp")
        if found is None:
            red = self.reduction
            reduced = 1 if red.axis == 1 else 0
            n = len(red.arguments)

            def kept(pos, dim, cat):
                return pos, dim, 1 - reduced if cat == reduced else cat

            F = replace_vars(red.formula, kept)
            formula = None
            for p, d, c in red.arguments:
                term = mk("Diff", F, _var(n + p, d, kept(p, d, c)[2]), attrs=(_var(*kept(p, d, c)),))
                formula = term if formula is None else mk("Add", formula, term)
            found = self._gradients["pair_jvp"] = self._derived(formula, "Sum", red.axis, recat=kept)
        return found

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
        F, F2 = red.formula, red.formula2

        def grad(f, v, e):
            return mk("Grad", f, e, attrs=(v,))

        def vjp(V):
            if name == "Sum":
                return grad(F, V, _var(n, F.dim, out_cat))
            if name == "LogSumExp" and F2 is None:
                return grad(F, V, mk("Mult", mk("Exp", mk("Subtract", F, _var(n + 1, 1, out_cat))),
                                     _var(n, 1, out_cat)))
            G, O = _var(n, F2.dim, out_cat), _var(n + 1, F2.dim, out_cat)
            if name == "LogSumExp":
                W = mk("Mult", mk("Exp", mk("Subtract", F, O)), G)
                return mk("Add", grad(F, V, mk("Scalprod", W, F2)), grad(F2, V, W))
            # SumSoftMaxWeight: p_ij = exp(F_ij - L_i), dO = sum_j p (dG + (G - O) dF)
            P = mk("Exp", mk("Subtract", F, _var(n + 2, 1, out_cat)))
            return mk("Add", grad(F, V, mk("Mult", P, mk("Scalprod", G, mk("Subtract", F2, O)))),
                      grad(F2, V, mk("Mult", P, G)))

        formula = _concat([vjp(_var(*red.arguments[pos])) for pos in positions])
        extras = {"Sum": ["G"], "LogSumExp": ["G", "O"], "SumSoftMaxWeight": ["G", "O", "L"]}[name]
        genred = self._derived(formula, "Sum", self.grad_axis(positions[0]))
        lse = self._derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse

    # ---- forward mode (torch.func.jvp / jacfwd): keomlir reductions of Diff(...) -------------
    def tangent(self, positions):
        """One Genred computing the directional derivative of the output along the
        tangents of the arguments at `positions` (tangents are new variables of the same
        categories, after the arguments): Diff nodes expanded by the autodiff pass.
        Returns (genred, extras taken after the tangents: 'O' output, 'L' log-normalizer, lse)."""
        key = ("jvp", positions)
        found = self._gradients.get(key)
        if found is None:
            found = self._gradients[key] = self._build_tangent(positions)
        return found

    def _build_tangent(self, positions):
        red = self.reduction
        name = red.reduction_op
        if name not in _DIFFERENTIABLE:
            raise NotImplementedError(f"reduction {name} has no forward-mode derivative in this version of keomlir")
        n = len(red.arguments)
        out_cat = 0 if red.axis == 1 else 1
        F, F2 = red.formula, red.formula2
        tangents = [(_var(*red.arguments[pos]), _var(n + k, *red.arguments[pos][1:]))
                    for k, pos in enumerate(positions)]

        def diff(f):  # the derivative of f along every tangent
            out = None
            for v, t in tangents:
                d = mk("Diff", f, t, attrs=(v,))
                out = d if out is None else mk("Add", out, d)
            return out

        extra = n + len(positions)
        if name == "Sum":
            formula, extras = diff(F), []
        elif name == "LogSumExp" and F2 is None:  # d log sum_j e^F = sum_j e^(F - O) dF
            formula, extras = mk("Mult", mk("Exp", mk("Subtract", F, _var(extra, 1, out_cat))), diff(F)), ["O"]
        elif name == "LogSumExp":  # O = log sum_j e^F G: dO = sum_j e^(F - O) (dF G + dG)
            O = _var(extra, F2.dim, out_cat)
            formula = mk("Mult", mk("Exp", mk("Subtract", F, O)), mk("Add", mk("Mult", diff(F), F2), diff(F2)))
            extras = ["O"]
        else:  # SumSoftMaxWeight, p = e^(F - L): dO = sum_j p (dG + (G - O) dF)
            O, L = _var(extra, F2.dim, out_cat), _var(extra + 1, 1, out_cat)
            formula = mk("Mult", mk("Exp", mk("Subtract", F, L)),
                         mk("Add", diff(F2), mk("Mult", mk("Subtract", F2, O), diff(F))))
            extras = ["O", "L"]
        genred = self._derived(formula, "Sum", red.axis)
        lse = self._derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse


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


def _var(pos, dim, cat):
    return make("Var", (), (pos, dim, cat))


def _concat(parts):
    out = parts[0]
    for part in parts[1:]:
        out = mk("Concat", out, part)
    return out


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
    """A keomlir reduction as a torch operation: reverse mode (`backward`), forward mode
    (`jvp`) and `vmap` rules, so torch.autograd and torch.func's transforms (grad, vjp,
    jvp, jacrev, jacfwd, hessian, vmap) all run as keomlir reductions."""

    @staticmethod
    def forward(genred, call, *args):
        """call = (backend, device_id, ranges): how to run, passed on to the derivatives."""
        backend, device_id, ranges = call
        if args and args[0].device.type == "cuda":
            return tuple(cuda.run_torch(genred.reduction.launch(args, ranges), args, device_id))
        arrays = [a.detach().contiguous().numpy() for a in args]
        outs = genred.reduction.run_numpy(arrays, backend, device_id, ranges)
        return tuple(torch.from_numpy(o) for o in outs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        genred, (backend, _, ranges), *args = inputs
        ctx.genred, ctx.backend, ctx.ranges = genred, backend, ranges
        ctx.save_for_backward(*args, *output)
        ctx.save_for_forward(*args, *output)
        ctx.n_args = len(args)
        for r in output:
            if not r.dtype.is_floating_point:
                ctx.mark_non_differentiable(r)

    @staticmethod
    def jvp(ctx, genred_tangent, call_tangent, *tangents):
        genred, saved = ctx.genred, ctx.saved_tensors
        args, results = saved[:ctx.n_args], saved[ctx.n_args:]
        if genred.reduction.reduction_op in _SELECTING:
            value = _selected_jvp(genred, args, results, tangents, ctx.backend, ctx.ranges)
            return (value,) + (None,) * (len(results) - 1)
        positions = tuple(pos for pos, t in enumerate(tangents) if t is not None)
        if not positions:
            return (torch.zeros_like(results[0]),)
        tangent_genred, extras, lse = genred.tangent(positions)
        values = {"O": results[0]}
        if lse is not None:
            values["L"] = lse(*args, backend=ctx.backend, ranges=ctx.ranges)
        value = tangent_genred(*args, *[tangents[p] for p in positions], *[values[e] for e in extras],
                               backend=ctx.backend, ranges=ctx.ranges)
        return (value,)

    @staticmethod
    def vmap(info, in_dims, genred, call, *args):
        """A batch of calls as one call with a leading batch dimension (keomlir's batch
        dimensions); unbatched arguments are broadcast views."""
        backend, device_id, ranges = call
        dims = in_dims[2:]
        batched = [a.movedim(d, 0) if d is not None else a.expand(info.batch_size, *a.shape)
                   for a, d in zip(args, dims)]
        if ranges is None:
            outs = genred(*batched, backend=backend, device_id=device_id)
            outs = outs if isinstance(outs, tuple) else (outs,)
        else:  # block-sparse calls (a batched call's own, under an outer transform): one call per element
            each = [genred(*[a[k] for a in batched], backend=backend, device_id=device_id, ranges=ranges)
                    for k in range(info.batch_size)]
            each = [e if isinstance(e, tuple) else (e,) for e in each]
            outs = tuple(torch.stack([e[k] for e in each]) for k in range(len(each[0])))
        return outs, (0,) * len(outs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        genred = ctx.genred
        saved = ctx.saved_tensors
        args, results = saved[:ctx.n_args], saved[ctx.n_args:]
        if genred.reduction.reduction_op in _SELECTING:
            return (None, None, *_selected_backward(genred, args, results, grad_outputs[0], ctx.backend,
                                                    ctx.ranges))
        wanted = [pos for pos in range(ctx.n_args) if ctx.needs_input_grad[2 + pos]]
        found = genred.pullback(args, results[0], grad_outputs[0], wanted, ctx.backend, ctx.ranges)
        return (None, None, *[found.get(pos) for pos in range(ctx.n_args)])


def _selected_indices(genred, args, results, backend, ranges):
    """The int64 indices a selecting reduction chose (recomputed for Min / Max / KMin alone)."""
    red = genred.reduction
    indices = results[-1]
    if indices.dtype != torch.int64:
        arg_name = {"Min": "ArgMin", "Max": "ArgMax", "KMin": "ArgKMin"}[red.reduction_op]
        key = ("indices", arg_name)
        if key not in genred._gradients:
            genred._gradients[key] = genred._derived(red.formula, arg_name, red.axis, red.opt_arg)
        indices = genred._gradients[key](*args, backend=backend, ranges=ranges)
    return indices


def _selected_jvp(genred, args, results, tangents, backend, ranges):
    """Forward mode of Min/Max/KMin values: the derivative of F along the tangents at the
    selected (i, j) pairs (the pair kernel of `pair_gradient` read as a Jacobian row by
    row would cost more: one call of a Diff pair kernel per slot and component)."""
    red = genred.reduction
    reduced = 1 if red.axis == 1 else 0
    values = results[0]
    indices = _selected_indices(genred, args, results, backend, ranges)
    rows, dim_f = values.shape[0], red.formula.dim
    idx = indices.reshape(rows, -1, dim_f)
    pair = genred.pair_tangent()
    zero = [torch.zeros_like(a) for a in args]
    tangents = [t if t is not None else z for t, z in zip(tangents, zero)]
    parts = []  # out of place: torch.func transforms may batch this function
    for slot in range(idx.shape[1]):
        for c in range(dim_f):
            sel = idx[:, slot, c]
            found = sel >= 0
            sel = sel.clamp(min=0)
            gathered = [a[sel] if cat == reduced else a for a, (_, _, cat) in zip(args, red.arguments)]
            moved = [t[sel] if cat == reduced else t for t, (_, _, cat) in zip(tangents, red.arguments)]
            d = pair(*gathered, *moved, backend=backend)[:, c]
            parts.append(torch.where(found, d, torch.zeros((), dtype=d.dtype, device=d.device)))
    return torch.stack(parts, -1).reshape(values.shape)


def _selected_backward(genred, args, results, grad_out, backend, ranges):
    """Gradients of Min/Max/KMin values: the derivative of F at the selected (i, j)
    pairs, as torch does for min and topk; each selected slot and component is one
    call of the pair kernel on gathered rows.  Slots with no j (index -1: an empty
    block-sparse row, or fewer j than K) have no gradient."""
    red = genred.reduction
    reduced = 1 if red.axis == 1 else 0
    values = results[0]
    indices = _selected_indices(genred, args, results, backend, ranges)
    rows, dim_f = values.shape[0], red.formula.dim
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
            # the cotangent e_c * grad_out, out of place (torch.func transforms may batch this)
            unit = torch.zeros(dim_f, dtype=values.dtype, device=values.device)
            unit = unit.index_fill(0, torch.tensor([c], device=values.device), 1)
            cot = torch.where(found, gout[:, slot, c], torch.zeros((), dtype=values.dtype, device=values.device))
            cot = cot[:, None] * unit
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


class ComplexLazyTensor(ComplexMixin, LazyTensor):
    """A symbolic (M, N, D) tensor of complex torch tensors; see keomlir.lazy.complex."""


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
generic_sum, generic_logsumexp, generic_argmin, generic_argkmin = generic_reductions(Genred)
