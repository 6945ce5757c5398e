"""KernelSolve: `(alpha Id + K) a = b` by conjugate gradient, K a keomlir Sum reduction.

`KernelSolve(formula, aliases, varinvalias, axis)` reads `formula` as a linear map of
the variable `varinvalias` (the unknown a, indexed by the reduced index):
`(K a)_i = Sum_j formula(x_i, y_j, a_j, ...)` for axis=1.  Each conjugate gradient
step is one call of that reduction through the framework's `Genred`, so a solve runs
the same compiled kernels as everything else.  The recurrences run in float64 whatever
the dtype of the data (the kernel runs in the data's dtype), so float32 systems still
reach small residuals.

Several right-hand sides (b of shape (n, D)) are solved at once: when the formula is
`scalar kernel * a` the D columns are independent systems and each column gets its
own step sizes (block-diagonal CG, one kernel call per iteration for all columns);
otherwise the whole (n, D) array is one unknown vector.

The torch KernelSolve is differentiable with respect to every input: its backward
solves the adjoint system (alpha Id + K) KinvG = G (the operator is symmetric for the
symmetric kernels CG is meant for), then applies the gradient reductions of
`Sum_j formula(..., a_j)` to -KinvG through the torch Genred (the autodiff pass).
"""

from __future__ import annotations

import functools

import numpy as np

from .calls import batch_plan, run_batched

__all__ = ["ConvergenceError", "KernelSolve", "conjugate_gradient"]


class ConvergenceError(ValueError, RuntimeError):
    """The conjugate gradient did not reach its tolerance within its iteration limit."""


class NotPositiveDefiniteError(ValueError):
    """The conjugate gradient met a direction p with <p, (alpha Id + K) p> <= 0."""


def conjugate_gradient(linop, b, x0=None, eps=1e-6, maxiter=None, columns=True, verbose=False, what="solve"):
    """Solve linop(a) = b for a symmetric positive definite linop, b of shape (n, D)
    (float64 NumPy array or torch tensor).  Stops when the root mean square of the
    residual is below `eps` (per column when `columns`, else over the whole array).
    Raises ConvergenceError after `maxiter` iterations (default 10 n, at least 100)."""
    torch_mode = not isinstance(b, np.ndarray)
    if torch_mode:
        import torch

        where = torch.where
    else:
        where = np.where
    n = b.shape[0]
    if maxiter is None:
        maxiter = max(100, 10 * n)
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 0:
        raise ValueError(f"{what}: maxiter must be a non-negative integer, got {maxiter!r}")
    if not isinstance(eps, (int, float, np.floating)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"{what}: eps must be a positive number, got {eps!r}")

    if columns:
        def dot(u, v):
            return (u * v).sum(0)

        delta = n * float(eps) ** 2
    else:
        def dot(u, v):
            return (u * v).sum().reshape(1)

        delta = b.size * float(eps) ** 2 if not torch_mode else b.numel() * float(eps) ** 2

    if x0 is not None:
        a = 1.0 * x0
        r = b - linop(a)
    else:
        a = 0.0 * b
        r = 1.0 * b
    rr = dot(r, r)
    active = rr > delta
    status = {"status": "Converged", "niter": 0, "x0_provided": x0 is not None}
    if not bool(active.any()):
        if verbose:
            print(dict(status, residual=float(rr.max()) ** 0.5 / max(n, 1) ** 0.5))
        return a
    p = 1.0 * r
    for k in range(maxiter):
        Mp = linop(p)
        pMp = dot(p, Mp)
        bad = active & ~(pMp > 0)
        if bool(bad.any()):
            raise NotPositiveDefiniteError(
                f"{what}: the operator alpha*Id + K is not positive definite (a search direction p has "
                f"<p, (alpha Id + K) p> = {float(pMp[bad][0]):.3e} <= 0 at iteration {k}); conjugate gradient "
                "needs a symmetric positive definite system: check the kernel, or increase alpha")
        step = where(active, rr / where(active, pMp, 1.0 + 0.0 * pMp), 0.0 * pMp)
        a = a + step * p
        r = r - step * Mp
        rr_new = dot(r, r)
        active = active & (rr_new > delta)
        if not bool(active.any()):
            if verbose:
                print(dict(status, niter=k + 1, residual=(float(rr_new.max()) / n) ** 0.5))
            return a
        beta = where(active, rr_new / where(active, rr, 1.0 + 0.0 * rr), 0.0 * rr)
        p = r + beta * p
        rr = rr_new
    residual = (float(rr.max()) / (n if columns else n * (b.shape[1] if len(b.shape) > 1 else 1))) ** 0.5
    if verbose:
        print(dict(status, status="Not converged", niter=maxiter, residual=residual))
    raise ConvergenceError(
        f"{what}: conjugate gradient did not converge in maxiter={maxiter} iterations: the residual "
        f"(root mean square) is {residual:.3e}, above eps={eps:g}; raise maxiter, loosen eps, or increase "
        "alpha (a better conditioned system)")


def _separable(formula, pos):
    """formula == scalar * Var(pos) with the scalar free of Var(pos): the columns of
    the unknown are independent systems with the same matrix."""
    if formula.name != "Mult":
        return False

    def uses(node):
        for n in node.walk():
            if n.name == "Var" and n.attrs[0] == pos:
                return True
            if any(getattr(a, "name", None) == "Var" and a.attrs[0] == pos for a in n.attrs):
                return True
        return False

    for var, other in ((formula.args[0], formula.args[1]), (formula.args[1], formula.args[0])):
        if var.name == "Var" and var.attrs[0] == pos and other.dim == 1 and not uses(other):
            return True
    return False


class _SolveCore:
    """The Sum reduction of `formula` and where its unknown sits."""

    def __init__(self, genred_cls, formula, aliases, varinvalias, axis, options):
        from .grammar import parse_alias, parse_formula

        if not isinstance(varinvalias, str):
            raise TypeError(f"varinvalias must be a string (an alias name such as 'b', or 'Var(k,d,cat)'), "
                            f"got {type(varinvalias).__name__}")
        self.genred = genred_cls(formula, aliases, reduction_op="Sum", axis=axis, **options)
        red = self.genred.reduction
        self.axis = axis
        attrs = None
        names = []
        for k, text in enumerate(aliases):
            name, var = parse_alias(text, k)
            names.append(name)
            if name == varinvalias.strip():
                attrs = var.attrs
        if attrs is None:
            try:
                node = parse_formula(varinvalias, {}, "varinvalias")
            except (SyntaxError, ValueError):
                node = None
            if node is None or node.name != "Var":
                raise ValueError(f"varinvalias {varinvalias!r} is neither an alias ({', '.join(names) or 'none'}) "
                                 "nor a variable Var(k,d,cat)")
            attrs = node.attrs
        pos, dim, cat = attrs
        if pos >= len(red.arguments) or red.arguments[pos] != attrs:
            raise ValueError(f"varinvalias {varinvalias!r}: the unknown Var({pos},{dim},{cat}) does not appear "
                             "in the formula")
        reduced = 1 if axis == 1 else 0
        if cat != reduced:
            word = "j (Vj)" if reduced == 1 else "i (Vi)"
            raise ValueError(f"varinvalias {varinvalias!r}: with axis={axis} the unknown is summed over and must "
                             f"be indexed by {word}, got {'a parameter' if cat == 2 else 'the other index'}")
        dim_f = red.parsed.formula.dim
        if dim_f != dim:
            raise ValueError(f"KernelSolve: the formula has dimension {dim_f} but the unknown {varinvalias!r} has "
                             f"dimension {dim}: (alpha Id + K) a = b needs them equal")
        self.varinvpos, self.varinvdim = pos, dim
        self.separable = _separable(red.parsed.formula, pos)
        self.label = f"KernelSolve({formula!r}, unknown {varinvalias!r})"

    def check_square(self, shapes):
        red = self.genred.reduction
        rows = {0: set(), 1: set()}
        for (pos, dim, cat), shape in zip(red.kernel_arguments, shapes):
            if cat in (0, 1) and len(shape) == 2:
                rows[cat].add(shape[0])
        if len(rows[0]) == 1 and len(rows[1]) == 1 and rows[0] != rows[1]:
            n_out, n_unknown = rows[0].pop(), rows[1].pop()
            raise ValueError(f"{self.label}: the system must be square, but the output has {n_out} rows and the "
                             f"unknown {n_unknown} rows")

    def check_alpha(self, alpha):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
            raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
        return float(alpha)


class _KernelSolveBase:
    """What both front ends' KernelSolve share: the signature and the solver core."""

    def __init__(self, formula, aliases, varinvalias, axis=0, dtype=None, opt_arg=None, cuda_type=None,
                 dtype_acc="auto", use_double_acc=False, sum_scheme="auto", enable_chunks=True,
                 rec_multVar_highdim=None, **kwargs):
        self.core = _SolveCore(self._genred_class(), formula, aliases, varinvalias, axis,
                               dict(dtype_acc=dtype_acc, use_double_acc=use_double_acc, sum_scheme=sum_scheme,
                                    **kwargs))

    @property
    def program(self):
        return self.core.genred.program


class KernelSolve(_KernelSolveBase):
    """The NumPy KernelSolve (call-compatible with `pykeops.numpy.KernelSolve`).

    >>> Kinv = KernelSolve("Exp(-g*SqDist(x,y)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"],
    ...                    "b", axis=1)
    >>> a = Kinv(x, x, b, g, alpha=0.01)       # (alpha Id + K_xx) a = b
    """

    def _genred_class(self):
        from .numpy import Genred

        return Genred

    def __call__(self, *args, backend="auto", device_id=-1, alpha=1e-10, eps=1e-6, ranges=None, maxiter=None,
                 x0=None, verbose=False):
        core = self.core
        red = core.genred.reduction
        for k, a in enumerate(args):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{red.arg_label(k)}: expected a NumPy array, got {type(a).__name__}")
        alpha = core.check_alpha(alpha)
        plan = batch_plan(red, [a.shape for a in args])
        if plan is not None:
            if x0 is not None or ranges is not None:
                raise ValueError("x0 and ranges are not supported with batch dimensions")
            return run_batched(plan, args, lambda el: self(*el, backend=backend, device_id=device_id, alpha=alpha,
                                                           eps=eps, maxiter=maxiter, verbose=verbose), np.stack)
        dtype, _, _ = red.check_arrays(list(args))
        core.check_square([a.shape for a in args])
        pos = core.varinvpos
        b = args[pos]

        def linop(p):
            full = list(args)
            full[pos] = p.astype(dtype)
            return core.genred(*full, backend=backend, device_id=device_id, ranges=ranges).astype(np.float64) + alpha * p

        if x0 is not None:
            x0 = np.asarray(x0, dtype=np.float64)
            if x0.shape != b.shape:
                raise ValueError(f"x0 must have the shape of b {b.shape}, got {x0.shape}")
        a = conjugate_gradient(linop, b.astype(np.float64), x0, eps, maxiter, core.separable, verbose, core.label)
        return a.astype(dtype)


@functools.lru_cache(maxsize=None)
def _torch_function():
    import torch

    class KernelSolveFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, solver, alpha, opts, *args):
            backend, device_id, eps, maxiter, x0, verbose, ranges = opts
            core = solver.core
            pos = core.varinvpos
            alpha_f = float(alpha)
            detached = [a.detach() for a in args]
            dtype = args[pos].dtype

            def linop(p):
                full = list(detached)
                full[pos] = p.to(dtype)
                out = core.genred(*full, backend=backend, device_id=device_id, ranges=ranges)
                return out.to(torch.float64) + alpha_f * p

            b = detached[pos].to(torch.float64)
            if x0 is not None:
                x0 = torch.as_tensor(x0).detach().to(device=b.device, dtype=torch.float64)
                if x0.shape != b.shape:
                    raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
            a = conjugate_gradient(linop, b, x0, eps, maxiter, core.separable, verbose, core.label).to(dtype)
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

    return KernelSolveFunction


class TorchKernelSolve(_KernelSolveBase):
    """The torch KernelSolve (call-compatible with `pykeops.torch.KernelSolve`),
    differentiable with respect to every tensor argument and to alpha (a tensor)."""

    def _genred_class(self):
        from .torch import Genred

        return Genred

    def __call__(self, *args, backend="auto", device_id=-1, alpha=1e-10, eps=1e-6, ranges=None, maxiter=None,
                 x0=None, verbose=False):
        import torch

        core = self.core
        red = core.genred.reduction
        if len(args) != len(red.arguments):
            red.check_arrays(list(args))  # raises: the wrong number of arguments
        for k, a in enumerate(args):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"{red.arg_label(k)}: expected a torch tensor, got {type(a).__name__}")
        if isinstance(alpha, torch.Tensor):
            if alpha.numel() != 1:
                raise ValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
        else:
            alpha = core.check_alpha(alpha)
        plan = batch_plan(red, [tuple(a.shape) for a in args])
        if plan is not None:
            if x0 is not None or ranges is not None:
                raise ValueError("x0 and ranges are not supported with batch dimensions")
            return run_batched(plan, args, lambda el: self(*el, backend=backend, device_id=device_id, alpha=alpha,
                                                           eps=eps, maxiter=maxiter, verbose=verbose), torch.stack)
        core.check_square([tuple(a.shape) for a in args])
        opts = (backend, device_id, eps, maxiter, x0, verbose, ranges)
        return _torch_function().apply(self, alpha, opts, *args)
