"""The torch KernelSolve: differentiable with respect to every tensor argument and
to alpha (a tensor).

Its backward solves the adjoint system (alpha Id + K) KinvG = G (the operator is
symmetric for the symmetric kernels CG is meant for), then applies the gradient
reductions of `Sum_j formula(..., a_j)` to -KinvG through the torch Genred (the
autodiff pass).
"""

from __future__ import annotations

import torch

from ..arrays import TORCH
from ..solve import KernelSolve, check_alpha, solve_arrays


class KernelSolveFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solver, alpha, opts, *args):
        a = solve_arrays(solver.core, TORCH, [x.detach() for x in args], alpha, opts)
        ctx.solver, ctx.opts, ctx.n_args = solver, opts, len(args)
        ctx.alpha_tensor = isinstance(alpha, torch.Tensor)
        ctx.alpha = None if ctx.alpha_tensor else alpha
        ctx.save_for_backward(*args, a, *((alpha,) if ctx.alpha_tensor else ()))
        return a

    @staticmethod
    def backward(ctx, G):
        solver, (backend, device_id, eps, maxiter, _, _, ranges) = ctx.solver, ctx.opts
        saved = ctx.saved_tensors
        n = ctx.n_args
        args, a = saved[:n], saved[n]
        alpha = saved[n + 1] if ctx.alpha_tensor else ctx.alpha
        core = solver.core
        pos = core.varinvpos
        needs = ctx.needs_input_grad[3:]
        create = torch.is_grad_enabled()
        # the adjoint system: (alpha Id + K)^T KinvG = G, K symmetric
        args_g = list(args)
        args_g[pos] = G
        KinvG = solver(*args_g, backend=backend, device_id=device_id, alpha=alpha, eps=eps, maxiter=maxiter,
                       ranges=ranges)
        grads = [None] * n
        if needs[pos]:
            grads[pos] = KinvG
        others = [k for k in range(n) if needs[k] and k != pos]
        if others:
            # d/dtheta of <-KinvG, Sum_j formula(theta, a_j)>: the kernel's gradient reductions
            with torch.enable_grad():
                proxies = list(args)
                for k in others:
                    proxies[k] = args[k].view_as(args[k])
                proxies[pos] = a if create else a.detach()
                out = core.genred(*proxies, backend=backend, device_id=device_id, ranges=ranges)
                found = torch.autograd.grad(out, [proxies[k] for k in others], -KinvG, create_graph=create,
                                            allow_unused=True)
            for k, g in zip(others, found):
                grads[k] = g if g is not None else torch.zeros_like(args[k])
        g_alpha = None
        if ctx.alpha_tensor and ctx.needs_input_grad[1]:
            g_alpha = -(KinvG * a).sum().reshape(alpha.shape).to(alpha.dtype)
        return (None, g_alpha, None, *grads)


class TorchKernelSolve(KernelSolve):
    """KernelSolve on torch tensors, through KernelSolveFunction (a front end sets genred_class)."""

    arrays = TORCH

    def _alpha(self, alpha):
        if isinstance(alpha, torch.Tensor):
            if alpha.numel() != 1:
                raise ValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
            return alpha
        return check_alpha(alpha)

    def _solve(self, args, alpha, opts):
        return KernelSolveFunction.apply(self, alpha, opts, *args)
