"""The torch KernelSolve: differentiable with respect to every tensor argument and
to alpha (a tensor).

Its backward solves the adjoint system (alpha Id + K) KinvG = G (the operator is
symmetric for the symmetric kernels CG is meant for), then applies the gradient
reductions of `Sum_j formula(..., a_j)` to -KinvG (the torch Genred's `pullback`);
its forward mode is one more solve (see `jvp`).  Every solve runs the custom operator
`keomlir::kernel_solve` (`ops.py`), whose backward (under torch.compile) is `reverse`.
"""

from __future__ import annotations

import torch

from ..arrays import TORCH
from ..passes import DEFAULT_PIPELINE
from ..solve import KernelSolve, cg_setup, check_alpha, solve_arrays
from . import ops


class KernelSolveFunction(torch.autograd.Function):
    """The solve as a torch operation: reverse mode (`backward`), forward mode (`jvp`:
    one more solve) and a `vmap` rule, so torch.func's transforms run it too."""

    @staticmethod
    def forward(solver, alpha, opts, *args):
        return solver.solve_op(args, alpha, opts)

    @staticmethod
    def setup_context(ctx, inputs, output):
        solver, alpha, opts, *args = inputs
        ctx.solver, ctx.opts, ctx.n_args = solver, opts, len(args)
        ctx.alpha_tensor = isinstance(alpha, torch.Tensor)
        ctx.alpha = None if ctx.alpha_tensor else alpha
        saved = (*args, output, *((alpha,) if ctx.alpha_tensor else ()))
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def jvp(ctx, solver_tangent, alpha_tangent, opts_tangent, *tangents):
        """(alpha Id + K) a = b: da = (alpha Id + K)^-1 (db - dalpha a - dK a), dK a the
        forward-mode derivative of the kernel reduction along the other arguments."""
        solver, (backend, device_id, eps, maxiter, _, _, ranges) = ctx.solver, ctx.opts
        saved = ctx.saved_tensors
        n = ctx.n_args
        args, a = list(saved[:n]), saved[n]
        alpha = saved[n + 1] if ctx.alpha_tensor else ctx.alpha
        core = solver.core
        pos = core.varinvpos
        rhs = tangents[pos] if tangents[pos] is not None else torch.zeros_like(a)
        if alpha_tangent is not None:
            rhs = rhs - alpha_tangent.reshape(()) * a
        moved = tuple(k for k in range(n) if k != pos and tangents[k] is not None)
        if moved:
            args[pos] = a
            tangent, extras, _ = core.genred.derivatives.tangent(moved)  # a Sum: no extra inputs
            rhs = rhs - tangent(*args, *[tangents[k] for k in moved], backend=backend, ranges=ranges)
        args[pos] = rhs
        return solver(*args, backend=backend, device_id=device_id, alpha=alpha, eps=eps, maxiter=maxiter,
                      ranges=ranges)

    @staticmethod
    def vmap(info, in_dims, solver, alpha, opts, *args):
        return batched_solve(solver, info.batch_size, in_dims[3:], in_dims[1] is not None, args, alpha, opts)

    @staticmethod
    def backward(ctx, G):
        saved = ctx.saved_tensors
        n = ctx.n_args
        args, a = saved[:n], saved[n]
        alpha = saved[n + 1] if ctx.alpha_tensor else ctx.alpha
        grads, g_alpha = ctx.solver.reverse(args, a, alpha, G, ctx.opts, ctx.needs_input_grad[3:],
                                            ctx.alpha_tensor and ctx.needs_input_grad[1])
        return (None, g_alpha, None, *grads)


def batched_solve(solver, size, dims, alpha_batched, args, alpha, opts):
    """The vmap rule of a solve (of KernelSolveFunction, and of the operator `keomlir::kernel_solve`
    under torch.compile): a batch of solves as one call with a leading batch dimension (each
    element its own conjugate gradient); unbatched arguments are broadcast views."""
    if alpha_batched:
        raise NotImplementedError("KernelSolve under torch.func.vmap: alpha cannot be batched; "
                                  "map over the other arguments")
    backend, device_id, eps, maxiter, x0, verbose, ranges = opts
    if x0 is not None or ranges is not None:
        raise ValueError("x0 and ranges are not supported with batch dimensions (torch.func.vmap)")
    batched = [x.movedim(d, 0) if d is not None else x.expand(size, *x.shape) for x, d in zip(args, dims)]
    out = solver(*batched, backend=backend, device_id=device_id, alpha=alpha, eps=eps, maxiter=maxiter,
                 verbose=verbose)
    return out, 0


def _solve_vmap(info, in_dims, spec, args, alpha, backend, device_id, eps, maxiter, x0, verbose, ranges):
    """The vmap rule of `keomlir::kernel_solve` (torch.func.vmap inside torch.compile)."""
    opts = (backend, device_id, eps, maxiter, x0, verbose, ranges or None)
    return batched_solve(ops.SOLVERS.lookup(spec), info.batch_size, in_dims[1], in_dims[2] is not None, args,
                         alpha, opts)


ops.kernel_solve.register_vmap(_solve_vmap)


class TorchKernelSolve(KernelSolve):
    """KernelSolve on torch tensors, through KernelSolveFunction (a front end sets genred_class)."""

    arrays = TORCH

    @classmethod
    def from_genred(cls, genred, unknown, axis):
        self = super().from_genred(genred, unknown, axis)
        ops.SOLVERS.add(self, self.core.spec)
        return self

    def solve_op(self, args, alpha, opts):
        """The solve as the operator `keomlir::kernel_solve` (alpha a number or a tensor)."""
        backend, device_id, eps, maxiter, x0, verbose, ranges = opts
        cg_setup(1, 1, eps, maxiter, True, self.core.label)  # eps and maxiter checked before the schema's types
        maxiter = None if maxiter is None else int(maxiter)
        alpha = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(float(alpha), dtype=torch.float64)
        if x0 is not None and not isinstance(x0, torch.Tensor):
            x0 = torch.as_tensor(x0)
        return ops.kernel_solve(self.core.spec, list(args), alpha.reshape(()), backend, device_id, float(eps), maxiter,
                                x0, bool(verbose), ops.ranges_tensors(ranges) or [])

    def solve_tensors(self, args, alpha, opts):
        """The conjugate gradient itself (the operator's implementation): alpha a number."""
        return solve_arrays(self.core, TORCH, args, alpha, opts)

    def reverse(self, args, a, alpha, G, opts, needs, needs_alpha):
        """(the gradients of the arguments at `needs`, of alpha if `needs_alpha`) of a solve
        whose solution is `a`, along G: the backward of KernelSolveFunction and of the operator."""
        backend, device_id, eps, maxiter, _, _, ranges = opts
        core = self.core
        pos, n = core.varinvpos, len(args)
        # the adjoint system: (alpha Id + K)^T KinvG = G, K symmetric
        args_g = list(args)
        args_g[pos] = G
        KinvG = self(*args_g, backend=backend, device_id=device_id, alpha=alpha, eps=eps, maxiter=maxiter,
                     ranges=ranges)
        grads = [None] * n
        if needs[pos]:
            grads[pos] = KinvG
        others = [k for k in range(n) if needs[k] and k != pos]
        if others:  # d/dtheta of <-KinvG, Sum_j formula(theta, a_j)>: the kernel's gradient reductions
            args_a = list(args)
            args_a[pos] = a
            found = core.genred.derivatives.pullback(args_a, None, -KinvG, others, backend, ranges)
            for k in others:
                grads[k] = found[k]
        g_alpha = -(KinvG * a).sum().reshape(alpha.shape).to(alpha.dtype) if needs_alpha else None
        return grads, g_alpha

    def __init__(self, formula, aliases, varinvalias, axis=0, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=None, dtype=None, cuda_type=None,
                 use_fast_math=True, opt_arg=None, passes=DEFAULT_PIPELINE):
        """pykeops.torch.KernelSolve's keywords in its order, which differs from pykeops.numpy's."""
        super().__init__(formula, aliases, varinvalias, axis, dtype_acc=dtype_acc, use_double_acc=use_double_acc,
                         sum_scheme=sum_scheme, passes=passes)
        ops.SOLVERS.add(self, self.core.spec)

    def _alpha(self, alpha):
        if isinstance(alpha, torch.Tensor):
            if alpha.numel() != 1:
                raise ValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
            return alpha
        return check_alpha(alpha)

    def _solve(self, args, alpha, opts):
        if torch.compiler.is_compiling():  # Dynamo traces the operator (its backward: register_autograd)
            return self.solve_op(args, alpha, opts)
        return KernelSolveFunction.apply(self, alpha, opts, *args)
