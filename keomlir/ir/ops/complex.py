"""Complex numbers as interleaved pairs of reals: [re0, im0, re1, im1, ...].

The NumPy semantics go through numpy's complex arrays; the lowering works on
(re, im) pairs of components.
"""

from __future__ import annotations

import numpy as np

from ..node import DimensionError
from .base import OPS, Op, cst, mk, register, spread


def to_c(x):
    return x[..., 0::2] + 1j * x[..., 1::2]


def from_c(z):
    z = np.asarray(z, dtype=np.complex128)
    out = np.empty(z.shape[:-1] + (2 * z.shape[-1],))
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def pairs(x):
    return [(x[2 * k], x[2 * k + 1]) for k in range(len(x) // 2)]


def flat(zs):
    return [c for z in zs for c in z]


def _even(name, which, dim):
    if dim % 2:
        raise DimensionError(f"{name}: operand {which} must have even dimension (complex pairs), got {dim}")


def _complex_broadcast(name, df, dg):
    _even(name, "f", df)
    _even(name, "g", dg)
    if df != dg and 2 not in (df, dg):
        raise DimensionError(f"{name}: operand dimensions {df} and {dg} are incompatible "
                             "(equal, or one complex scalar of dimension 2)")
    return max(df, dg)


def _mul(em, a, b):
    (ar, ai), (br, bi) = a, b
    return em.sub(em.mul(ar, br), em.mul(ai, bi)), em.add(em.mul(ar, bi), em.mul(ai, br))


def _div(em, a, b):
    (ar, ai), (br, bi) = a, b
    den = em.add(em.mul(br, br), em.mul(bi, bi))
    return (em.div(em.add(em.mul(ar, br), em.mul(ai, bi)), den),
            em.div(em.sub(em.mul(ai, br), em.mul(ar, bi)), den))


def _exp(em, re, im):
    r = em.call("exp", re)
    return em.mul(r, em.call("cos", im)), em.mul(r, em.call("sin", im))


class PairMap(Op):
    """Each complex number of f mapped on its own: fn(em, re, im) -> tuple of components."""

    out_per_pair = 2

    def infer_dim(self, dims, attrs):
        _even(self.name, "f", dims[0])
        return dims[0] // 2 * self.out_per_pair

    def reference(self, xs, attrs):
        return self.ref(to_c(xs[0]))

    def lower(self, em, xs, attrs):
        return flat(self.fn(em, re, im) for re, im in pairs(xs[0]))


def pair_map(name, ref, fn, out_per_pair=2, doc=""):
    register(type(name, (PairMap,), {"name": name, "__doc__": doc, "ref": staticmethod(ref),
                                     "fn": staticmethod(fn), "out_per_pair": out_per_pair}))


pair_map("ComplexReal", lambda z: z.real, lambda em, re, im: (re,), 1,
         doc="The real parts: a real vector of half the dimension (KeOps's convention).")
pair_map("ComplexImag", lambda z: z.imag, lambda em, re, im: (im,), 1,
         doc="The imaginary parts: a real vector of half the dimension.")
pair_map("Conj", lambda z: from_c(np.conj(z)), lambda em, re, im: (re, em.neg(im)))
pair_map("ComplexExp", lambda z: from_c(np.exp(z)), _exp)
pair_map("ComplexAbs", np.abs, lambda em, re, im: (em.call("sqrt", em.add(em.mul(re, re), em.mul(im, im))),), 1,
         doc="|z| of each complex number: a real vector of half the dimension.")
pair_map("ComplexSquareAbs", lambda z: np.abs(z) ** 2, lambda em, re, im: (em.add(em.mul(re, re), em.mul(im, im)),), 1)
pair_map("ComplexAngle", np.angle, lambda em, re, im: (em.call("atan2", im, re),), 1)


class RealToComplex(Op):
    """A real vector of dimension n made complex (dimension 2n)."""

    def infer_dim(self, dims, attrs):
        return 2 * dims[0]

    def reference(self, xs, attrs):
        return from_c(self.ref(xs[0]))

    def lower(self, em, xs, attrs):
        return flat(self.fn(em, x) for x in xs[0])


def real_to_complex(name, ref, fn):
    register(type(name, (RealToComplex,), {"name": name, "ref": staticmethod(ref), "fn": staticmethod(fn)}))


real_to_complex("Real2Complex", lambda x: x + 0j, lambda em, x: (x, em.const(0)))
real_to_complex("Imag2Complex", lambda x: 1j * x, lambda em, x: (em.const(0), x))
real_to_complex("ComplexExp1j", lambda x: np.exp(1j * x), lambda em, x: (em.call("cos", x), em.call("sin", x)))


@register
class ComplexSum(Op):
    """The sum of the complex numbers of f: dimension 2."""

    name = "ComplexSum"

    def infer_dim(self, dims, attrs):
        _even(self.name, "f", dims[0])
        return 2

    def reference(self, xs, attrs):
        return from_c(to_c(xs[0]).sum(-1, keepdims=True))

    def lower(self, em, xs, attrs):
        ps = pairs(xs[0])
        re, im = ps[0]
        for r, i in ps[1:]:
            re, im = em.add(re, r), em.add(im, i)
        return [re, im]


@register
class ComplexSumT(Op):
    """ComplexSumT(f, d): a complex scalar repeated into a vector of dimension d
    (d/2 complex numbers; the adjoint of ComplexSum)."""

    name, signature = "ComplexSumT", "fi"

    def infer_dim(self, dims, attrs):
        if dims[0] != 2:
            raise DimensionError(f"ComplexSumT: operand f must be a complex scalar (dimension 2), got {dims[0]}")
        _even(self.name, "d", attrs[0])
        return attrs[0]

    def reference(self, xs, attrs):
        return np.tile(xs[0], attrs[0] // 2)

    def lower(self, em, xs, attrs):
        return list(xs[0]) * (attrs[0] // 2)


class ComplexBinary(Op):
    """Element-wise on complex numbers; a complex scalar (dimension 2) broadcasts."""

    signature = "ff"

    def infer_dim(self, dims, attrs):
        return _complex_broadcast(self.name, *dims)

    def reference(self, xs, attrs):
        return from_c(self.ref(to_c(xs[0]), to_c(xs[1])))

    def lower(self, em, xs, attrs):
        a, b = pairs(xs[0]), pairs(xs[1])
        n = max(len(a), len(b))
        a, b = a * (n // len(a)), b * (n // len(b))
        return flat(self.fn(em, p, q) for p, q in zip(a, b))


def complex_binary(name, ref, fn, doc=""):
    register(type(name, (ComplexBinary,), {"name": name, "__doc__": doc, "ref": staticmethod(ref),
                                           "fn": staticmethod(fn)}))


complex_binary("ComplexMult", np.multiply, _mul)
complex_binary("ComplexDivide", np.divide, _div)


@register
class ComplexScal(ComplexBinary):
    """ComplexScal(f, g): a complex scalar (dimension 2) times a complex vector, in either order (as KeOps)."""

    name, ref, fn = "ComplexScal", staticmethod(np.multiply), staticmethod(_mul)

    def infer_dim(self, dims, attrs):
        if 2 not in dims:
            raise DimensionError(f"ComplexScal: one operand must be a complex scalar (dimension 2), "
                                 f"got dimensions {dims[0]} and {dims[1]}")
        return super().infer_dim(dims, attrs)


@register
class ComplexRealScal(Op):
    """ComplexRealScal(f, g): a real scalar (dimension 1) times a complex vector, in either order (as KeOps)."""

    name, signature = "ComplexRealScal", "ff"

    def infer_dim(self, dims, attrs):
        if 1 not in dims:
            raise DimensionError(f"ComplexRealScal: one operand must be a real scalar (dimension 1), "
                                 f"got dimensions {dims[0]} and {dims[1]}")
        which, other = ("g", dims[1]) if dims[0] == 1 else ("f", dims[0])
        _even(self.name, which, other)
        return other

    def reference(self, xs, attrs):
        return xs[0] * xs[1]

    def lower(self, em, xs, attrs):
        a, b = spread(xs, max(len(x) for x in xs))
        return [em.mul(p, q) for p, q in zip(a, b)]


# ---- derivative rules: vjp(node, g, *operands), g the adjoint of the node -------------
# A holomorphic h has adjoint conj(h'(z)) * g; an operand broadcast from dimension 2 gets
# its adjoint summed back with ComplexSum.


def _fit(contribution, operand):
    return mk("ComplexSum", contribution) if operand.dim < contribution.dim else contribution


def _vjp_mult(n, g, a, b):
    return [_fit(mk("ComplexMult", mk("Conj", b), g), a), _fit(mk("ComplexMult", mk("Conj", a), g), b)]


def _vjp_divide(n, g, a, b):  # d(a/b) = da/b - (a/b) db/b
    return [_fit(mk("ComplexDivide", g, mk("Conj", b)), a),
            _fit(mk("Minus", mk("ComplexMult", mk("Conj", mk("ComplexDivide", n, b)), g)), b)]


_VJP = {
    "ComplexReal": lambda n, g, a: [mk("Real2Complex", g)],
    "ComplexImag": lambda n, g, a: [mk("Imag2Complex", g)],
    "Real2Complex": lambda n, g, a: [mk("ComplexReal", g)],
    "Imag2Complex": lambda n, g, a: [mk("ComplexImag", g)],
    "Conj": lambda n, g, a: [mk("Conj", g)],
    "ComplexExp": lambda n, g, a: [mk("ComplexMult", mk("Conj", n), g)],
    "ComplexExp1j": lambda n, g, a: [mk("ComplexImag", mk("ComplexMult", mk("Conj", n), g))],
    "ComplexSquareAbs": lambda n, g, a: [mk("ComplexMult", mk("Real2Complex", mk("Mult", cst(2), g)), a)],
    "ComplexAbs": lambda n, g, a: [mk("ComplexMult", mk("Real2Complex", mk("Divide", g, n)), a)],
    "ComplexAngle": lambda n, g, a: [mk("ComplexMult", mk("Imag2Complex", mk("Divide", g, mk("ComplexSquareAbs", a))), a)],
    "ComplexSum": lambda n, g, a: [mk("ComplexSumT", g, attrs=(a.dim,))],
    "ComplexSumT": lambda n, g, a: [mk("ComplexSum", g)],
    "ComplexMult": _vjp_mult,
    "ComplexScal": _vjp_mult,
    "ComplexDivide": _vjp_divide,
    "ComplexRealScal": lambda n, g, a, b: [mk("Mult", b, g), mk("Mult", a, g)],  # the pass sums the scalar's
}
for _name, _rule in _VJP.items():
    type(OPS[_name]).vjp = (lambda rule: lambda self, node, g: rule(node, g, *node.args))(_rule)
