"""Random well-typed formulas (hypothesis), checked three ways.

A strategy builds formula STRINGS over x = Vi(dx), y = Vj(dy), p = Pm(dp), s = Vi(1), t = Vj(1),
tracking each subexpression's dimension, together with an independent NumPy evaluator of the same
formula (written here, never calling keomlir's own `reference` methods) on the broadcast arrays
x[:, None, :], y[None, :, :], p[None, None, :].  Each formula is then

1. compiled (machine code) for several reductions, both axes, float64 and float32, and compared
   with the reference backend and with the NumPy evaluator;
2. interpreted by the reference backend before and after the passes (`Reduction.parsed` against the
   simplified + CSE'd `program`): the passes must preserve meaning.

Tolerances come from a forward error analysis done while the formula is built: every expression
carries a bound on |value| and a bound on its absolute rounding error (in units of the dtype's unit
roundoff), propagated through Lipschitz constants of each operation.  Inputs are quarter-integers,
so that many subexpressions are computed *exactly* in float32 and float64 alike (the expression
tracks whether it is); discontinuous operations (Floor, Round, Sign, Step, comparisons, IfElse's
condition, Mod, OneHot, ArgMin/ArgMax, Sqrt/Rsqrt/XLogX at 0, Normalize) are only applied to exact
operands, so a rounding difference can never flip them, and ties (frequent with such inputs) must
be broken identically.  Domains are kept well conditioned: Log(Abs(f) + 1), Inv(Square(f) + 1),
Asin(Clamp(f, -1, 1) / 2), Exp of a bounded argument, and so on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from keomlir.backends import reference
from keomlir.numpy import Genred

from conftest import assert_close, examples

MAX_DEPTH = 4
BMAX = 1e4  # larger subexpressions are squashed (Clamp, Atan, Sin, f / (|f| + 1))
EXACT_BITS = 20  # an exact value needs log2(bound) + k <= EXACT_BITS bits (float32 has 24)
LIBM = 4.0  # own error of a math function, in roundoffs of |result|
SAFETY = 8.0  # slack on the error bound at comparison time
UNIT = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
MAX_ROWS = 16
MAX_TEXT = 320  # characters of a case (its first part may be longer)


# ---- expressions: text, dimension, NumPy evaluator and error analysis ---------------------------


@dataclass(frozen=True, eq=False)
class E:
    text: str
    dim: int
    fn: Callable = field(repr=False)  # env -> float64 array broadcastable to (M, N, dim)
    bound: float = field(repr=False, default=1.0)  # |value| <= bound
    err: float = field(repr=False, default=0.0)  # |computed - exact| <= err * unit roundoff
    exact: bool = field(repr=False, default=False)  # computed exactly in float32 and float64
    k: int = field(repr=False, default=0)  # exact values are integers / 2**k


def _fits(bound, k):
    return math.log2(max(bound, 1.0)) + k <= EXACT_BITS


def node(text, dim, fn, bound, args=(), lips=(), own=1.0, k=None):
    """A new expression.  Exact when every operand is, the operation is exact on exact values
    (k is given: the denominator exponent) and the result fits the mantissa.  Otherwise its error
    is the operands' errors times the operation's Lipschitz constants plus its own rounding."""
    bound = float(bound)
    if k is not None and all(a.exact for a in args) and _fits(bound, k):
        return E(text, dim, fn, bound, 0.0, True, k)
    err = sum(lip * a.err for lip, a in zip(lips, args)) + own * bound
    return E(text, dim, fn, bound, err, False, 0)


def bdim(*es):
    return max(e.dim for e in es)


def lit(v):
    """An integer literal (IntCst): `2`, or `(-2)`."""
    arr = np.full((1, 1, 1), float(v))
    return E(str(v) if v >= 0 else f"({v})", 1, lambda env: arr, abs(v), 0.0, True, 0)


def intcst(v):
    arr = np.full((1, 1, 1), float(v))
    return E(f"IntCst({v})", 1, lambda env: arr, abs(v), 0.0, True, 0)


def intinv(n):
    arr = np.full((1, 1, 1), 1.0 / n)
    if n & (n - 1) == 0:
        return E(f"IntInv({n})", 1, lambda env: arr, 1.0 / n, 0.0, True, n.bit_length() - 1)
    return E(f"IntInv({n})", 1, lambda env: arr, 1.0 / n, 1.0 / n, False, 0)


def zero(d):
    arr = np.zeros((1, 1, d))
    return E(f"Zero({d})", d, lambda env: arr, 0.0, 0.0, True, 0)


def var(name, d, bound=2.0):
    return E(name, d, lambda env: env[name], bound, 0.0, True, 2)


def add(a, b):
    return node(f"({a.text} + {b.text})", bdim(a, b), lambda env: a.fn(env) + b.fn(env),
                a.bound + b.bound, (a, b), (1, 1), 1, max(a.k, b.k))


def sub(a, b):
    return node(f"({a.text} - {b.text})", bdim(a, b), lambda env: a.fn(env) - b.fn(env),
                a.bound + b.bound, (a, b), (1, 1), 1, max(a.k, b.k))


def mul(a, b, text=None):
    return node(text or f"({a.text} * {b.text})", bdim(a, b), lambda env: a.fn(env) * b.fn(env),
                a.bound * b.bound, (a, b), (b.bound, a.bound), 1, a.k + b.k)


def neg(a):
    return node(f"(-{a.text})", a.dim, lambda env: -a.fn(env), a.bound, (a,), (1,), 0, a.k)


def absolute(a):
    return node(f"Abs({a.text})", a.dim, lambda env: np.abs(a.fn(env)), a.bound, (a,), (1,), 0, a.k)


def square(a, text=None):
    return node(text or f"Square({a.text})", a.dim, lambda env: np.square(a.fn(env)), a.bound ** 2,
                (a,), (2 * a.bound,), 1, 2 * a.k)


def abs_plus_one(a):
    """|a| + 1 >= 1: the safe argument of Log, Sqrt, Rsqrt, Inv, XLogX, Powf, denominators."""
    return add(absolute(a), lit(1))


def fun(name, a, npfn, bound, lip, own=LIBM):
    """An inexact math function of one operand."""
    return node(f"{name}({a.text})", a.dim, lambda env: npfn(a.fn(env)), bound, (a,), (lip,), own)


def total(a):
    d = a.dim
    return node(f"Sum({a.text})", 1, lambda env: a.fn(env).sum(-1, keepdims=True), d * a.bound, (a,), (d,),
                2, a.k)


def clamp_lit(a, lo, hi):
    def fn(env):
        v = a.fn(env)
        return np.where(v < lo, float(lo), np.where(v > hi, float(hi), v))
    return node(f"Clamp({a.text}, {lit(lo).text}, {lit(hi).text})", a.dim, fn,
                min(a.bound, max(abs(lo), abs(hi))), (a,), (1,), 0, a.k)


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _cat(a, b):
    lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return np.concatenate([np.broadcast_to(a, lead + a.shape[-1:]), np.broadcast_to(b, lead + b.shape[-1:])], -1)


# ---- the generator --------------------------------------------------------------------------------

# operations by family; * marks those never exact (not drawn where an exact result is needed)
FAMILIES = {
    "leaf": ["leaf"],
    "arith": ["add", "sub", "mul", "neg", "abs", "relu", "square", "pow", "half", "clamp", "clampint",
              "div*", "pow_neg*"],
    "math": ["exp*", "log*", "sin*", "cos*", "atan*", "atan2*", "sqrt*", "rsqrt*", "inv*", "xlogx*", "sinxdivx*",
             "asin*", "acos*", "powf*", "round_d*", "squash*"],
    "discontinuous": ["floor", "round0", "sign", "step", "compare", "mod", "onehot", "ifelse", "clamp_expr"],
    "vector": ["sum", "maxmin", "sqnorm2", "scalprod", "sqdist", "wsqnorm", "wsqdist", "elem", "argext", "norm2*"],
    "shape": ["extract", "concat", "sumt", "onehot", "normalize*"],
    "bait": ["bait"],
}
# (hypothesis draws the first options most often: the leaves come last)
FAMILY_WEIGHTS = {"math": 4, "arith": 4, "vector": 3, "discontinuous": 2, "shape": 2, "bait": 1, "leaf": 1}
SCALAR_ONLY = set(FAMILIES["vector"])  # vector -> scalar operations
VECTOR_ONLY = {"concat"}


class Gen:
    def __init__(self, draw, dims):
        self.draw = draw
        self.dims = dims  # {"x": dx, "y": dy, "p": dp, "s": 1, "t": 1}

    # -- drawing helpers
    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def integer(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def coin(self):
        return self.draw(st.booleans())

    def two_dims(self, d):
        """Operand dimensions broadcasting to d (scalars broadcast)."""
        return (d, d) if d == 1 else self.pick([(d, 1), (1, d), (d, d)])

    def some_dim(self):
        return self.pick(sorted({1, 2, 3, self.dims["x"], self.dims["y"], self.dims["p"]}))

    # -- entry point
    def expr(self, dim, depth, exact=False, family=None):
        if depth <= 0:
            return self.leaf(dim, exact)
        families = [f for f, w in FAMILY_WEIGHTS.items() for _ in range(w)
                    if not (exact and f == "math") and not (f == "vector" and dim != 1)]
        family = family or self.pick(families)
        options = [o.rstrip("*") for o in FAMILIES[family]
                   if not (exact and o.endswith("*")) and not (o.rstrip("*") in VECTOR_ONLY and dim == 1)]
        op = self.pick(options)
        e = self.leaf(dim, exact) if op == "leaf" else getattr(self, "op_" + op)(dim, depth - 1, exact)
        if e.bound > BMAX:
            e = self.squash(e, 4, keep_exact=e.exact)
        if exact and not e.exact:  # the operands did not fit the mantissa: fall back
            e = self.leaf(dim, True)
        assert e.dim == dim, (e.text, e.dim, dim)
        return e

    def leaf(self, dim, exact=False):
        options = [name for name in ("x", "y", "p", "s", "t") if self.dims[name] == dim for _ in range(3)]
        options += ["zero", "extract", "sumt"] + (["concat"] if dim > 1 else [])
        if dim == 1:
            options += ["lit", "lit", "intcst", "intinv"]
        choice = self.pick(options)
        if choice in self.dims:
            return var(choice, dim)
        if choice == "zero":
            return zero(dim)
        if choice == "lit":
            return lit(self.pick([2, 3, 1, 0]))
        if choice == "intcst":
            return intcst(self.integer(-3, 3))
        if choice == "intinv":
            return intinv(self.pick([2, 4] if exact else [2, 3, 4, 5]))
        if choice == "sumt":
            return self.sumt(self.pick([var("s", 1), var("t", 1)]), dim)
        if choice == "concat":
            a = self.integer(1, dim - 1)
            return self.concat(self.leaf(a, exact), self.leaf(dim - a, exact))
        # extract from the widest variable, or from a concatenation
        name = max(("x", "y", "p"), key=lambda n: self.dims[n])
        src = var(name, self.dims[name])
        if src.dim < dim or self.coin():
            src = self.concat(src, zero(dim) if src.dim < dim else self.pick([zero(dim), var("s", 1), var("t", 1)]))
        return self.extract(src, self.integer(0, src.dim - dim), dim)

    # -- shape operations (shared by leaves and operations)
    @staticmethod
    def concat(a, b):
        return node(f"Concat({a.text}, {b.text})", a.dim + b.dim, lambda env: _cat(a.fn(env), b.fn(env)),
                    max(a.bound, b.bound), (a, b), (1, 1), 0, max(a.k, b.k))

    @staticmethod
    def extract(a, start, d):
        return node(f"Extract({a.text}, {start}, {d})", d, lambda env: a.fn(env)[..., start:start + d],
                    a.bound, (a,), (1,), 0, a.k)

    @staticmethod
    def sumt(a, d):
        return node(f"SumT({a.text}, {d})", d, lambda env: np.repeat(a.fn(env), d, axis=-1),
                    a.bound, (a,), (1,), 0, a.k)

    def squash(self, e, limit, keep_exact=False):
        """e with |value| <= limit."""
        if e.bound <= limit:
            return e
        how = "clamp" if keep_exact else self.pick(["clamp", "atan", "sin", "ratio"])
        if how == "clamp":
            return clamp_lit(e, -max(1, int(limit)), max(1, int(limit)))
        if how == "atan":
            return fun("Atan", e, np.arctan, math.pi / 2, 1)
        if how == "sin":
            return fun("Sin", e, np.sin, 1, 1)
        den = abs_plus_one(e)  # e / (|e| + 1): derivative 1 / (|e| + 1)**2 <= 1
        return node(f"({e.text} / {den.text})", e.dim, lambda env: e.fn(env) / den.fn(env), 1,
                    (e, den), (1, 1), 2)

    # -- arithmetic
    def _operands(self, dim, depth, exact):
        da, db = self.two_dims(dim)
        return self.expr(da, depth, exact), self.expr(db, depth, exact)

    def op_add(self, dim, depth, exact):
        return add(*self._operands(dim, depth, exact))

    def op_sub(self, dim, depth, exact):
        return sub(*self._operands(dim, depth, exact))

    def op_mul(self, dim, depth, exact):
        return mul(*self._operands(dim, depth, exact))

    def op_neg(self, dim, depth, exact):
        return neg(self.expr(dim, depth, exact))

    def op_abs(self, dim, depth, exact):
        return absolute(self.expr(dim, depth, exact))

    def op_relu(self, dim, depth, exact):
        a = self.expr(dim, depth, exact)
        return node(f"ReLU({a.text})", dim, lambda env: np.maximum(a.fn(env), 0.0), a.bound, (a,), (1,), 0, a.k)

    def op_square(self, dim, depth, exact):
        a = self.squash(self.expr(dim, depth, exact), 64, keep_exact=exact)
        return square(a, text=f"({a.text})**2" if self.coin() else None)

    def op_pow(self, dim, depth, exact):
        a = self.squash(self.expr(dim, depth, exact), 4, keep_exact=exact)
        n = self.pick([0, 1, 3, 4])
        text = f"({a.text})**{n}" if self.coin() else f"Pow({a.text}, {n})"
        return node(text, dim, lambda env: np.power(a.fn(env), float(n)), a.bound ** n, (a,),
                    (n * a.bound ** max(n - 1, 0),), 2, n * a.k)

    def op_pow_neg(self, dim, depth, exact):
        base = abs_plus_one(self.expr(dim, depth))
        n = self.pick([-1, -2, -3])
        text = f"({base.text})**{n}" if self.coin() else f"Pow({base.text}, {n})"
        return node(text, dim, lambda env: np.power(base.fn(env), float(n)), 1, (base,), (abs(n),), 3)

    def op_half(self, dim, depth, exact):
        a = self.expr(dim, depth, exact)
        q = self.pick([2, 4])
        text = self.pick([f"({a.text} / {q})", f"(IntInv({q}) * {a.text})", f"({a.text} * IntInv({q}))"])
        return node(text, dim, lambda env: a.fn(env) / q, a.bound / q, (a,), (1 / q,), 0, a.k + q.bit_length() - 1)

    def op_div(self, dim, depth, exact):
        da, db = self.two_dims(dim)
        a = self.expr(da, depth)
        kind = self.pick(["abs1", "sq1", "pos"] + (["pos"] if db == 1 else []))
        if kind == "pos" and db == 1:  # a positive exact scalar variable, >= 1/4
            den, lip, bound = var(self.pick(["s", "t"]), 1), 16 * a.bound, 4 * a.bound
        else:
            b = self.expr(db, depth)
            den = abs_plus_one(b) if kind == "abs1" else add(square(self.squash(b, 64)), lit(1))
            lip, bound = a.bound, a.bound
        return node(f"({a.text} / {den.text})", bdim(a, den), lambda env: a.fn(env) / den.fn(env), bound,
                    (a, den), (4 if den.text in "st" else 1, lip), 1)

    # -- math functions (inexact)
    def op_exp(self, dim, depth, exact):
        a = self.squash(self.expr(dim, depth), 3)
        b = math.exp(a.bound)
        return fun("Exp", a, np.exp, b, b)

    def op_log(self, dim, depth, exact):
        if dim == 1 and self.coin():
            a = var(self.pick(["s", "t"]), 1)  # in [1/4, 2]: log is 4-Lipschitz there
            return fun("Log", a, np.log, math.log(4), 4)
        a = abs_plus_one(self.expr(dim, depth))
        return fun("Log", a, np.log, math.log(a.bound), 1)

    def op_sin(self, dim, depth, exact):
        return fun("Sin", self.expr(dim, depth), np.sin, 1, 1)

    def op_cos(self, dim, depth, exact):
        return fun("Cos", self.expr(dim, depth), np.cos, 1, 1)

    def op_atan(self, dim, depth, exact):
        return fun("Atan", self.expr(dim, depth), np.arctan, math.pi / 2, 1)

    def op_atan2(self, dim, depth, exact):
        da, db = self.two_dims(dim)
        a, b = self.expr(da, depth), abs_plus_one(self.expr(db, depth))
        return node(f"Atan2({a.text}, {b.text})", dim, lambda env: np.arctan2(a.fn(env), b.fn(env)),
                    math.pi / 2, (a, b), (1, 0.5), LIBM)

    def op_sqrt(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=self.coin())
        if a.exact:  # Sqrt at 0 is fine for an exactly computed operand
            a = absolute(a)
            return node(f"Sqrt({a.text})", dim, lambda env: np.sqrt(a.fn(env)), math.sqrt(a.bound), (a,), (0,), LIBM)
        a = abs_plus_one(a)
        return fun("Sqrt", a, np.sqrt, math.sqrt(a.bound), 0.5)

    def op_rsqrt(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=self.coin())
        if a.exact:  # Rsqrt(0) = 0; otherwise |a| >= 2**-k
            a = absolute(a)

            def fn(env):
                v = a.fn(env)
                with np.errstate(divide="ignore"):
                    return np.where(v == 0, 0.0, 1.0 / np.sqrt(v))
            return node(f"Rsqrt({a.text})", dim, fn, 2.0 ** (a.k / 2), (a,), (0,), LIBM)
        a = abs_plus_one(a)
        return fun("Rsqrt", a, lambda v: 1.0 / np.sqrt(v), 1, 0.5)

    def op_inv(self, dim, depth, exact):
        a = self.expr(dim, depth)
        den = abs_plus_one(a) if self.coin() else add(square(self.squash(a, 64)), lit(1))
        if self.coin():
            return fun("Inv", den, lambda v: 1.0 / v, 1, 1, own=1)
        return node(f"({den.text})**-1", dim, lambda env: 1.0 / den.fn(env), 1, (den,), (1,), 1)

    def op_xlogx(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=self.coin())
        if a.exact:  # XLogX(0) = 0
            a = absolute(a)

            def fn(env):
                v = a.fn(env)
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(v == 0, 0.0, v * np.log(v))
            return node(f"XLogX({a.text})", dim, fn, max(a.bound * math.log(max(a.bound, 1)), 1 / math.e),
                        (a,), (0,), LIBM)
        a = abs_plus_one(a)
        return fun("XLogX", a, lambda v: v * np.log(v), a.bound * math.log(a.bound), math.log(a.bound) + 1)

    def op_sinxdivx(self, dim, depth, exact):
        def fn(v):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(v == 0, 1.0, np.sin(v) / v)
        return fun("SinXDivX", self.expr(dim, depth), fn, 1, 0.5)

    def _arc(self, name, npfn, dim, depth, bound):
        a = self.expr(dim, depth, exact=self.coin())
        if a.exact:  # the whole of [-1, 1], end points included
            return node(f"{name}({clamp_lit(a, -1, 1).text})", dim, lambda env: npfn(np.clip(a.fn(env), -1, 1)),
                        bound, (a,), (0,), LIBM)
        inner = clamp_lit(a, -1, 1)  # then halved: derivative <= 1.16 on [-1/2, 1/2]
        return node(f"{name}(({inner.text} / 2))", dim, lambda env: npfn(inner.fn(env) / 2), bound,
                    (inner,), (0.6,), LIBM)

    def op_asin(self, dim, depth, exact):
        return self._arc("Asin", np.arcsin, dim, depth, math.pi / 2)

    def op_acos(self, dim, depth, exact):
        return self._arc("Acos", np.arccos, dim, depth, math.pi)

    def op_powf(self, dim, depth, exact):
        da, db = self.two_dims(dim)
        base = abs_plus_one(self.squash(self.expr(da, depth), 3))  # in [1, 4]
        ex = self.squash(self.expr(db, depth), 2)  # in [-2, 2]
        text = f"({base.text})**({ex.text})" if self.coin() else f"Powf({base.text}, {ex.text})"
        return node(text, dim, lambda env: np.power(base.fn(env), ex.fn(env)), 16, (base, ex), (8, 16 * math.log(4)),
                    LIBM)

    def op_round_d(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        d = self.pick([1, 2])
        if math.log2(max(a.bound, 1)) + a.k + 4 * d > EXACT_BITS:  # a * 10**d would not be exact
            d = 0
        scale = 10.0 ** d
        return node(f"Round({a.text}, {d})", dim, lambda env: _round_half_away(a.fn(env) * scale) / scale,
                    a.bound + 0.5, (a,), (0,), 1, 0 if d == 0 else None)

    def op_norm2(self, dim, depth, exact):
        di = self.some_dim()
        a = self.expr(di, depth)
        return node(f"Norm2({a.text})", 1, lambda env: np.sqrt((a.fn(env) ** 2).sum(-1, keepdims=True)),
                    math.sqrt(di) * a.bound, (a,), (math.sqrt(di),), LIBM + di)

    def op_normalize(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)

        def fn(env):
            v = a.fn(env)
            n2 = (v * v).sum(-1, keepdims=True)
            with np.errstate(divide="ignore"):
                return v * np.where(n2 == 0, 0.0, 1.0 / np.sqrt(n2))
        return node(f"Normalize({a.text})", dim, fn, 1, (a,), (0,), 2 * LIBM + dim)

    def op_squash(self, dim, depth, exact):
        a = self.expr(dim, depth)
        return self.squash(a, min(a.bound / 2, 3) if a.bound > 0 else 1)

    # -- discontinuous operations: exact operands only, exact results
    def op_floor(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        return node(f"Floor({a.text})", dim, lambda env: np.floor(a.fn(env)), a.bound + 1, (a,), (0,), 1, 0)

    def op_round0(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        return node(f"Round({a.text}, 0)", dim, lambda env: _round_half_away(a.fn(env)), a.bound + 1, (a,), (0,), 1, 0)

    def op_sign(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        return node(f"Sign({a.text})", dim, lambda env: np.sign(a.fn(env)), 1, (a,), (0,), 1, 0)

    def op_step(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        return node(f"Step({a.text})", dim, lambda env: np.where(a.fn(env) < 0, 0.0, 1.0), 1, (a,), (0,), 1, 0)

    def op_compare(self, dim, depth, exact):
        a, b = self._operands(dim, depth, True)
        sym, npfn = self.pick([("==", np.equal), ("!=", np.not_equal), ("<", np.less), (">", np.greater),
                               ("<=", np.less_equal), (">=", np.greater_equal)])
        return node(f"({a.text} {sym} {b.text})", dim, lambda env: npfn(a.fn(env), b.fn(env)).astype(np.float64),
                    1, (a, b), (0, 0), 1, 0)

    def op_mod(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        dm = self.pick([1, dim])
        kind = self.pick(["2", "3", "var", "expr"])
        if kind in ("2", "3"):
            m, m_min = lit(int(kind)), int(kind)
        elif kind == "var":
            m, m_min = var(self.pick(["s", "t"]), 1), 0.25
        else:
            m, m_min = abs_plus_one(self.expr(dm, depth, exact=True)), 1
        off = self.expr(self.pick([1, dim]), depth, exact=True) if self.coin() else self.pick([lit(1), intinv(2), lit(2), lit(0)])
        kk = max(a.k, m.k, off.k)
        fits = (m.exact and math.log2(max(a.bound + off.bound, 1) / m_min) + kk + math.log2(max(m.bound, 1)) <= 21)
        if not fits:
            return self.op_floor(dim, depth, exact)

        def fn(env):
            x, mm, o = a.fn(env), m.fn(env), off.fn(env)
            return x - mm * np.floor((x - o) / mm)
        return node(f"Mod({a.text}, {m.text}, {off.text})", bdim(a, m, off), fn, off.bound + m.bound,
                    (a, m, off), (0, 0, 0), 1, kk)

    def op_onehot(self, dim, depth, exact):
        a = self.expr(1, depth, exact=True)
        return node(f"OneHot({a.text}, {dim})", dim,
                    lambda env: (_round_half_away(a.fn(env)) == np.arange(dim)).astype(np.float64),
                    1, (a,), (0,), 1, 0)

    def op_argext(self, dim, depth, exact):
        di = self.some_dim()
        a = self.expr(di, depth, exact=True)
        name, npfn = self.pick([("ArgMax", np.argmax), ("ArgMin", np.argmin)])
        return node(f"{name}({a.text})", 1, lambda env: npfn(a.fn(env), axis=-1)[..., None].astype(np.float64),
                    di - 1, (a,), (0,), 1, 0)

    def op_ifelse(self, dim, depth, exact):
        dc, da = self.two_dims(dim)
        db = self.pick([dim, 1]) if da == dim else dim
        c = self.expr(dc, depth, exact=True)
        a, b = self.expr(da, depth, exact), self.expr(db, depth, exact)
        return node(f"IfElse({c.text}, {a.text}, {b.text})", dim,
                    lambda env: np.where(c.fn(env) >= 0, a.fn(env), b.fn(env)),
                    max(a.bound, b.bound), (c, a, b), (0, 1, 1), 0, max(a.k, b.k))

    def op_clamp(self, dim, depth, exact):
        lo = self.integer(-3, 2)
        return clamp_lit(self.expr(dim, depth, exact), lo, self.integer(lo + 1, 3))

    def op_clampint(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=self.coin() or exact)
        lo = self.integer(-3, 3)
        hi = self.integer(-3, 3) if a.exact else self.integer(lo, 3)  # inverted bounds: discontinuous

        def fn(env):
            v = a.fn(env)
            return np.where(v < lo, float(lo), np.where(v > hi, float(hi), v))
        return node(f"ClampInt({a.text}, {lo}, {hi})", dim, fn, max(abs(lo), abs(hi)) if lo > hi else
                    min(a.bound, max(abs(lo), abs(hi))), (a,), (1,), 0, a.k)

    def op_clamp_expr(self, dim, depth, exact):
        a = self.expr(dim, depth, exact=True)
        lo = self.expr(self.pick([1, dim]), depth, exact=True)
        hi = self.expr(self.pick([1, dim]), depth, exact=True)

        def fn(env):
            v, l, h = a.fn(env), lo.fn(env), hi.fn(env)
            return np.where(v < l, l, np.where(v > h, h, v))
        return node(f"Clamp({a.text}, {lo.text}, {hi.text})", dim, fn, max(lo.bound, hi.bound),
                    (a, lo, hi), (0, 0, 0), 0, max(a.k, lo.k, hi.k))

    # -- vector -> scalar
    def op_sum(self, dim, depth, exact):
        return total(self.expr(self.some_dim(), depth, exact))

    def op_maxmin(self, dim, depth, exact):
        a = self.expr(self.some_dim(), depth, exact)
        name, npfn = self.pick([("Max", np.max), ("Min", np.min)])
        return node(f"{name}({a.text})", 1, lambda env: npfn(a.fn(env), axis=-1, keepdims=True), a.bound,
                    (a,), (1,), 0, a.k)

    def op_sqnorm2(self, dim, depth, exact):
        di = self.some_dim()
        a = self.squash(self.expr(di, depth, exact), 64, keep_exact=exact)
        return node(f"SqNorm2({a.text})", 1, lambda env: (a.fn(env) ** 2).sum(-1, keepdims=True),
                    di * a.bound ** 2, (a,), (2 * di * a.bound,), 3, 2 * a.k)

    def op_scalprod(self, dim, depth, exact):
        di = self.some_dim()
        a, b = self.expr(di, depth, exact), self.expr(di, depth, exact)
        return node(f"({a.text}|{b.text})", 1, lambda env: (a.fn(env) * b.fn(env)).sum(-1, keepdims=True),
                    di * a.bound * b.bound, (a, b), (di * b.bound, di * a.bound), 3, a.k + b.k)

    def op_sqdist(self, dim, depth, exact):
        di = self.some_dim()
        a, b = (self.squash(e, 32, keep_exact=exact) for e in self._operands(di, depth, exact))
        r = a.bound + b.bound
        return node(f"SqDist({a.text}, {b.text})", 1,
                    lambda env: ((a.fn(env) - b.fn(env)) ** 2).sum(-1, keepdims=True),
                    di * r * r, (a, b), (2 * di * r, 2 * di * r), 4, 2 * max(a.k, b.k))

    def _weight(self, di, depth, exact):
        ds = self.pick([1, di] + ([di * di] if di > 1 else []))
        return self.squash(self.expr(ds, depth, exact), 16, keep_exact=exact)

    @staticmethod
    def _weighted_np(s, f):
        d = f.shape[-1]
        if s.shape[-1] == d * d and d > 1:
            S = s.reshape(s.shape[:-1] + (d, d))
            return np.einsum("...k,...kl,...l->...", f, S, f)[..., None]
        return (s * f * f).sum(-1, keepdims=True)

    def op_wsqnorm(self, dim, depth, exact):
        di = self.some_dim()
        f = self.squash(self.expr(di, depth, exact), 16, keep_exact=exact)
        s = self._weight(di, depth, exact)
        n = di * di if s.dim == di * di else di
        return node(f"WeightedSqNorm({s.text}, {f.text})", 1, lambda env: self._weighted_np(s.fn(env), f.fn(env)),
                    n * s.bound * f.bound ** 2, (s, f), (n * f.bound ** 2, 2 * n * s.bound * f.bound), 4,
                    s.k + 2 * f.k)

    def op_wsqdist(self, dim, depth, exact):
        di = self.some_dim()
        f, g = (self.squash(e, 8, keep_exact=exact) for e in self._operands(di, depth, exact))
        s = self._weight(di, depth, exact)
        n = di * di if s.dim == di * di and di > 1 else di
        r = f.bound + g.bound
        return node(f"WeightedSqDist({s.text}, {f.text}, {g.text})", 1,
                    lambda env: self._weighted_np(s.fn(env), f.fn(env) - g.fn(env)),
                    n * s.bound * r * r, (s, f, g), (n * r * r, 2 * n * s.bound * r, 2 * n * s.bound * r), 5,
                    s.k + 2 * max(f.k, g.k))

    def op_elem(self, dim, depth, exact):
        di = self.some_dim()
        a = self.expr(di, depth, exact)
        m = self.integer(0, di - 1)
        return node(f"Elem({a.text}, {m})", 1, lambda env: a.fn(env)[..., m:m + 1], a.bound, (a,), (1,), 0, a.k)

    # -- dimension-changing operations
    def op_extract(self, dim, depth, exact):
        di = self.integer(dim, dim + 2)
        return self.extract(self.expr(di, depth, exact), self.integer(0, di - dim), dim)

    def op_concat(self, dim, depth, exact):
        a = self.integer(1, dim - 1)
        return self.concat(self.expr(a, depth, exact), self.expr(dim - a, depth, exact))

    def op_sumt(self, dim, depth, exact):
        return self.sumt(self.expr(1, depth, exact), dim)

    # -- forms the simplifier rewrites: the passes must keep their meaning
    def op_bait(self, dim, depth, exact):
        a = self.expr(dim, depth, exact)
        t = a.text
        kind = self.pick(["+0", "0+", "-0", "*1", "1*", "/1", "--", "*-1", "-1*", "6*", "extract", "pow1",
                          "sqrtsq", "absabs", "abssq", "zero+", "+zero", "0-", "a-a", "fold", "exp0", "sum1"])
        same = lambda text, own=0: node(text, dim, a.fn, a.bound, (a,), (1,), own, a.k)  # noqa: E731
        if kind == "+0":
            return same(f"({t} + 0)")
        if kind == "0+":
            return same(f"(0 + {t})")
        if kind == "-0":
            return same(f"({t} - 0)")
        if kind == "*1":
            return same(f"({t} * 1)")
        if kind == "1*":
            return same(f"(IntCst(1) * {t})")
        if kind == "/1":
            return same(f"({t} / 1)")
        if kind == "--":
            return same(f"(-(-{t}))")
        if kind == "extract":
            return same(f"Extract({t}, 0, {dim})")
        if kind == "pow1":
            return same(self.pick([f"Pow({t}, 1)", f"({t})**1"]))
        if kind == "zero+":
            return same(f"(Zero({dim}) + {t})")
        if kind == "+zero":
            return same(f"({t} + Zero({dim}))")
        if kind == "fold":
            return same(f"((2 - 2) + {t} * (3 - 2))")
        if kind == "exp0":
            return same(f"(Exp(Zero(1)) * {t})")
        if kind == "sum1":
            return same(f"Sum({t})") if dim == 1 else same(f"Extract(Concat({t}, Zero(1)), 0, {dim})")
        if kind in ("*-1", "-1*", "0-"):
            text = {"*-1": f"({t} * (-1))", "-1*": f"((-1) * {t})", "0-": f"(0 - {t})"}[kind]
            return node(text, dim, lambda env: (0.0 - a.fn(env)) if kind == "0-" else -a.fn(env), a.bound,
                        (a,), (1,), 0, a.k)
        if kind == "6*":
            return node(f"(IntCst(2) * (IntCst(3) * {t}))", dim, lambda env: 2.0 * (3.0 * a.fn(env)), 6 * a.bound,
                        (a,), (6,), 2, a.k)
        if kind == "a-a":
            return node(f"({t} - {t})", dim, lambda env: a.fn(env) - a.fn(env), 0, (a,), (2,), 0, a.k)
        if kind == "sqrtsq":
            return node(self.pick([f"Sqrt(Square({t}))", f"Sqrt(({t})**2)"]), dim,
                        lambda env: np.sqrt(np.square(a.fn(env))), a.bound, (a,), (1,), 2,
                        a.k if _fits(a.bound ** 2, 2 * a.k) else None)
        if kind == "absabs":
            return node(f"Abs(Abs({t}))", dim, lambda env: np.abs(a.fn(env)), a.bound, (a,), (1,), 0, a.k)
        # abs of a square
        a = self.squash(a, 64, keep_exact=exact)
        t = a.text
        return node(f"Abs(Square({t}))", dim, lambda env: np.abs(np.square(a.fn(env))), a.bound ** 2, (a,),
                    (2 * a.bound,), 1, 2 * a.k)


# ---- cases -------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Case:
    """Several independent random formulas (the parts), tested at once as Concat(part1, part2, ...):
    one compilation exercises them all, and each part keeps its own tolerance."""

    parts: tuple  # the parts' formula texts, for the report
    dims: dict
    m: int
    n: int
    seed: int
    exprs: tuple = field(repr=False)

    @property
    def expr(self):
        e = self.exprs[0]
        for f in self.exprs[1:]:
            e = Gen.concat(e, f)
        return e

    @property
    def aliases(self):
        d = self.dims
        return [f"x = Vi({d['x']})", f"y = Vj({d['y']})", f"p = Pm({d['p']})", "s = Vi(1)", "t = Vj(1)"]

    def arrays(self):
        """Quarter-integers: x, y, p in [-2, 2]; s, t in [1/4, 2] (positive)."""
        r = np.random.default_rng(self.seed)
        d = self.dims
        return [r.integers(-8, 9, (self.m, d["x"])) / 4.0, r.integers(-8, 9, (self.n, d["y"])) / 4.0,
                r.integers(-8, 9, (d["p"],)) / 4.0, r.integers(1, 9, (self.m, 1)) / 4.0,
                r.integers(1, 9, (self.n, 1)) / 4.0]


@st.composite
def cases(draw, max_depth=MAX_DEPTH, min_parts=3, max_parts=5):
    dims = {"x": draw(st.integers(1, 3)), "y": draw(st.integers(1, 3)), "p": draw(st.integers(1, 3)), "s": 1, "t": 1}
    gen = Gen(draw, dims)
    exprs = []
    for _ in range(draw(st.integers(min_parts, max_parts))):
        # the top operation of each part is drawn by family, vector -> scalar ones first
        family = gen.pick(["vector", "discontinuous", "math", "shape", "arith", None])
        dim = 1 if family == "vector" else gen.pick(sorted({1, 2, dims["x"], dims["y"]} - {1 if family == "shape" else 0}))
        e = gen.expr(dim, draw(st.integers(2, max_depth)), family=family)
        if exprs and sum(len(f.text) for f in exprs) + len(e.text) > MAX_TEXT:
            break  # keep compilations short
        exprs.append(e)
    exprs = tuple(exprs)
    return Case(tuple(e.text for e in exprs), dims, draw(st.integers(1, MAX_ROWS)), draw(st.integers(1, MAX_ROWS)),
                draw(st.integers(0, 2 ** 32 - 1)), exprs)


def dense(e, arrays):
    """The independent NumPy evaluation of e, as a float64 (M, N, dim) array."""
    x, y, p, s, t = (np.asarray(a, dtype=np.float64) for a in arrays)
    env = {"x": x[:, None, :], "y": y[None, :, :], "p": p[None, None, :], "s": s[:, None, :], "t": t[None, :, :]}
    with np.errstate(all="ignore"):
        out = np.asarray(e.fn(env), dtype=np.float64)
    return np.broadcast_to(out, (x.shape[0], y.shape[0], e.dim))


# ---- reductions, independently -------------------------------------------------------------------


def np_reduce(red, F, axis):
    """Outputs of reduction `red` of the dense (M, N, d) F over j (axis=1) or i (axis=0)."""
    ax = 1 if axis == 1 else 0
    if red == "Sum":
        return [F.sum(axis=ax)]
    if red in ("Max", "Min"):
        return [F.max(axis=ax) if red == "Max" else F.min(axis=ax)]
    if red in ("ArgMax", "ArgMin"):
        return [F.argmax(axis=ax) if red == "ArgMax" else F.argmin(axis=ax)]
    if red in ("Max_ArgMax", "Min_ArgMin"):
        better = red[:3]
        return np_reduce(better, F, axis) + np_reduce("Arg" + better, F, axis)
    if red == "LogSumExp":
        m = F.max(axis=ax, keepdims=True)
        return [(m + np.log(np.exp(F - m).sum(axis=ax, keepdims=True))).squeeze(ax)]
    raise AssertionError(red)


def tolerance(red, e, unit, n_red):
    """Absolute tolerance on the reduction of e over n_red terms, for roundoff `unit`."""
    if red == "Sum":
        return SAFETY * unit * n_red * (e.err + 2 * e.bound) + 1e-300
    if red == "LogSumExp":
        return SAFETY * unit * (e.err + 4 * (e.bound + math.log(n_red) + 1)) + 1e-300
    return SAFETY * unit * (e.err + e.bound) + 1e-300  # Max, Min and the values of Max_ArgMax...


def check_outputs(actual, expected, red, parts, F, axis, dtype, what):
    """Compare lists of outputs, part by part (the components of each part, with its tolerance).
    Indices must be equal for exact parts, and point at a value within tolerance of the extreme
    otherwise (a near-tie may legitimately be broken either way)."""
    actual = list(actual) if isinstance(actual, (list, tuple)) else [actual]
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    assert len(actual) == len(expected), what
    ax = 1 if axis == 1 else 0
    n_red = F.shape[ax]
    for got_all, want_all in zip(actual, expected):
        assert got_all.shape == want_all.shape, (what, got_all.shape, want_all.shape)
        assert (got_all.dtype.kind == "i") == (want_all.dtype.kind == "i"), (what, got_all.dtype, want_all.dtype)
        start = 0
        for e in parts:
            cut = slice(start, start + e.dim)
            got, want, Fe = got_all[..., cut], want_all[..., cut], F[..., cut]
            start += e.dim
            where = f"{what}\n  in the part {e.text}"
            if want.dtype.kind == "i" and e.exact:
                np.testing.assert_array_equal(got, want, err_msg=where)
                continue
            if want.dtype.kind == "i":
                picked = np.take_along_axis(Fe, np.expand_dims(got, ax), axis=ax).squeeze(ax)
                got = picked
                want = Fe.max(axis=ax) if red.startswith("ArgMax") or red.startswith("Max") else Fe.min(axis=ax)
                atol = tolerance("Max", e, UNIT[dtype], n_red)
            else:
                atol = tolerance(red, e, UNIT[dtype], n_red)
            try:
                assert_close(got, want, dtype, rtol=0.0, atol=atol)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None
        assert start == got_all.shape[-1], (what, start, got_all.shape)


EXTRA_REDUCTIONS = ["Max", "Min", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax", "LogSumExp"]


def check_reduction(case, red, axis, dtypes=()):
    """Reference vs NumPy, parsed vs optimized program, and machine code in `dtypes` vs both."""
    e = case.expr
    parts = case.exprs
    if red == "LogSumExp":  # a scalar formula: Sum(F)
        e = total(e)
        parts = [e]
    g = Genred(e.text, case.aliases, reduction_op=red, axis=axis)
    arrays = case.arrays()
    F = dense(e, arrays)
    expected = np_reduce(red, F, axis)
    tag = f"{red}, axis={axis}: {e.text}"

    # the reference interpreter (optimized IR) against the independent NumPy evaluator
    ref = g(*arrays, backend="reference")
    check_outputs(ref, expected, red, parts, F, axis, "float64", "reference vs NumPy, " + tag)

    # the passes keep meaning: the reference interpreter on the parsed and on the optimized program
    n_i, n_j = (case.m, case.n) if axis == 1 else (case.n, case.m)
    before = reference.evaluate(g.reduction.parsed, arrays, n_i, n_j)
    after = reference.evaluate(g.program, arrays, n_i, n_j)
    check_outputs(after, before, red, parts, F, axis, "float64", "optimized vs parsed program, " + tag)

    for dtype in dtypes:
        args = [a.astype(dtype) for a in arrays]  # quarter-integers: exact in float32
        out = g(*args)
        outs = list(out) if isinstance(out, tuple) else [out]
        for o in outs:
            assert o.dtype.kind == "i" or o.dtype == np.dtype(dtype), (tag, o.dtype)
        check_outputs(outs, expected, red, parts, F, axis, dtype, f"compiled {dtype} vs NumPy, " + tag)
        check_outputs(outs, ref, red, parts, F, axis, dtype, f"compiled {dtype} vs reference, " + tag)


COMMON = dict(deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


# each example compiles 4 kernels of a few hundred characters (~0.1-1 s each, SIMD across j):
# 10 examples in the quick suite, 40 in CI's thorough run (conftest.examples)
@settings(max_examples=examples(10, 40), **COMMON)
@given(case=cases(min_parts=2, max_parts=3), extra=st.sampled_from(EXTRA_REDUCTIONS), axis=st.sampled_from([0, 1]),
       dtypes=st.tuples(*[st.sampled_from(["float32", "float64"])] * 2))
def test_compiled_matches_reference_and_numpy(case, extra, axis, dtypes):
    """Machine code = reference interpreter = NumPy, for Sum over j in float64 and float32, Sum over i
    and one other reduction in a drawn dtype (4 kernels); and the passes preserve meaning."""
    note(f"formula: {case.expr.text}")
    check_reduction(case, "Sum", 1, dtypes=("float64", "float32"))
    check_reduction(case, "Sum", 0, dtypes=(dtypes[0],))
    check_reduction(case, extra, axis, dtypes=(dtypes[1],))


@settings(max_examples=examples(150, 600), **COMMON)
@given(case=cases(), extra=st.sampled_from(EXTRA_REDUCTIONS), axis=st.sampled_from([0, 1]))
def test_reference_and_passes_match_numpy(case, extra, axis):
    """Many more formulas, without compiling: the reference interpreter on the optimized program equals
    the independent NumPy evaluator, and equals itself on the parsed program."""
    note(f"formula: {case.expr.text}")
    check_reduction(case, "Sum", 1)
    check_reduction(case, "Sum", 0)
    check_reduction(case, extra, axis)


# ---- block-sparse reductions (ranges) on random formulas -------------------------------------------


def _random_blocks(draw, size):
    """Consecutive blocks covering [0, size)."""
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=4))) if size > 1 else []
    bounds = [0, *cuts, size]
    return [[a, b] for a, b in zip(bounds[:-1], bounds[1:])]


@settings(max_examples=examples(8, 25), **COMMON)
@given(case=cases(min_parts=2, max_parts=3), extra=st.sampled_from(["Max_ArgMax", "Min_ArgMin", "LogSumExp"]),
       axis=st.sampled_from([0, 1]), shape=st.tuples(st.integers(1, 40), st.integers(1, 90)), data=st.data())
def test_block_sparse_compiled_matches_masked_numpy(case, extra, axis, shape, data):
    """Random formulas reduced over random block-sparse `ranges` (intervals long enough for SIMD
    and short ones, every row with at least one interval): the machine code equals the
    independent NumPy evaluation with the pairs outside the blocks left out."""
    import dataclasses

    from test_ranges import mask_of, ranges_from_keep

    case = dataclasses.replace(case, m=shape[0], n=shape[1])
    bi, bj = _random_blocks(data.draw, case.m), _random_blocks(data.draw, case.n)
    keep = np.array([[data.draw(st.booleans()) for _ in bj] for _ in bi])
    keep[np.arange(len(bi)), data.draw(st.lists(st.integers(0, len(bj) - 1), min_size=len(bi), max_size=len(bi)))] = True
    keep[data.draw(st.lists(st.integers(0, len(bi) - 1), min_size=len(bj), max_size=len(bj))), np.arange(len(bj))] = True
    ranges = ranges_from_keep(bi, bj, keep)
    mask = mask_of(ranges, case.m, case.n)[:, :, None]
    note(f"formula: {case.expr.text}\nblocks i {bi}, j {bj}, keep {keep.astype(int).tolist()}")
    arrays = case.arrays()
    for red, ax in (("Sum", 1), ("Sum", 0), (extra, axis)):
        e, parts = (total(case.expr), None) if red == "LogSumExp" else (case.expr, case.exprs)
        F = dense(e, arrays)
        fill = {"Sum": 0.0, "Max_ArgMax": -np.inf}.get(red, np.inf if red == "Min_ArgMin" else -np.inf)
        masked = np.where(mask, F, fill)
        out = Genred(e.text, case.aliases, reduction_op=red, axis=ax)(*arrays, ranges=ranges)
        check_outputs(out, np_reduce(red, masked, ax), red, parts or [e], masked, ax, "float64",
                      f"ranges {red}, axis={ax}: {e.text}")
