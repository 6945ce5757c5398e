"""The JAX front end: keomlir's `Genred`, `LazyTensor` (`Vi`, `Vj`, `Pm`) and `KernelSolve`
on `jax.Array`s, with the formulas, reductions, options and errors of `keomlir.numpy`.

Calls work eagerly and inside `jax.jit` (each call one primitive, lowered to an XLA FFI
custom call: see `primitives.py`), are differentiable by `jax.grad`, `jax.jvp`,
`jax.jacfwd`, `jax.jacrev`, `jax.hessian` to any order through keomlir's own autodiff,
and batch under `jax.vmap` as one block-sparse call (`rules.py`).  float32 and float64
(with `jax_enable_x64`; index outputs are int64 then, int32 without it), float16 and
bfloat16 (computed in float32), CPU arrays:
an array on a GPU gets an error until keomlir's GPU backend has run on hardware.

>>> g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)
>>> jax.jit(lambda x, y, b: g(x, y, b).sum())(x, y, b)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .. import solve
from ..arrays import JAX
from ..calls import GenredBase, as_columns, batch_plan, generic_reductions, stack_batch
from ..backends import registry
from ..compile import check_backend
from ..derivatives import Derivatives
from ..lazy import ComplexMixin, GenericLazyTensor, make_variable_helpers
from ..numpy import KernelSolve as NumpyKernelSolve
from ..solve import ConvergenceError  # noqa: F401
from . import rules  # noqa: F401  (the primitives' derivative and batching rules)
from .primitives import genred_p, solve_p, static_ranges

__all__ = ["Genred", "KernelSolve", "LazyTensor", "ComplexLazyTensor", "Vi", "Vj", "Pm", "Var",
           "generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]


class Genred(GenredBase):
    """A generic reduction on jax.Arrays (see keomlir.numpy.Genred): `Red_j F(x_i, y_j, p)`
    (axis=1) or `Red_i ...` (axis=0).  No `out=`: JAX arrays are immutable."""

    def _set_reduction(self, reduction):
        self.reduction = reduction
        self.derivatives = Derivatives(Genred, reduction)

    def __repr__(self):  # as JAX prints the primitive's parameters (jax.make_jaxpr)
        red = self.reduction
        return f"Genred({red.reduction_op}, axis={red.axis}, {len(red.arguments)} arguments)"

    def __call__(self, *args, backend="auto", device_id=-1, ranges=None):
        red = self.reduction
        _check_arrays(red, args)
        backend = _check_backend(backend)
        args = as_columns(red, args)
        plan = batch_plan(red, [tuple(a.shape) for a in args])
        if plan is not None:  # leading batch dimensions: one block-sparse call for the whole batch
            if ranges is not None:
                raise ValueError("ranges: block-sparse reductions with batch dimensions are not supported; "
                                 "call once per batch element")
            recat, stacked, batch_ranges, unstack = stack_batch(red, plan, args, JAX)
            outs = unstack(self._with_categories(recat)._bind(stacked, backend, static_ranges(batch_ranges)))
        else:
            outs = self._bind(args, backend, static_ranges(ranges))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _bind(self, args, backend, ranges):
        return genred_p.bind(*args, genred=self, backend=backend, ranges=ranges)

    def _with_categories(self, positions):
        """This Genred with the parameters at `positions` made output-index variables (a
        batched call's parameters that vary over the batch); cached."""
        if not positions:
            return self
        red = self.reduction
        return self.derivatives.once(("categories", positions), lambda: _genred_of(
            red.with_categories(positions, 0 if red.axis == 1 else 1)))


def _genred_of(reduction):
    genred = Genred.__new__(Genred)
    genred._set_reduction(reduction)
    return genred


def _check_arrays(red, args):
    """Every argument a jax.Array on a CPU device (traced values: their device is the program's)."""
    for k, a in enumerate(args):
        if not isinstance(a, jax.Array):
            raise TypeError(f"{red.arg_label(k)}: expected a jax.Array, got {type(a).__name__}")
        if not isinstance(a, jax.core.Tracer):
            platforms = {d.platform for d in a.devices()}
            if platforms != {"cpu"}:
                raise ValueError(f"{red.arg_label(k)}: the array is on {', '.join(sorted(platforms))}: keomlir.jax runs "
                                 "on the CPU until keomlir's GPU backend has run on hardware; move it with "
                                 "jax.device_put(x, jax.devices('cpu')[0])")


def _check_backend(backend):
    name = registry.canonical(backend) if isinstance(backend, str) else None
    if name is not None and registry.get(name).kind == "gpu":
        raise ValueError(f"backend={backend!r}: keomlir.jax runs on the CPU ('auto', 'CPU' or 'reference') until "
                         "keomlir's GPU backend has run on hardware")
    return check_backend(backend)


class KernelSolve(solve.KernelSolve):
    """The JAX KernelSolve (see keomlir.numpy.KernelSolve): `(alpha Id + K) a = b` by conjugate
    gradient, differentiable with respect to every argument and to alpha (a number or a 0-d
    array), under jax.jit, vmap and every derivative transform.

    >>> Kinv = KernelSolve("Exp(-g*SqDist(x,y)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"],
    ...                    "b", axis=1)
    >>> a = Kinv(x, x, b, g, alpha=0.01)
    """

    genred_class = Genred
    arrays = JAX

    def __repr__(self):
        return f"KernelSolve({self.core.label})"

    @functools.cached_property
    def numpy_core(self):
        """The solver of the same reduction over NumPy arrays, which the primitive runs."""
        return NumpyKernelSolve.from_spec(self.core.spec).core

    def _alpha(self, alpha):
        if isinstance(alpha, jax.Array):
            if alpha.size != 1:
                raise ValueError(f"alpha must be a number or a one-element array, got shape {tuple(alpha.shape)}")
            return alpha
        return solve.check_alpha(alpha)

    def _solve(self, args, alpha, opts):
        backend, _, eps, maxiter, x0, verbose, ranges = opts
        solve.cg_setup(1, 1, eps, maxiter, True, self.core.label)  # eps and maxiter checked now, not at run time
        _check_arrays(self.core.genred.reduction, args)
        b = args[self.core.varinvpos]
        alpha = jnp.asarray(alpha, dtype=b.dtype).reshape(())
        extra = []
        if x0 is not None:
            if not isinstance(x0, jax.Array) or tuple(x0.shape) != tuple(b.shape):
                raise ValueError(f"x0 must be a jax.Array of the shape of b {tuple(b.shape)}, got "
                                 f"{tuple(getattr(x0, 'shape', ())) or type(x0).__name__}")
            extra = [x0.astype(b.dtype)]
        return solve_p.bind(*args, alpha, *extra, solver=self, backend=_check_backend(backend), eps=float(eps),
                            maxiter=None if maxiter is None else int(maxiter), verbose=bool(verbose),
                            ranges=static_ranges(ranges), has_x0=x0 is not None)


class LazyTensor(GenericLazyTensor):
    """A symbolic (M, N, D) tensor of jax.Arrays; see keomlir.lazy.GenericLazyTensor."""

    _arrays = JAX
    genred_class = Genred
    kernel_solve_class = KernelSolve


class ComplexLazyTensor(ComplexMixin, LazyTensor):
    """A symbolic (M, N, D) tensor of complex jax.Arrays; see keomlir.lazy.complex."""


Var, Vi, Vj, Pm = make_variable_helpers(LazyTensor)
generic_sum, generic_logsumexp, generic_argmin, generic_argkmin = generic_reductions(Genred)
