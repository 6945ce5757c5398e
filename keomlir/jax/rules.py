"""The differentiation and batching rules of the primitives of `primitives.py`.

Forward mode is keomlir's own: the tangent of a reduction is a keomlir Sum reduction of
`Diff` nodes (`Derivatives.tangent`), linear in the tangents; Min/Max/KMin are
differentiated through the selected indices (`selected_jvp`: gathers and a pair
kernel).  Reverse mode is JAX's transposition of forward mode: the transpose of a
Sum reduction linear in some arguments is the fused vector-Jacobian product of those
arguments (`Derivatives.pullback`: `Grad` nodes), one kernel per reduced index.  Every
rule calls the front end's Genred again, so jvp, grad, jacfwd, jacrev, hessian and any
order of them run keomlir kernels.  `vmap` maps to keomlir's batch dimensions: one
block-sparse call for the whole batch.

The solve (alpha Id + K) a = b is linear in b: its tangent is one more solve of the
tangents of b, alpha and K (`Derivatives.tangent` of K), and its transpose with respect
to b is a solve (the operator is symmetric, as conjugate gradient needs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from ..arrays import JAX
from ..derivatives import DIFFERENTIABLE, SELECTING, selected_jvp
from ..ir import variables
from .primitives import genred_p, solve_p


def _zero(value):
    """JAX's symbolic zero tangent of `value` (float0 for integers)."""
    return ad.Zero(jax.typeof(value).to_tangent_aval())


def _given(tangents):
    """The tangents, None for JAX's symbolic zeros."""
    return [None if type(t) is ad.Zero else t for t in tangents]


# ---- keomlir_genred ------------------------------------------------------------------------------------------
def _genred_jvp(primals, tangents, *, genred, backend, ranges):
    outs = genred_p.bind(*primals, genred=genred, backend=backend, ranges=ranges)
    zeros = [_zero(o) for o in outs]
    given = _given(tangents)
    op, d = genred.reduction.reduction_op, genred.derivatives
    if all(t is None for t in given) or op not in DIFFERENTIABLE + SELECTING:  # indices only: zero tangents
        return outs, zeros
    if op in SELECTING:
        value = selected_jvp(d, JAX, primals, outs, given, backend, ranges)
    else:
        positions = tuple(p for p, t in enumerate(given) if t is not None)
        tangent, extras, lse = d.tangent(positions)
        values = {"O": outs[0]}
        if lse is not None:
            values["L"] = lse(*primals, backend=backend, ranges=ranges)
        value = tangent(*primals, *[given[p] for p in positions], *[values[e] for e in extras], backend=backend,
                        ranges=ranges)
    return outs, [value] + zeros[1:]


def _genred_transpose(cotangents, *args, genred, backend, ranges):
    """The transpose of a Sum reduction with respect to the arguments it is linear in (JAX's
    undefined primals: the tangents of `_genred_jvp`): their vector-Jacobian products."""
    red = genred.reduction
    wanted = [p for p, a in enumerate(args) if ad.is_undefined_primal(a)]
    if red.reduction_op != "Sum":
        raise NotImplementedError(f"keomlir: a {red.reduction_op} reduction is not linear in its arguments: "
                                  "JAX cannot transpose it")
    ct = cotangents[0]
    if type(ct) is ad.Zero:
        return [None] * len(args)
    d = genred.derivatives
    for p in wanted:  # the gradient with respect to an argument the reduction is linear in does not read it
        grad_genred = d.gradient(tuple(q for q in wanted if d.grad_axis(q) == d.grad_axis(p)))[0]
        if any(v.attrs[0] in wanted for v in variables(grad_genred.program.formula)):
            raise NotImplementedError(f"keomlir: the reduction is not linear in {red.arg_label(p)}: JAX cannot "
                                      "transpose it")
    values = [jnp.zeros(a.aval.shape, a.aval.dtype) if ad.is_undefined_primal(a) else a for a in args]
    found = d.pullback(values, None, ct, wanted, backend, ranges)
    return [found.get(p) for p in range(len(args))]


def _genred_batch(args, dims, *, genred, backend, ranges):
    """A batch of calls as one call with two leading batch dimensions (size, 1): keomlir's
    batch dimensions, one block-sparse call; unbatched arguments get (1, 1) and are not
    copied.  A batch of block-sparse calls runs one call per element."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    red = genred.reduction
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    if ranges is not None:
        each = [genred_p.bind(*[a if d is None else a[k] for a, d in zip(moved, dims)],
                              genred=genred, backend=backend, ranges=ranges) for k in range(size)]
        return [jnp.stack(column) for column in zip(*each)], [0] * len(each[0])
    batched = []
    for a, d, (_, dim, cat) in zip(moved, dims, red.arguments):
        core = (dim,) if cat == 2 else tuple(a.shape[-2:])  # a parameter as (dim,)
        lead = (1, 1) if d is None else (size, 1)
        batched.append(a.reshape(lead + core))
    outs = genred(*batched, backend=backend)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return [o.reshape((size,) + tuple(o.shape[2:])) for o in outs], [0] * len(outs)


ad.primitive_jvps[genred_p] = _genred_jvp
ad.primitive_transposes[genred_p] = _genred_transpose
batching.primitive_batchers[genred_p] = _genred_batch


# ---- keomlir_kernel_solve ------------------------------------------------------------------------------------
def _solve_jvp(primals, tangents, *, solver, backend, eps, maxiter, verbose, ranges, has_x0):
    """(alpha Id + K) a = b: da = (alpha Id + K)^-1 (db - dalpha a - dK a), dK a the tangent
    of the kernel reduction along the other arguments (one more solve, linear in the tangents)."""
    params = dict(solver=solver, backend=backend, eps=eps, maxiter=maxiter, verbose=verbose, ranges=ranges)
    a = solve_p.bind(*primals, **params, has_x0=has_x0)
    core = solver.core
    n, pos = len(core.genred.reduction.arguments), core.varinvpos
    args, alpha = list(primals[:n]), primals[n]
    given = _given(tangents[:n + 1])
    if all(t is None for t in given):
        return a, _zero(a)
    rhs = given[pos] if given[pos] is not None else jnp.zeros_like(a)
    if given[n] is not None:
        rhs = rhs - given[n] * a
    moved = tuple(k for k in range(n) if k != pos and given[k] is not None)
    if moved:
        args[pos] = a
        tangent = core.genred.derivatives.tangent(moved)[0]  # a Sum: no extra inputs
        rhs = rhs - tangent(*args, *[given[k] for k in moved], backend=backend, ranges=ranges)
    args[pos] = rhs
    return a, solve_p.bind(*args, alpha, **params, has_x0=False)


def _solve_transpose(cotangent, *args, solver, backend, eps, maxiter, verbose, ranges, has_x0):
    pos = solver.core.varinvpos
    n = len(solver.core.genred.reduction.arguments)
    if any(ad.is_undefined_primal(a) for k, a in enumerate(args) if k != pos):
        raise NotImplementedError("keomlir: a KernelSolve is linear in its right-hand side b only: JAX cannot "
                                  "transpose it with respect to another argument")
    if type(cotangent) is ad.Zero:
        return [None] * len(args)
    full = list(args[:n + 1])
    full[pos] = cotangent
    solved = solve_p.bind(*full, solver=solver, backend=backend, eps=eps, maxiter=maxiter, verbose=verbose,
                          ranges=ranges, has_x0=False)
    return [solved if k == pos else None for k in range(len(args))]


def _solve_batch(args, dims, **params):
    """One solve per batch element (each its own conjugate gradient)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    each = [solve_p.bind(*[a if d is None else a[k] for a, d in zip(moved, dims)], **params)
            for k in range(size)]
    return jnp.stack(each), 0


ad.primitive_jvps[solve_p] = _solve_jvp
ad.primitive_transposes[solve_p] = _solve_transpose
batching.primitive_batchers[solve_p] = _solve_batch
