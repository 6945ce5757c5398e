"""The derivatives of a torch Genred: keomlir reductions built as IR (keomlir.derivatives)
run by torch.

`GenredFunction` is the autograd Function of an eager call: it runs the body of the
custom operator `keomlir::genred` (`ops.py`) and adds the backward, jvp and vmap rules,
so torch.autograd and torch.func's transforms (grad, vjp, jvp, jacrev, jacfwd, hessian,
vmap) all run keomlir kernels; the operator's own backward (under torch.compile) is
`Derivatives.reverse`.  The derivative reductions run through `GenredFunction` again,
so derivatives of any order work.
"""

from __future__ import annotations

import torch

from .. import derivatives
from ..arrays import TORCH
from ..derivatives import SELECTING, selected_jvp, selection
from . import ops


class Derivatives(derivatives.Derivatives):
    """The derivative reductions of a torch Genred (see keomlir.derivatives), and the
    backward of its calls."""

    def reverse(self, args, results, grad_outputs, needs, backend="auto", ranges=None):
        """The vector-Jacobian products of every argument along `grad_outputs` (None where
        `needs` is False): the backward of GenredFunction and of `keomlir::genred`."""
        if self.reduction.reduction_op in SELECTING:
            return selected_backward(self, args, results, grad_outputs[0], backend, ranges)
        wanted = [pos for pos, need in enumerate(needs) if need]
        found = self.pullback(args, results[0], grad_outputs[0], wanted, backend, ranges)
        return [found.get(pos) for pos in range(len(args))]


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
            value = selected_jvp(genred.derivatives, TORCH, args, results, tangents, ctx.backend, ctx.ranges)
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
        backend, device_id, ranges = call
        return batched_call(genred, info.batch_size, in_dims[2:], args, backend, device_id, ranges)

    @staticmethod
    def backward(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        args, results = saved[:ctx.n_args], saved[ctx.n_args:]
        found = ctx.genred.derivatives.reverse(args, results, grad_outputs, ctx.needs_input_grad[2:], ctx.backend,
                                               ctx.ranges)
        return (None, None, *found)


def batched_call(genred, size, dims, args, backend, device_id, ranges):
    """The vmap rule of a reduction (of GenredFunction, and of the operator `keomlir::genred`
    under torch.compile): a batch of `size` calls (`dims`: each argument's batch dimension or
    None) as one call with a leading batch dimension, keomlir's batch dimensions (one
    block-sparse call); unbatched arguments are broadcast views.  Returns (outputs, their
    batch dimensions)."""
    batched = [a.movedim(d, 0) if d is not None else a.expand(size, *a.shape) for a, d in zip(args, dims)]
    if ranges is None:
        outs = genred(*batched, backend=backend, device_id=device_id)
        outs = outs if isinstance(outs, tuple) else (outs,)
    else:  # block-sparse calls (a batched call's own, under an outer transform): one call per element
        each = [genred(*[a[k] for a in batched], backend=backend, device_id=device_id, ranges=ranges)
                for k in range(size)]
        each = [e if isinstance(e, tuple) else (e,) for e in each]
        outs = tuple(torch.stack([e[k] for e in each]) for k in range(len(each[0])))
    return outs, (0,) * len(outs)


def _genred_vmap(info, in_dims, spec, args, backend, device_id, ranges):
    """The vmap rule of `keomlir::genred` (torch.func.vmap inside torch.compile)."""
    if any(d is not None for d in in_dims[4]):
        raise ValueError("ranges: the block-sparse ranges of a reduction cannot be batched by vmap")
    outs, dims = batched_call(ops.GENREDS.lookup(spec), info.batch_size, in_dims[1], args, backend, device_id,
                              ranges or None)
    return list(outs), list(dims)


ops.genred.register_vmap(_genred_vmap)


def selected_backward(d, args, results, grad_out, backend, ranges):
    """Gradients of Min/Max/KMin values: the derivative of F at the selected (i, j)
    pairs, as torch does for min and topk; each selected slot and component is one
    call of the pair kernel on gathered rows.  Slots with no j (index -1: an empty
    block-sparse row, or fewer j than K) have no gradient."""
    red = d.reduction
    reduced, idx = selection(d, args, results, backend, ranges)
    values, dim_f = results[0], red.formula.dim
    gout = grad_out.reshape(idx.shape)
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
