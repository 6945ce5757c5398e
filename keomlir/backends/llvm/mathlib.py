"""Elementary functions written in IR through the Emitter: exp, log, sin, cos.

Why not libm: a libm call per pair costs more than the rest of a Gaussian
kernel, blocks vectorization, and does not exist on NVPTX.  These are
branch-free (selects only), so they work lane-wise on `<W x float>` vectors and
on any target.  Method: Cody-Waite range reduction, then a polynomial on the
reduced interval; special values (NaN, +-inf, 0, overflow, subnormal inputs of
log) are patched in with selects.

Accuracy, as tests/test_mathlib.py checks against float64 NumPy on 2^18 points
per case: float32 exp <= 1 ulp, log <= 3 ulp, sin/cos <= 2 ulp for |x| <= 100;
float64 exp <= 2, log <= 3, sin/cos <= 8 ulp.  sin/cos on |x| <= 1e4: absolute
error <= 1.2e-7 (float32) / 2.3e-16 (float64) (no Payne-Hanek reduction: the
relative error near zeros of large arguments grows with |x|).
"""

from __future__ import annotations

import math


def call(em, name, *args):
    return FUNCTIONS[name](em, *args)


def _poly(em, x, coeffs):
    """c0 + c1 x + c2 x^2 + ... by Horner's rule with fused multiply-adds."""
    acc = em.const(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = em.fma(acc, x, em.const(c))
    return acc


def _taylor(n):
    return [1.0 / math.factorial(k) for k in range(n + 1)]


def _params(em):
    if em.bits == 32:
        return dict(mant=23, bias=127, exp_terms=7, max_exp=88.72283935546875, min_exp=-103.972084045410,
                    ln2_hi=0.693145751953125, ln2_lo=1.428606765330187e-06, log_terms=6, trig_terms=6)
    return dict(mant=52, bias=1023, exp_terms=13, max_exp=709.782712893384, min_exp=-745.1332191019412,
                ln2_hi=0.6931471803691238, ln2_lo=1.9082149292705877e-10, log_terms=11, trig_terms=10)


def _scale2(em, x, n_float, p):
    """x * 2**n for an integral float n in [-2*bias, 2*bias]: two steps, each a valid exponent."""
    half = em.call("floor", em.mul(n_float, em.const(0.5)))
    rest = em.sub(n_float, half)
    for part in (half, rest):
        bits = em.b.shl(em.b.add(em.to_int(part), em.iconst(p["bias"])), em.iconst(p["mant"]))
        x = em.mul(x, em.as_float(bits))
    return x


def exp(em, x):
    p = _params(em)
    n = em.call("floor", em.fma(x, em.const(1 / math.log(2)), em.const(0.5)))
    n = em.select(em.isnan(n), em.const(0), n)
    n = em.select(em.cmp(">", n, em.const(2 * p["bias"])), em.const(2 * p["bias"]), n)
    n = em.select(em.cmp("<", n, em.const(-2 * p["bias"])), em.const(-2 * p["bias"]), n)
    r = em.fma(n, em.const(-p["ln2_hi"]), x)
    r = em.fma(n, em.const(-p["ln2_lo"]), r)
    y = _scale2(em, _poly(em, r, _taylor(p["exp_terms"])), n, p)
    y = em.select(em.cmp(">", x, em.const(p["max_exp"])), em.const(math.inf), y)
    y = em.select(em.cmp("<", x, em.const(p["min_exp"])), em.const(0), y)
    return em.select(em.isnan(x), x, y)


def log(em, x):
    p = _params(em)
    mant_mask = (1 << p["mant"]) - 1
    # subnormals: scale into the normal range first
    tiny = em.cmp("<", x, em.const(2.0 ** (1 - p["bias"])))
    xs = em.select(tiny, em.mul(x, em.const(2.0 ** p["mant"])), x)
    bits = em.as_int(xs)
    e = em.b.sub(em.b.ashr(bits, em.iconst(p["mant"])), em.iconst(p["bias"]))
    m = em.as_float(em.b.or_(em.b.and_(bits, em.iconst(mant_mask)), em.iconst(p["bias"] << p["mant"])))
    # m in [1, 2): move to [sqrt(1/2), sqrt(2)) so that s = (m-1)/(m+1) is small
    big = em.cmp(">", m, em.const(math.sqrt(2)))
    m = em.select(big, em.mul(m, em.const(0.5)), m)
    ef = em.add(em.int_to_float(e), em.select(big, em.const(1), em.const(0)))
    ef = em.sub(ef, em.select(tiny, em.const(p["mant"]), em.const(0)))
    s = em.div(em.sub(m, em.const(1)), em.add(m, em.const(1)))
    s2 = em.mul(s, s)
    series = _poly(em, s2, [2.0 / (2 * k + 1) for k in range(p["log_terms"])])
    y = em.fma(ef, em.const(math.log(2)), em.mul(s, series))
    y = em.select(em.cmp("==", x, em.const(0)), em.const(-math.inf), y)
    y = em.select(em.cmp("==", x, em.const(math.inf)), x, y)
    return em.select(em.cmp("<", x, em.const(0)), em.const(math.nan), em.select(em.isnan(x), x, y))


# pi/2 = p1 + p2 + p3, each rounded to the type: with fused multiply-adds each
# step x - k*p is exact before its one rounding (Cody-Waite with FMA)
_PI2_PARTS = {32: (1.5707963705062866, -4.371138828673793e-08, -1.7151245100058819e-15),
              64: (1.5707963267948966, 6.123233995736766e-17, -1.4973849048591698e-33)}


def _mod4(em, k):
    return em.sub(k, em.mul(em.const(4), em.call("floor", em.mul(k, em.const(0.25)))))


def _trig(em, x, shift):
    """sin(x + shift * pi/2): reduce to r in [-pi/4, pi/4] and a quadrant q."""
    k = em.call("floor", em.fma(x, em.const(2 / math.pi), em.const(0.5)))
    r = x
    for part in _PI2_PARTS[em.bits]:
        r = em.fma(k, em.const(-part), r)
    q = _mod4(em, em.add(k, em.const(shift)))
    p = _params(em)
    r2 = em.mul(r, r)
    terms = p["trig_terms"]
    s = em.mul(r, _poly(em, r2, [(-1) ** j / math.factorial(2 * j + 1) for j in range(terms)]))
    c = _poly(em, r2, [(-1) ** j / math.factorial(2 * j) for j in range(terms)])
    out = em.select(em.cmp("==", q, em.const(0)), s,
                    em.select(em.cmp("==", q, em.const(1)), c,
                              em.select(em.cmp("==", q, em.const(2)), em.neg(s), em.neg(c))))
    return em.select(em.cmp("==", em.call("fabs", x), em.const(math.inf)), em.const(math.nan), out)


def sin(em, x):
    return _trig(em, x, 0)


def cos(em, x):
    return _trig(em, x, 1)


FUNCTIONS = {"exp": exp, "log": log, "sin": sin, "cos": cos}
