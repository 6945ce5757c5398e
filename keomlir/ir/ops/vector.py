"""Operations on whole vectors: reductions over components, norms, slicing."""

from __future__ import annotations

import numpy as np

from ..node import WIDE_THRESHOLD, DimensionError
from .base import Op, broadcast_dim, cst, mk, no_derivative, register, require_dim, spread


def _tree_sum(em, vals):
    """Pairwise sum: shorter dependency chains than a left fold."""
    vals = list(vals)
    while len(vals) > 1:
        vals = [em.add(vals[k], vals[k + 1]) if k + 1 < len(vals) else vals[k]
                for k in range(0, len(vals), 2)]
    return vals[0]


def _sum_of_products(em, pairs):
    """Σ p q over the (p, q) pairs as fused multiply-adds: one multiply and n - 1 FMAs
    (each FMA rounds once, so no less accurate than a multiply and an add), in up to 4
    interleaved chains for long sums (their latencies overlap), summed pairwise."""
    pairs = list(pairs)
    chains = max(1, min(4, len(pairs) // 4))
    sums = []
    for c in range(chains):
        (p, q), *rest = pairs[c::chains]
        acc = em.mul(p, q)
        for p, q in rest:
            acc = em.fma(p, q, acc)
        sums.append(acc)
    return _tree_sum(em, sums)


def _dot(em, a, b):
    a, b = spread([a, b], max(len(a), len(b)))
    return _sum_of_products(em, zip(a, b))


def _arg_extreme(em, xs, better):
    """Value and index of the first component winning `better` (NaN wins, as NumPy)."""
    best, idx = xs[0], em.const(0)
    for k, x in enumerate(xs[1:], 1):
        take = em.or_(em.cmp(better, x, best), em.and_(em.isnan(x), em.not_(em.isnan(best))))
        best = em.select(take, x, best)
        idx = em.select(take, em.const(k), idx)
    return best, idx


class Scalar(Op):
    """Operations with a scalar result."""

    def infer_dim(self, dims, attrs):
        return 1


@register
class Sum(Scalar):
    name = "Sum"

    def reference(self, xs, attrs):
        return xs[0].sum(-1, keepdims=True)

    def vjp(self, node, g):
        return [mk("SumT", g, attrs=(node.args[0].dim,))]

    def lower(self, em, xs, attrs):
        return [_tree_sum(em, xs[0])]

    def simplify(self, node):
        return node.args[0] if node.args[0].dim == 1 else None


@register
class Max(Scalar):
    name = "Max"

    def reference(self, xs, attrs):
        return xs[0].max(-1, keepdims=True)

    def vjp(self, node, g):  # through the selected component
        (a,) = node.args
        return [mk("Mult", g, mk("OneHot", mk("ArgMax", a), attrs=(a.dim,)))]

    def lower(self, em, xs, attrs):
        return [_arg_extreme(em, xs[0], ">")[0]]


@register
class Min(Scalar):
    name = "Min"

    def reference(self, xs, attrs):
        return xs[0].min(-1, keepdims=True)

    def vjp(self, node, g):  # through the selected component
        (a,) = node.args
        return [mk("Mult", g, mk("OneHot", mk("ArgMin", a), attrs=(a.dim,)))]

    def lower(self, em, xs, attrs):
        return [_arg_extreme(em, xs[0], "<")[0]]


@register
class ArgMax(Scalar):
    name = "ArgMax"

    def reference(self, xs, attrs):
        return xs[0].argmax(-1)[..., None].astype(np.float64)

    vjp = staticmethod(no_derivative)

    def lower(self, em, xs, attrs):
        return [_arg_extreme(em, xs[0], ">")[1]]


@register
class ArgMin(Scalar):
    name = "ArgMin"

    def reference(self, xs, attrs):
        return xs[0].argmin(-1)[..., None].astype(np.float64)

    vjp = staticmethod(no_derivative)

    def lower(self, em, xs, attrs):
        return [_arg_extreme(em, xs[0], "<")[1]]


@register
class SqNorm2(Scalar):
    name = "SqNorm2"

    def reference(self, xs, attrs):
        return (xs[0] ** 2).sum(-1, keepdims=True)

    def vjp(self, node, g):
        return [_twice(g, node.args[0])]

    def lower(self, em, xs, attrs):
        return [_dot(em, xs[0], xs[0])]


@register
class Norm2(Scalar):
    name = "Norm2"

    def reference(self, xs, attrs):
        return np.sqrt((xs[0] ** 2).sum(-1, keepdims=True))

    def vjp(self, node, g):
        return [mk("Mult", g, mk("Normalize", node.args[0]))]

    def lower(self, em, xs, attrs):
        return [em.call("sqrt", _dot(em, xs[0], xs[0]))]


@register
class Scalprod(Scalar):
    """(f|g): the scalar product."""

    name, signature = "Scalprod", "ff"

    def infer_dim(self, dims, attrs):
        if dims[0] != dims[1]:
            raise DimensionError(f"Scalprod: operands must have equal dimensions, got {dims[0]} and {dims[1]}")
        return 1

    def reference(self, xs, attrs):
        return (xs[0] * xs[1]).sum(-1, keepdims=True)

    def vjp(self, node, g):
        a, b = node.args
        return [mk("Mult", g, b), mk("Mult", g, a)]

    def lower(self, em, xs, attrs):
        return [_dot(em, xs[0], xs[1])]

    def format(self, node, operand_texts, names):
        return f"({operand_texts[0]}|{operand_texts[1]})"


@register
class SqDist(Scalar):
    name, signature = "SqDist", "ff"

    def infer_dim(self, dims, attrs):
        broadcast_dim(self.name, dims)
        return 1

    def reference(self, xs, attrs):
        return ((xs[0] - xs[1]) ** 2).sum(-1, keepdims=True)

    def vjp(self, node, g):
        a, b = node.args
        d = _twice(g, mk("Subtract", a, b))
        return [d, mk("Minus", d)]

    def lower(self, em, xs, attrs):
        a, b = spread(xs, max(len(x) for x in xs))
        d = [em.sub(p, q) for p, q in zip(a, b)]
        return [_dot(em, d, d)]


def _twice(g, v):
    """2 g v for a scalar g: (2 g) v where v is unrolled, one multiply a pair rather than one a
    component (each then fuses into a sum's multiply-add; exact, 2 being a power of two); 2 (g v)
    for a wide v (a loop over components either way: there, the GPU's registers keep it so)."""
    if v.dim <= WIDE_THRESHOLD:
        return mk("Mult", mk("Mult", cst(2), g), v)
    return mk("Mult", cst(2), mk("Mult", g, v))


def _weighted_rule(name, ds, df):
    if ds not in (1, df, df * df):
        raise DimensionError(
            f"{name}: the weight must have dimension 1, {df} or {df * df} for a vector of dimension {df}, got {ds}"
        )


def _ref_weighted(s, f):
    d = f.shape[-1]
    if s.shape[-1] == d * d and d > 1:
        S = s.reshape(s.shape[:-1] + (d, d))
        return np.einsum("...k,...kl,...l->...", f, S, f)[..., None]
    return (s * f * f).sum(-1, keepdims=True)


def _vjp_weighted(g, s, f):
    """Adjoints of WeightedSqNorm(s, f) for a scalar, diagonal or full-matrix weight."""
    d = f.dim
    if s.dim == d * d and d > 1:
        return [mk("Mult", g, mk("TensorProd", f, f)),
                mk("Mult", g, mk("Add", mk("MatVecMult", s, f), mk("VecMatMult", f, s)))]
    ds = mk("Mult", g, mk("SqNorm2", f)) if s.dim == 1 else mk("Mult", g, mk("Square", f))
    return [ds, _twice(g, mk("Mult", s, f))]


def _lower_weighted(em, s, f):
    d = len(f)
    if len(s) == d * d and d > 1:
        return _sum_of_products(em, [(em.mul(f[k], s[k * d + l]), f[l]) for k in range(d) for l in range(d)])
    s = s * d if len(s) == 1 else s
    return _sum_of_products(em, [(sk, em.mul(fk, fk)) for sk, fk in zip(s, f)])


@register
class WeightedSqNorm(Scalar):
    """s scalar, diagonal (dim f) or full symmetric matrix (dim f squared)."""

    name, signature = "WeightedSqNorm", "ff"

    def infer_dim(self, dims, attrs):
        _weighted_rule(self.name, dims[0], dims[1])
        return 1

    def reference(self, xs, attrs):
        return _ref_weighted(xs[0], xs[1])

    def vjp(self, node, g):
        return _vjp_weighted(g, *node.args)

    def lower(self, em, xs, attrs):
        return [_lower_weighted(em, xs[0], xs[1])]


@register
class WeightedSqDist(Scalar):
    name, signature = "WeightedSqDist", "fff"

    def infer_dim(self, dims, attrs):
        df = broadcast_dim(self.name, dims[1:])
        _weighted_rule(self.name, dims[0], df)
        return 1

    def reference(self, xs, attrs):
        return _ref_weighted(xs[0], xs[1] - xs[2])

    def vjp(self, node, g):
        s, a, b = node.args
        ds, dd = _vjp_weighted(g, s, mk("Subtract", a, b))
        return [ds, dd, mk("Minus", dd)]

    def lower(self, em, xs, attrs):
        a, b = spread(xs[1:], max(len(x) for x in xs[1:]))
        return [_lower_weighted(em, xs[0], [em.sub(p, q) for p, q in zip(a, b)])]


@register
class Normalize(Op):
    """f / |f|, and 0 for the zero vector (Rsqrt's convention)."""

    name = "Normalize"

    def infer_dim(self, dims, attrs):
        return dims[0]

    def reference(self, xs, attrs):
        n2 = (xs[0] ** 2).sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return xs[0] * np.where(n2 == 0, 0.0, 1.0 / np.sqrt(n2))

    def vjp(self, node, g):  # (g - n (n|g)) / |a|
        (a,) = node.args
        return [mk("Mult", mk("Rsqrt", mk("SqNorm2", a)),
                   mk("Subtract", g, mk("Mult", node, mk("Scalprod", node, g))))]

    def lower(self, em, xs, attrs):
        n2 = _dot(em, xs[0], xs[0])
        r = em.select(em.cmp("==", n2, em.const(0)), em.const(0), em.div(em.const(1), em.call("sqrt", n2)))
        return [em.mul(x, r) for x in xs[0]]


@register
class SumT(Op):
    """SumT(f, d): a scalar repeated d times (the adjoint of Sum)."""

    name, signature = "SumT", "fi"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], 1)
        return attrs[0]

    def reference(self, xs, attrs):
        return np.repeat(xs[0], attrs[0], axis=-1)

    def vjp(self, node, g):
        return [mk("Sum", g)]

    def lower(self, em, xs, attrs):
        return xs[0] * attrs[0]


def _check_range(name, start, length, dim):
    if start < 0 or length < 1 or start + length > dim:
        raise DimensionError(
            f"{name}: components [{start}, {start + length}) are out of range for dimension {dim}"
        )


@register
class Elem(Op):
    name, signature = "Elem", "fi"

    def infer_dim(self, dims, attrs):
        _check_range(self.name, attrs[0], 1, dims[0])
        return 1

    def reference(self, xs, attrs):
        return xs[0][..., attrs[0]:attrs[0] + 1]

    def vjp(self, node, g):
        return [mk("ElemT", g, attrs=(node.args[0].dim, node.attrs[0]))]

    def lower(self, em, xs, attrs):
        return [xs[0][attrs[0]]]


@register
class ElemT(Op):
    """ElemT(f, n, m): a vector of dimension n, zero but for f at component m."""

    name, signature = "ElemT", "fii"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], 1)
        _check_range(self.name, attrs[1], 1, attrs[0])
        return attrs[0]

    def reference(self, xs, attrs):
        n, m = attrs
        out = np.zeros(xs[0].shape[:-1] + (n,))
        out[..., m] = xs[0][..., 0]
        return out

    def vjp(self, node, g):
        return [mk("Elem", g, attrs=(node.attrs[1],))]

    def lower(self, em, xs, attrs):
        n, m = attrs
        return [xs[0][0] if k == m else em.const(0) for k in range(n)]


@register
class Extract(Op):
    name, signature = "Extract", "fii"

    def infer_dim(self, dims, attrs):
        _check_range(self.name, attrs[0], attrs[1], dims[0])
        return attrs[1]

    def reference(self, xs, attrs):
        return xs[0][..., attrs[0]:attrs[0] + attrs[1]]

    def vjp(self, node, g):
        return [mk("ExtractT", g, attrs=(node.attrs[0], node.args[0].dim))]

    def lower(self, em, xs, attrs):
        return xs[0][attrs[0]:attrs[0] + attrs[1]]

    def simplify(self, node):
        a = node.args[0]
        return a if node.attrs == (0, a.dim) else None


@register
class ExtractT(Op):
    """ExtractT(f, start, dim): f placed at `start` in a zero vector of dimension `dim`."""

    name, signature = "ExtractT", "fii"

    def infer_dim(self, dims, attrs):
        _check_range(self.name, attrs[0], dims[0], attrs[1])
        return attrs[1]

    def reference(self, xs, attrs):
        start, dim = attrs
        out = np.zeros(xs[0].shape[:-1] + (dim,))
        out[..., start:start + xs[0].shape[-1]] = xs[0]
        return out

    def vjp(self, node, g):
        return [mk("Extract", g, attrs=(node.attrs[0], node.args[0].dim))]

    def lower(self, em, xs, attrs):
        start, dim = attrs
        zero = em.const(0)
        return [zero] * start + list(xs[0]) + [zero] * (dim - start - len(xs[0]))


@register
class Concat(Op):
    name, signature = "Concat", "ff"

    def infer_dim(self, dims, attrs):
        return dims[0] + dims[1]

    def reference(self, xs, attrs):
        a, b = np.broadcast_arrays(xs[0][..., :1], xs[1][..., :1])
        shape = a.shape[:-1]
        return np.concatenate([np.broadcast_to(xs[0], shape + xs[0].shape[-1:]),
                               np.broadcast_to(xs[1], shape + xs[1].shape[-1:])], axis=-1)

    def vjp(self, node, g):
        a, b = node.args
        return [mk("Extract", g, attrs=(0, a.dim)), mk("Extract", g, attrs=(a.dim, b.dim))]

    def lower(self, em, xs, attrs):
        return list(xs[0]) + list(xs[1])


@register
class OneHot(Op):
    """OneHot(f, d): 1 at component round(f), 0 elsewhere."""

    name, signature = "OneHot", "fi"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], 1)
        if attrs[0] < 1:
            raise DimensionError(f"OneHot: dimension must be >= 1, got {attrs[0]}")
        return attrs[0]

    def reference(self, xs, attrs):
        r = np.sign(xs[0]) * np.floor(np.abs(xs[0]) + 0.5)
        return (r == np.arange(attrs[0])).astype(np.float64)

    vjp = staticmethod(no_derivative)

    def lower(self, em, xs, attrs):
        r = em.call("round", xs[0][0])
        return [em.to_float(em.cmp("==", r, em.const(k))) for k in range(attrs[0])]


# ---- factorization hints ----------------------------------------------------------------------------


@register
class Factorize(Op):
    """Factorize(f, g): f, with g computed once (pykeops's explicit factorization).  keomlir's
    nodes are shared and CSE computes every repeated subformula once, so it is f itself."""

    name, signature = "Factorize", "ff"

    def infer_dim(self, dims, attrs):
        return dims[0]

    def reference(self, xs, attrs):
        return xs[0]

    def lower(self, em, xs, attrs):
        return xs[0]

    def vjp(self, node, g):
        return [g, None]

    def simplify(self, node):
        return node.args[0]


@register
class AutoFactorize(Factorize):
    """AutoFactorize(f): f, its repeated subformulas computed once (what CSE always does)."""

    name, signature = "AutoFactorize", "f"

    def vjp(self, node, g):
        return [g]
