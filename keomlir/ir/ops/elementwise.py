"""Variables, constants, arithmetic, comparisons and element-wise math."""

from __future__ import annotations

import numpy as np

from ..node import DimensionError, J
from .base import Op, broadcast_dim, cst, is_const, make, mk, no_derivative, register, spread


# ---- leaves ----------------------------------------------------------------------


@register
class Var(Op):
    name, signature = "Var", "iii"

    def infer_dim(self, dims, attrs):
        pos, dim, cat = attrs
        if pos < 0:
            raise DimensionError(f"Var: position must be >= 0, got {pos}")
        if dim < 1:
            raise DimensionError(f"Var: dimension must be >= 1, got {dim}")
        if cat not in (0, 1, 2):
            raise DimensionError(f"Var: category must be 0 (i), 1 (j) or 2 (parameter), got {cat}")
        return dim

    def format(self, node, operand_texts, names):
        return names.get(node.attrs) or "Var({},{},{})".format(*node.attrs)

    def format_attrs(self, node, names):
        pos, dim, cat = node.attrs
        label = names.get(node.attrs)
        return f"{label + ': ' if label else ''}pos={pos}, {'ijp'[cat]}"


@register
class IntCst(Op):
    name, signature = "IntCst", "i"

    def infer_dim(self, dims, attrs):
        return 1

    def reference(self, xs, attrs):
        return np.full((1,), float(attrs[0]))

    def lower(self, em, xs, attrs):
        return [em.const(attrs[0])]


@register
class IntInv(Op):
    name, signature = "IntInv", "i"

    def infer_dim(self, dims, attrs):
        if attrs[0] == 0:
            raise DimensionError("IntInv: the integer must not be 0")
        return 1

    def reference(self, xs, attrs):
        return np.full((1,), 1.0 / attrs[0])

    def lower(self, em, xs, attrs):
        return [em.const(1.0 / attrs[0])]


@register
class Zero(Op):
    name, signature = "Zero", "i"

    def infer_dim(self, dims, attrs):
        if attrs[0] < 1:
            raise DimensionError(f"Zero: dimension must be >= 1, got {attrs[0]}")
        return attrs[0]

    def reference(self, xs, attrs):
        return np.zeros((attrs[0],))

    def lower(self, em, xs, attrs):
        return [em.const(0.0)] * attrs[0]


def int_value(node):
    """The integer a constant node stands for, or None."""
    if node.name == "IntCst":
        return node.attrs[0]
    if node.name == "Zero" and node.dim == 1:
        return 0
    return None


# ---- families --------------------------------------------------------------------


class Elementwise(Op):
    """Operands broadcast; one component of output from the same components of the inputs."""

    def infer_dim(self, dims, attrs):
        return broadcast_dim(self.name, dims)

    def reference(self, xs, attrs):
        return self.ref(*xs, *attrs)

    def lower(self, em, xs, attrs):
        cols = spread(xs, max(len(x) for x in xs))
        return [self.lower1(em, *comps, *attrs) for comps in zip(*cols)]


def elementwise(name, ref, lower1, signature="f", simplify=None, vjp=None):
    """Register an element-wise operation from its NumPy and scalar LLVM forms,
    its simplification rule and its derivative rule vjp(node, g, *operands)."""
    cls = type(name, (Elementwise,), {
        "name": name,
        "signature": signature,
        "ref": staticmethod(ref),
        "lower1": staticmethod(lower1),
    })
    if simplify is not None:
        cls.simplify = lambda self, node: simplify(node)
    if vjp is not None:
        cls.vjp = lambda self, node, g: vjp(node, g, *node.args)
    register(cls)
    return cls


# ---- arithmetic ------------------------------------------------------------------


def _same_dim(node, x):
    return x if x.dim == node.dim else None


def _fold(node, fn):
    vals = [int_value(a) for a in node.args]
    if node.dim == 1 and all(v is not None for v in vals):
        return make("IntCst", (), (fn(*vals),))
    return None


def _simplify_add(node):
    a, b = node.args
    folded = _fold(node, lambda p, q: p + q)
    if folded is not None:
        return folded
    if is_const(b, 0):
        return _same_dim(node, a)
    if is_const(a, 0):
        return _same_dim(node, b)
    return None


def _simplify_sub(node):
    a, b = node.args
    folded = _fold(node, lambda p, q: p - q)
    if folded is not None:
        return folded
    if is_const(b, 0):
        return _same_dim(node, a)
    if is_const(a, 0) and b.dim == node.dim:
        return make("Minus", (b,))
    return None


def _simplify_mult(node):
    a, b = node.args
    folded = _fold(node, lambda p, q: p * q)
    if folded is not None:
        return folded
    if is_const(a, 0) or is_const(b, 0):
        # 0 * x is not 0 for infinite or NaN x; keep IEEE semantics.
        return None
    if is_const(b, 1):
        return _same_dim(node, a)
    if is_const(a, 1):
        return _same_dim(node, b)
    if is_const(a, -1) and b.dim == node.dim:
        return make("Minus", (b,))
    if is_const(b, -1) and a.dim == node.dim:
        return make("Minus", (a,))
    if is_const(b) and not is_const(a):  # constants to the left: n*(m*x) folds below
        return make("Mult", (b, a))
    if is_const(a) and b.name == "Mult" and is_const(b.args[0]) and int_value(a) is not None \
            and int_value(b.args[0]) is not None:
        return make("Mult", (make("IntCst", (), (int_value(a) * int_value(b.args[0]),)), b.args[1]))
    return _to_row_factor(node)


# Signs and powers of two in a product move to a factor without j, where they cost once a row
# instead of once a pair: Grad(Exp(-SqDist(x,y)) * b, x, e)'s -2 goes onto e.  Exact: negation
# always, a power of two wherever no product overflows or leaves the normal range.
def _row_free(node):
    return not node.cat & J


def _has_row_factor(node):
    """node has no j, or is a product one of whose factors has none."""
    return _row_free(node) or (node.name == "Mult" and any(_has_row_factor(a) for a in node.args))


def _power_of_two(node):
    v = int_value(node) if node.name != "IntInv" else node.attrs[0]
    return v is not None and v != 0 and abs(v) & (abs(v) - 1) == 0


def _into_row_factor(wrap, node):
    """wrap applied to one factor of the product node, the factor without j first, else one that
    has such a factor (the wrapped factor simplified in turn, down to the factor without j); None
    where neither has (or node itself has no j: nothing to gain)."""
    if _row_free(node):
        return None
    p, q = node.args
    for test in (_row_free, _has_row_factor):
        if test(p):
            return make("Mult", (_settled(wrap(p)), q))
        if test(q):
            return make("Mult", (p, _settled(wrap(q))))
    return None


def _settled(node):
    """node after its own simplification rules (its operands are simplified already)."""
    for _ in range(64):
        repl = node.op.simplify(node)
        if repl is None or repl is node:
            return node
        node = repl
    return node


def _to_row_factor(node):
    a, b = node.args
    if int_value(a) is not None and b.name == "Minus":
        return make("Mult", (cst(-int_value(a)), b.args[0]))
    if _power_of_two(a) and b.name == "Mult":
        return _into_row_factor(lambda f: make("Mult", (a, f)), b)
    for x, y, rebuild in ((a, b, lambda x, y: (x, y)), (b, a, lambda x, y: (y, x))):
        if x.name == "Minus" and not _row_free(x) and _row_free(y) and x.dim == node.dim:
            return make("Mult", rebuild(x.args[0], make("Minus", (y,))))
    return None


def _simplify_div(node):
    a, b = node.args
    if is_const(b, 1):
        return _same_dim(node, a)
    if int_value(a) is not None and int_value(b) not in (None, 0) and int_value(a) % int_value(b) == 0:
        return make("IntCst", (), (int_value(a) // int_value(b),))
    return None


def _simplify_minus(node):
    (a,) = node.args
    if a.name == "Minus":
        return a.args[0]
    if a.name == "IntCst":
        return make("IntCst", (), (-a.attrs[0],))
    if a.name == "Zero":
        return a
    if a.name == "Mult":
        return _into_row_factor(lambda f: make("Minus", (f,)), a)
    return None


elementwise("Add", np.add, lambda em, a, b: em.add(a, b), "ff", _simplify_add,
            lambda n, g, a, b: [g, g])
elementwise("Subtract", np.subtract, lambda em, a, b: em.sub(a, b), "ff", _simplify_sub,
            lambda n, g, a, b: [g, mk("Minus", g)])
elementwise("Mult", np.multiply, lambda em, a, b: em.mul(a, b), "ff", _simplify_mult,
            lambda n, g, a, b: [mk("Mult", g, b), mk("Mult", g, a)])
elementwise("Divide", np.divide, lambda em, a, b: em.div(a, b), "ff", _simplify_div,
            lambda n, g, a, b: [mk("Divide", g, b), mk("Minus", mk("Divide", mk("Mult", g, n), b))])
elementwise("Minus", np.negative, lambda em, a: em.neg(a), "f", _simplify_minus,
            lambda n, g, a: [mk("Minus", g)])

# comparisons: 1 or 0, IEEE semantics (NaN compares false except with !=)
for _name, _np, _pred in [
    ("Equal", np.equal, "=="), ("NotEqual", np.not_equal, "!="),
    ("LessThan", np.less, "<"), ("GreaterThan", np.greater, ">"),
    ("LessOrEqual", np.less_equal, "<="), ("GreaterOrEqual", np.greater_equal, ">="),
]:
    elementwise(
        _name,
        (lambda f: lambda a, b: f(a, b).astype(np.float64))(_np),
        (lambda p: lambda em, a, b: em.to_float(em.cmp(p, a, b)))(_pred),
        "ff",
        vjp=no_derivative,
    )


# ---- math --------------------------------------------------------------------------


def _ref_rsqrt(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, 1.0 / np.sqrt(x))


def _lower_rsqrt(em, x):
    return em.select(em.cmp("==", x, em.const(0)), em.const(0), em.div(em.const(1), em.call("sqrt", x)))


def _ref_xlogx(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(x))


def _lower_xlogx(em, x):
    return em.select(em.cmp("==", x, em.const(0)), em.const(0), em.mul(x, em.call("log", x)))


def _ref_sinxdivx(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 1.0, np.sin(x) / x)


def _lower_sinxdivx(em, x):
    return em.select(em.cmp("==", x, em.const(0)), em.const(1), em.div(em.call("sin", x), x))


def _ref_round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _vjp_atan2(n, g, y, x):
    r2 = mk("Add", mk("Square", x), mk("Square", y))
    return [mk("Divide", mk("Mult", g, x), r2), mk("Minus", mk("Divide", mk("Mult", g, y), r2))]


def _simplify_exp(node):
    (a,) = node.args
    if is_const(a, 0) and a.dim == 1:
        return make("IntCst", (), (1,))
    return None


def _simplify_sqrt(node):
    (a,) = node.args
    if a.name == "Square":  # exact for every real, NaN and inf included
        return make("Abs", (a.args[0],))
    return None


def _simplify_square(node):
    (a,) = node.args
    v = int_value(a)
    if v is not None:
        return make("IntCst", (), (v * v,))
    return None


def _simplify_abs(node):
    (a,) = node.args
    if a.name in ("Abs", "Square", "Exp", "Sqrt", "Norm2", "SqNorm2", "SqDist"):
        return a
    return None


elementwise("Exp", np.exp, lambda em, x: em.call("exp", x), simplify=_simplify_exp,
            vjp=lambda n, g, a: [mk("Mult", g, n)])
elementwise("Log", np.log, lambda em, x: em.call("log", x), vjp=lambda n, g, a: [mk("Divide", g, a)])
elementwise("XLogX", _ref_xlogx, _lower_xlogx,
            vjp=lambda n, g, a: [mk("Mult", g, mk("Add", mk("Log", a), cst(1)))])
elementwise("Sin", np.sin, lambda em, x: em.call("sin", x), vjp=lambda n, g, a: [mk("Mult", g, mk("Cos", a))])
elementwise("SinXDivX", _ref_sinxdivx, _lower_sinxdivx,  # (cos a - sinc a) / a
            vjp=lambda n, g, a: [mk("Mult", g, mk("Divide", mk("Subtract", mk("Cos", a), n), a))])
elementwise("Asin", np.arcsin, lambda em, x: em.call("asin", x),
            vjp=lambda n, g, a: [mk("Divide", g, mk("Sqrt", mk("Subtract", cst(1), mk("Square", a))))])
elementwise("Cos", np.cos, lambda em, x: em.call("cos", x),
            vjp=lambda n, g, a: [mk("Minus", mk("Mult", g, mk("Sin", a)))])
elementwise("Acos", np.arccos, lambda em, x: em.call("acos", x),
            vjp=lambda n, g, a: [mk("Minus", mk("Divide", g, mk("Sqrt", mk("Subtract", cst(1), mk("Square", a)))))])
elementwise("Atan", np.arctan, lambda em, x: em.call("atan", x),
            vjp=lambda n, g, a: [mk("Divide", g, mk("Add", cst(1), mk("Square", a)))])
elementwise("Atan2", np.arctan2, lambda em, y, x: em.call("atan2", y, x), "ff", vjp=_vjp_atan2)
elementwise("Inv", lambda x: 1.0 / x, lambda em, x: em.div(em.const(1), x),
            vjp=lambda n, g, a: [mk("Minus", mk("Mult", g, mk("Square", n)))])
elementwise("Square", np.square, lambda em, x: em.mul(x, x), simplify=_simplify_square,
            vjp=lambda n, g, a: [mk("Mult", cst(2), mk("Mult", g, a))])
elementwise("Sqrt", np.sqrt, lambda em, x: em.call("sqrt", x), simplify=_simplify_sqrt,  # g Rsqrt(a) / 2: 0 at 0,
            vjp=lambda n, g, a: [mk("Mult", mk("IntInv", attrs=(2,)), mk("Mult", g, mk("Rsqrt", a)))])  # as KeOps
elementwise("Rsqrt", _ref_rsqrt, _lower_rsqrt,  # -n^3 / 2
            vjp=lambda n, g, a: [mk("Mult", mk("IntInv", attrs=(-2,)), mk("Mult", g, mk("Pow", n, attrs=(3,))))])
elementwise("Abs", np.abs, lambda em, x: em.call("fabs", x), simplify=_simplify_abs,
            vjp=lambda n, g, a: [mk("Mult", g, mk("Sign", a))])
elementwise("Floor", np.floor, lambda em, x: em.call("floor", x), vjp=no_derivative)
elementwise(
    "Sign",
    lambda x: np.sign(x),
    lambda em, x: em.select(
        em.cmp(">", x, em.const(0)), em.const(1),
        em.select(em.cmp("<", x, em.const(0)), em.const(-1),
                  em.select(em.cmp("==", x, em.const(0)), em.const(0), x)),
    ),
    vjp=no_derivative,
)
elementwise(
    "Step",
    lambda x: np.where(x < 0, 0.0, 1.0),
    lambda em, x: em.select(em.cmp("<", x, em.const(0)), em.const(0), em.const(1)),
    vjp=no_derivative,
)
elementwise(
    "ReLU",
    lambda x: np.where(x < 0, 0.0, x),
    lambda em, x: em.select(em.cmp("<", x, em.const(0)), em.const(0), x),
    vjp=lambda n, g, a: [mk("Mult", g, mk("Step", a))],
)
elementwise(
    "Powf",
    lambda x, y: np.power(x, y),
    lambda em, x, y: em.call("pow", x, y),
    "ff",
    vjp=lambda n, g, a, b: [mk("Mult", g, mk("Mult", b, mk("Powf", a, mk("Subtract", b, cst(1))))),
                            mk("Mult", g, mk("Mult", n, mk("Log", a)))],
)
elementwise(
    "Clamp",
    lambda x, a, b: np.where(x < a, a, np.where(x > b, b, x)),
    lambda em, x, a, b: em.select(em.cmp("<", x, a), a, em.select(em.cmp(">", x, b), b, x)),
    "fff",
    vjp=lambda n, g, x, a, b: [mk("Mult", g, mk("Mult", mk("GreaterOrEqual", x, a), mk("LessOrEqual", x, b))),
                               mk("Mult", g, mk("LessThan", x, a)),
                               mk("Mult", g, mk("Mult", mk("GreaterOrEqual", x, a), mk("GreaterThan", x, b)))],
)
elementwise(
    "IfElse",
    lambda c, a, b: np.where(c >= 0, a, b),
    lambda em, c, a, b: em.select(em.cmp(">=", c, em.const(0)), a, b),
    "fff",
    vjp=lambda n, g, c, a, b: [None, mk("Mult", g, mk("Step", c)), mk("Mult", g, mk("LessThan", c, cst(0)))],
)
elementwise(
    "Mod",
    lambda x, m, off: x - m * np.floor((x - off) / m),
    lambda em, x, m, off: em.sub(x, em.mul(m, em.call("floor", em.div(em.sub(x, off), m)))),
    "fff",
    vjp=lambda n, g, x, m, off: [g, mk("Minus", mk("Mult", g, mk("Floor", mk("Divide", mk("Subtract", x, off), m)))),
                                 None],
)


def _ref_clampint(x, a, b):
    return np.where(x < a, float(a), np.where(x > b, float(b), x))


def _lower_clampint(em, x, a, b):
    lo, hi = em.const(a), em.const(b)
    return em.select(em.cmp("<", x, lo), lo, em.select(em.cmp(">", x, hi), hi, x))


class ClampInt(Elementwise):
    name, signature = "ClampInt", "fii"
    ref = staticmethod(_ref_clampint)
    lower1 = staticmethod(_lower_clampint)

    def vjp(self, node, g):
        (x,), (a, b) = node.args, node.attrs
        return [mk("Mult", g, mk("Mult", mk("GreaterOrEqual", x, cst(a)), mk("LessOrEqual", x, cst(b))))]


register(ClampInt)


class Round(Elementwise):
    """Round(f, d): round to d decimals, halves away from zero (C's round)."""

    name, signature = "Round", "fi"

    def infer_dim(self, dims, attrs):
        if abs(attrs[0]) > 300:  # 10**d must stay a finite double
            raise DimensionError(f"Round: the number of decimals must be between -300 and 300, got {attrs[0]}")
        return super().infer_dim(dims, attrs)

    @staticmethod
    def ref(x, d):
        scale = 10.0 ** d
        return _ref_round_half_away(x * scale) / scale

    @staticmethod
    def lower1(em, x, d):
        scale = em.const(10.0 ** d)
        return em.div(em.call("round", em.mul(x, scale)), scale)

    vjp = staticmethod(no_derivative)


register(Round)


class Pow(Elementwise):
    """Pow(f, n): integer power by repeated squaring (negative n inverts)."""

    name, signature = "Pow", "fi"

    @staticmethod
    def ref(x, n):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.power(x, float(n))

    @staticmethod
    def lower1(em, x, n):
        return em.powi(x, n)

    def simplify(self, node):
        (a,), (n,) = node.args, node.attrs
        if n == 1:
            return a
        if n == 2:
            return make("Square", (a,))
        if n == -1:
            return make("Inv", (a,))
        v = int_value(a)
        if v is not None and n >= 0:
            return make("IntCst", (), (v ** n,))
        return None

    def vjp(self, node, g):
        (a,), (n,) = node.args, node.attrs
        if n == 0:
            return [None]
        return [mk("Mult", cst(n), mk("Mult", g, mk("Pow", a, attrs=(n - 1,))))]


register(Pow)
