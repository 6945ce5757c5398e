"""The derivatives of a torch Genred, as keomlir reductions built as IR.

`Derivatives` builds (and caches) the reductions a reduction's derivatives run:
the fused vector-Jacobian products of reverse mode (`Grad` nodes), the tangents
of forward mode (`Diff` nodes), the pair kernels of Min/Max/KMin; the autodiff
pass expands them like any formula, and they run through `GenredFunction`
again, so derivatives of any order work.  `GenredFunction` is the autograd
Function of an eager call: it runs the custom operator `keomlir::genred`
(`ops.py`) and adds the backward, jvp and vmap rules, so torch.autograd and
torch.func's transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) all run
keomlir kernels; the operator's own backward (under torch.compile) is `reverse`.
"""

from __future__ import annotations

import torch

from ..ir import make, replace_vars
from ..ir.ops.base import mk
from . import ops

DIFFERENTIABLE = ("Sum", "LogSumExp", "SumSoftMaxWeight")
# reductions whose values are entries F_ij at selected j: differentiable through them
SELECTING = ("Min", "Max", "Min_ArgMin", "Max_ArgMax", "KMin", "KMin_ArgKMin")


class Derivatives:
    """The derivative reductions of one CompiledReduction, compiled with `genred_class`
    (the front end's Genred, handed down) and cached in `cache`."""

    def __init__(self, genred_class, reduction):
        self.genred_class, self.reduction = genred_class, reduction
        self.cache = {}

    def derived(self, formula, reduction_op, axis, opt_arg=None, recat=None):
        """A Genred of another formula over this one's arguments (their categories
        changed by `recat(pos, dim, cat)` if given), with this one's options."""
        red = self.reduction
        names = red.argument_vars()
        if recat is not None:
            names = {k: _var(*recat(*v.attrs)) for k, v in names.items()}
        return self.genred_class.from_ir(formula, None, reduction_op, axis, opt_arg, names, **red.options)

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

    def reverse(self, args, results, grad_outputs, needs, backend="auto", ranges=None):
        """The vector-Jacobian products of every argument along `grad_outputs` (None where
        `needs` is False): the backward of GenredFunction and of `keomlir::genred`."""
        if self.reduction.reduction_op in SELECTING:
            return selected_backward(self, args, results, grad_outputs[0], backend, ranges)
        wanted = [pos for pos, need in enumerate(needs) if need]
        found = self.pullback(args, results[0], grad_outputs[0], wanted, backend, ranges)
        return [found.get(pos) for pos in range(len(args))]

    def once(self, key, build):
        """The derivative reduction cached under `key`, built by `build()` on first use."""
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = build()
        return found

    def gradient(self, positions):
        """One Genred computing the vector-Jacobian products of the arguments at
        `positions` (which share the index reduced in backward) as one concatenated
        output: a fused kernel, one pass over the data.  Returns (genred, the extra
        arguments it takes: 'G' grad_output, 'O' output, 'L' log-normalizer, lse genred)."""
        return self.once(positions, lambda: self._build_gradient(positions))

    def _pair(self, key, derivative):
        """A Genred of `derivative(F, kept)` at one (i, j) pair per row: F with the reduced
        index's variables made row-indexed (`kept` maps an argument's (pos, dim, cat)), so
        the caller gathers the selected rows of those variables and scatters results back."""
        def build():
            red = self.reduction
            reduced = 1 if red.axis == 1 else 0

            def kept(pos, dim, cat):
                return pos, dim, 1 - reduced if cat == reduced else cat

            formula = derivative(replace_vars(red.formula, kept), kept)
            return self.derived(formula, "Sum", red.axis, recat=kept)

        return self.once(key, build)

    def pair_gradient(self):
        """For selecting reductions: the vector-Jacobian product of F at the selected pairs
        (cotangent: a new variable after the arguments)."""
        red = self.reduction
        cotangent_cat = 0 if red.axis == 1 else 1

        def vjps(F, kept):
            E = _var(len(red.arguments), red.formula.dim, cotangent_cat)
            return _concat([mk("Grad", F, E, attrs=(_var(*kept(*a)),)) for a in red.arguments])

        return self._pair("pair", vjps)

    def pair_tangent(self):
        """For selecting reductions in forward mode: the derivative of F along every
        argument's tangent (tangents after the arguments, categories as their arguments')."""
        n = len(self.reduction.arguments)

        def tangent(F, kept):
            formula = None
            for p, d, c in self.reduction.arguments:
                term = mk("Diff", F, _var(n + p, d, kept(p, d, c)[2]), attrs=(_var(*kept(p, d, c)),))
                formula = term if formula is None else mk("Add", formula, term)
            return formula

        return self._pair("pair_jvp", tangent)

    def grad_axis(self, pos):
        red = self.reduction
        out_cat = 0 if red.axis == 1 else 1
        return 1 - red.axis if red.arguments[pos][2] == 1 - out_cat else red.axis

    def _terms(self, what):
        """(reduction name, number of arguments, category of the output rows, F, F2) of a
        differentiable reduction; other reductions have no `what`."""
        red = self.reduction
        if red.reduction_op not in DIFFERENTIABLE:
            raise NotImplementedError(f"reduction {red.reduction_op} has no {what} in this version of keomlir")
        return red.reduction_op, len(red.arguments), 0 if red.axis == 1 else 1, red.formula, red.formula2

    def _build_gradient(self, positions):
        red = self.reduction
        name, n, out_cat, F, F2 = self._terms("gradient")

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
        genred = self.derived(formula, "Sum", self.grad_axis(positions[0]))
        lse = self.derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse

    # ---- forward mode (torch.func.jvp / jacfwd): keomlir reductions of Diff(...) -------------
    def tangent(self, positions):
        """One Genred computing the directional derivative of the output along the
        tangents of the arguments at `positions` (tangents are new variables of the same
        categories, after the arguments): Diff nodes expanded by the autodiff pass.
        Returns (genred, extras taken after the tangents: 'O' output, 'L' log-normalizer, lse)."""
        return self.once(("jvp", positions), lambda: self._build_tangent(positions))

    def _build_tangent(self, positions):
        red = self.reduction
        name, n, out_cat, F, F2 = self._terms("forward-mode derivative")
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
        genred = self.derived(formula, "Sum", red.axis)
        lse = self.derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse


def _var(pos, dim, cat):
    return make("Var", (), (pos, dim, cat))


def _concat(parts):
    out = parts[0]
    for part in parts[1:]:
        out = mk("Concat", out, part)
    return out


class GenredFunction(torch.autograd.Function):
    """A keomlir reduction as a torch operation: reverse mode (`backward`), forward mode
    (`jvp`) and `vmap` rules, so torch.autograd and torch.func's transforms (grad, vjp,
    jvp, jacrev, jacfwd, hessian, vmap) all run as keomlir reductions."""

    @staticmethod
    def forward(genred, call, *args):
        """call = (backend, device_id, ranges: a list of tensors or None): how to run,
        passed on to the derivatives.  Plain tensors run the operator's body directly (the
        dispatcher and the registry lookup would cost more than the rest of a small call);
        tensor subclasses (fake and functional tensors of a trace, as when AOTAutograd traces
        a backward that calls another reduction) go through the `keomlir::genred` operator."""
        backend, device_id, ranges = call
        if all(type(a) is torch.Tensor for a in args):
            return tuple(ops.run_genred(genred.reduction, list(args), backend, device_id, ranges or None))
        return tuple(ops.genred(genred.reduction.spec, list(args), backend, device_id, ranges or []))

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
        if genred.reduction.reduction_op in SELECTING:
            value = selected_jvp(genred.derivatives, args, results, tangents, ctx.backend, ctx.ranges)
            return (value,) + (None,) * (len(results) - 1)
        positions = tuple(pos for pos, t in enumerate(tangents) if t is not None)
        if not positions:
            return (torch.zeros_like(results[0]),)
        tangent_genred, extras, lse = genred.derivatives.tangent(positions)
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
        saved = ctx.saved_tensors
        args, results = saved[:ctx.n_args], saved[ctx.n_args:]
        found = ctx.genred.derivatives.reverse(args, results, grad_outputs, ctx.needs_input_grad[2:], ctx.backend,
                                               ctx.ranges)
        return (None, None, *found)


def selected_indices(d, args, results, backend, ranges):
    """The int64 indices a selecting reduction chose (recomputed for Min / Max / KMin alone);
    `d` is its Derivatives."""
    red = d.reduction
    indices = results[-1]
    if indices.dtype != torch.int64:
        arg_name = {"Min": "ArgMin", "Max": "ArgMax", "KMin": "ArgKMin"}[red.reduction_op]
        argk = d.once(("indices", arg_name), lambda: d.derived(red.formula, arg_name, red.axis, red.opt_arg))
        indices = argk(*args, backend=backend, ranges=ranges)
    return indices


def selected_jvp(d, args, results, tangents, backend, ranges):
    """Forward mode of Min/Max/KMin values: the derivative of F along the tangents at the
    selected (i, j) pairs (the pair kernel of `pair_gradient` read as a Jacobian row by
    row would cost more: one call of a Diff pair kernel per slot and component)."""
    red = d.reduction
    reduced = 1 if red.axis == 1 else 0
    values = results[0]
    indices = selected_indices(d, args, results, backend, ranges)
    rows, dim_f = values.shape[0], red.formula.dim
    idx = indices.reshape(rows, -1, dim_f)
    pair = d.pair_tangent()
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


def selected_backward(d, args, results, grad_out, backend, ranges):
    """Gradients of Min/Max/KMin values: the derivative of F at the selected (i, j)
    pairs, as torch does for min and topk; each selected slot and component is one
    call of the pair kernel on gathered rows.  Slots with no j (index -1: an empty
    block-sparse row, or fewer j than K) have no gradient."""
    red = d.reduction
    reduced = 1 if red.axis == 1 else 0
    values = results[0]
    indices = selected_indices(d, args, results, backend, ranges)
    rows, dim_f = values.shape[0], red.formula.dim
    idx = indices.reshape(rows, -1, dim_f)
    gout = grad_out.reshape(rows, -1, dim_f)
    pair = d.pair_gradient()
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
