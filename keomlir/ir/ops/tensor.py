"""Tensor algebra on flat vectors, in KeOps's storage order (row-major: an (n, p)
matrix A has A[k, l] at k*p + l; a tensor of shape dims is flattened C-style).

Every operation here is a contraction of f with g, so all of them lower through
one index plan: for each output component, the (f, g) component pairs whose
products it sums.  The NumPy references are written separately with einsum.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..node import DimensionError
from .base import Op, mk, register
from .vector import _sum_of_products


def _view(x, dims):
    """(..., prod(dims)) as (..., *dims)."""
    return x.reshape(x.shape[:-1] + tuple(dims))


def _flatten(x, ndims):
    """(..., *shape) with `ndims` trailing tensor axes as (..., prod(shape))."""
    return x.reshape(x.shape[: x.ndim - ndims] + (-1,))


@functools.lru_cache(maxsize=None)
def _plan(dimf, dimg, contf, contg, perm=None):
    """For each output component, the (f index, g index) pairs of its sum.

    Result axes are the free axes of f then those of g; result axis k goes to
    output axis perm[k] (KeOps's convention for TensorDot's permutation)."""
    freef = [a for a in range(len(dimf)) if a not in contf]
    freeg = [a for a in range(len(dimg)) if a not in contg]
    fi = np.arange(math.prod(dimf)).reshape(dimf).transpose(freef + list(contf))
    gi = np.arange(math.prod(dimg)).reshape(dimg).transpose(freeg + list(contg))
    fi = fi.reshape([dimf[a] for a in freef] + [1] * len(freeg) + [-1])
    gi = gi.reshape([1] * len(freef) + [dimg[a] for a in freeg] + [-1])
    fi, gi = np.broadcast_arrays(fi, gi)
    if perm is not None:
        fi, gi = (np.moveaxis(a, range(len(perm)), perm) for a in (fi, gi))
    n_terms = fi.shape[-1]
    return tuple(tuple(zip(p.tolist(), q.tolist()))
                 for p, q in zip(fi.reshape(-1, n_terms), gi.reshape(-1, n_terms)))


class Contraction(Op):
    """f and g contracted as the tensors `layout` describes."""

    signature = "ff"

    def layout(self, df, dg, attrs):
        """(dimf, dimg, contf, contg, perm) for operand dimensions df, dg."""
        raise NotImplementedError

    def lower(self, em, xs, attrs):
        f, g = xs
        plan = _plan(*self.layout(len(f), len(g), attrs))
        return [_sum_of_products(em, [(f[i], g[j]) for i, j in terms]) for terms in plan]


def _check_multiple(name, da, dv, vname):
    if da % dv:
        raise DimensionError(
            f"{name}: the dimension of A ({da}) must be a multiple of the dimension of {vname} ({dv})")


@register
class MatVecMult(Contraction):
    """MatVecMult(A, v): A (n*p, an n x p matrix) times v (p) -> n."""

    name = "MatVecMult"

    def infer_dim(self, dims, attrs):
        _check_multiple(self.name, dims[0], dims[1], "v")
        return dims[0] // dims[1]

    def layout(self, da, dv, attrs):
        return (da // dv, dv), (dv,), (1,), (0,), None

    def reference(self, xs, attrs):
        a, v = xs
        return np.einsum("...kl,...l->...k", _view(a, (-1, v.shape[-1])), v)

    def vjp(self, node, g):
        a, v = node.args
        return [mk("TensorProd", g, v), mk("VecMatMult", g, a)]


@register
class VecMatMult(Contraction):
    """VecMatMult(v, A): v (n) times A (n*p, an n x p matrix) -> p."""

    name = "VecMatMult"

    def infer_dim(self, dims, attrs):
        _check_multiple(self.name, dims[1], dims[0], "v")
        return dims[1] // dims[0]

    def layout(self, dv, da, attrs):
        return (dv,), (dv, da // dv), (0,), (0,), None

    def reference(self, xs, attrs):
        v, a = xs
        return np.einsum("...k,...kl->...l", v, _view(a, (v.shape[-1], -1)))

    def vjp(self, node, g):
        v, a = node.args
        return [mk("MatVecMult", a, g), mk("TensorProd", v, g)]


@register
class TensorProd(Contraction):
    """TensorProd(f, g): the outer product, out[k*p + l] = f[k] g[l]."""

    name = "TensorProd"

    def infer_dim(self, dims, attrs):
        return dims[0] * dims[1]

    def layout(self, df, dg, attrs):
        return (df,), (dg,), (), (), None

    def reference(self, xs, attrs):
        f, g = xs
        return _flatten(np.einsum("...k,...l->...kl", f, g), 2)

    def vjp(self, node, g):
        a, b = node.args
        return [mk("MatVecMult", g, b), mk("VecMatMult", a, g)]


# ---- Kron and TensorDot: index-list arguments ------------------------------------


def _check_shape(name, which, dims, dim):
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise DimensionError(f"{name}: dim{which} must list positive sizes, got {tuple(dims)}")
    if math.prod(dims) != dim:
        raise DimensionError(
            f"{name}: dim{which} {tuple(dims)} holds {math.prod(dims)} components "
            f"but operand {which} has dimension {dim}")


def _check_axes(name, which, axes, ndims):
    if any(not 0 <= a < ndims for a in axes) or len(set(axes)) != len(axes):
        raise DimensionError(
            f"{name}: cont{which} {tuple(axes)} must list distinct axes in [0, {ndims})")


def _tensordot_vjp(node, g, dimf, dimg, contf, contg, perm):
    """Adjoints of a contraction: G contracted with the other operand over the output
    axes that operand supplied, then permuted back into the operand's own axis order."""
    freef = [a for a in range(len(dimf)) if a not in contf]
    freeg = [a for a in range(len(dimg)) if a not in contg]
    perm = list(perm) if perm is not None else list(range(len(freef) + len(freeg)))
    res = [dimf[a] for a in freef] + [dimg[a] for a in freeg]
    out = [0] * len(res)
    for k, p in enumerate(perm):
        out[p] = res[k]
    permf, permg = perm[:len(freef)], perm[len(freef):]

    def adjoint(other, dim_other, cont_mine, cont_other, free_mine, free_other, perm_mine, perm_other):
        back = [free_mine[k] for k in sorted(range(len(free_mine)), key=perm_mine.__getitem__)]
        back += [cont_mine[cont_other.index(a)] for a in sorted(cont_other)]
        return mk("TensorDot", g, other, attrs=(tuple(out), tuple(dim_other), tuple(perm_other),
                                                tuple(free_other), tuple(back)))

    f_op, g_op = node.args
    return [adjoint(g_op, dimg, list(contf), list(contg), freef, freeg, permf, permg),
            adjoint(f_op, dimf, list(contg), list(contf), freeg, freef, permg, permf)]


@register
class Kron(Contraction):
    """Kron(f, g, dimf, dimg): Kronecker product (as numpy.kron) of two tensors with
    as many axes; the output has shape (dimf[0]*dimg[0], dimf[1]*dimg[1], ...)."""

    name, signature = "Kron", "ffnn"

    def infer_dim(self, dims, attrs):
        dimf, dimg = attrs
        _check_shape(self.name, "f", dimf, dims[0])
        _check_shape(self.name, "g", dimg, dims[1])
        if len(dimf) != len(dimg):
            raise DimensionError(
                f"{self.name}: dimf {tuple(dimf)} and dimg {tuple(dimg)} must have as many axes")
        return dims[0] * dims[1]

    def layout(self, df, dg, attrs):
        r = len(attrs[0])  # f's axis t goes to output axis 2t, g's to 2t + 1
        return tuple(attrs[0]), tuple(attrs[1]), (), (), tuple(range(0, 2 * r, 2)) + tuple(range(1, 2 * r, 2))

    def reference(self, xs, attrs):
        dimf, dimg = attrs
        r = len(dimf)
        letters = "abcdefghijklmnopqrstuvwxyz"
        sf, sg = letters[:r], letters[r:2 * r]
        spec = f"...{sf},...{sg}->...{''.join(a + b for a, b in zip(sf, sg))}"
        return _flatten(np.einsum(spec, _view(xs[0], dimf), _view(xs[1], dimg)), 2 * r)

    def vjp(self, node, g):
        return _tensordot_vjp(node, g, *self.layout(None, None, node.attrs))


@register
class TensorDot(Contraction):
    """TensorDot(f, g, dimf, dimg, contf, contg[, perm]): numpy.tensordot of f (shape
    dimf) and g (shape dimg) over axes contf/contg; free axes of f then of g, result
    axis k moved to output axis perm[k] (KeOps's convention)."""

    name, signature = "TensorDot", "ffnnnnn?"

    def infer_dim(self, dims, attrs):
        dimf, dimg, contf, contg = attrs[:4]
        name = self.name
        _check_shape(name, "f", dimf, dims[0])
        _check_shape(name, "g", dimg, dims[1])
        _check_axes(name, "f", contf, len(dimf))
        _check_axes(name, "g", contg, len(dimg))
        if len(contf) != len(contg):
            raise DimensionError(
                f"{name}: contf {tuple(contf)} and contg {tuple(contg)} must list as many axes")
        for a, b in zip(contf, contg):
            if dimf[a] != dimg[b]:
                raise DimensionError(
                    f"{name}: contracted axes have different sizes: axis {a} of f has {dimf[a]}, "
                    f"axis {b} of g has {dimg[b]}")
        nfree = len(dimf) + len(dimg) - 2 * len(contf)
        if len(attrs) > 4 and sorted(attrs[4]) != list(range(nfree)):
            raise DimensionError(
                f"{name}: perm {tuple(attrs[4])} must be a permutation of 0..{nfree - 1} "
                f"(one entry per free axis)")
        return dims[0] * dims[1] // math.prod(dimf[a] for a in contf) ** 2

    def layout(self, df, dg, attrs):
        dimf, dimg, contf, contg = (tuple(a) for a in attrs[:4])
        return dimf, dimg, contf, contg, tuple(attrs[4]) if len(attrs) > 4 else None

    def reference(self, xs, attrs):
        dimf, dimg, contf, contg = attrs[:4]
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        sf = [next(letters) for _ in dimf]
        sg = [sf[contf[list(contg).index(b)]] if b in contg else next(letters) for b in range(len(dimg))]
        res = [c for a, c in enumerate(sf) if a not in contf] + [c for b, c in enumerate(sg) if b not in contg]
        if len(attrs) > 4:
            out = [""] * len(res)
            for k, p in enumerate(attrs[4]):
                out[p] = res[k]
            res = out
        spec = f"...{''.join(sf)},...{''.join(sg)}->...{''.join(res)}"
        return _flatten(np.einsum(spec, _view(xs[0], dimf), _view(xs[1], dimg)), len(res))

    def vjp(self, node, g):
        return _tensordot_vjp(node, g, *self.layout(None, None, node.attrs))
