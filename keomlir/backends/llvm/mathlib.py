"""Elementary functions written in IR through the Emitter: exp, log, sin, cos,
atan, atan2, asin, acos, pow.

Why not libm: a libm call per pair costs more than the rest of a Gaussian
kernel, blocks vectorization, and does not exist on NVPTX.  These are
branch-free (selects only), so they work lane-wise on `<W x float>` vectors and
on any target.  Method: Cody-Waite range reduction, then a polynomial on the
reduced interval; special values (NaN, +-inf, 0, overflow, subnormal inputs of
log) are patched in with selects, or (exp) come out of a clamp of the argument.
Where the target has them (`target_features`), CPU instructions replace generic
sequences with the same results (exp's 2^n by AVX-512's vscalef).

Accuracy, as tests/test_mathlib.py checks against float64 NumPy on 2^18 points
per case: float32 exp <= 1 ulp, log <= 3 ulp, sin/cos <= 2 ulp for |x| <= 100;
float64 exp <= 2, log <= 3, sin/cos <= 8 ulp.  sin/cos on |x| <= 1e4: absolute
error <= 1.2e-7 (float32) / 2.3e-16 (float64) (no Payne-Hanek reduction: the
relative error near zeros of large arguments grows with |x|).  atan <= 3 ulp,
asin/acos/atan2 <= 4 ulp in float32 (<= 6 in float64); pow is computed in float64
for float32 (<= 1 ulp) and loses about |y log x| ulp in float64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from llvmlite import ir


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


# features of the target CPU this library uses where present (the Emitter's `features`)
FEATURES = ("avx512f", "avx512vl")


def target_features(target):
    """The FEATURES a schedule's Target has."""
    return frozenset(f for f in FEATURES if target.has(f))


def _params(em):
    # exp_lo / exp_hi: just beyond the arguments whose exp is nonzero / finite (`exp`)
    if em.bits == 32:
        return dict(mant=23, bias=127, exp_lo=-110.0, exp_hi=100.0, exp_poly=_fit_exp(6),
                    ln2_hi=0.693145751953125, ln2_lo=1.428606765330187e-06, log_terms=6, trig_terms=6)
    return dict(mant=52, bias=1023, exp_lo=-760.0, exp_hi=760.0, exp_poly=_taylor(13),
                ln2_hi=0.6931471803691238, ln2_lo=1.9082149292705877e-10, log_terms=11, trig_terms=10)


@functools.lru_cache(maxsize=None)
def _fit_exp(degree):
    """Coefficients of p(r) = 1 + r + r^2 q(r) ~ exp(r) on the reduced range |r| <= ln(2)/2 (and
    a margin for the rounding of n): the minimax relative error, by Lawson's iteratively
    reweighted least squares on Chebyshev nodes; q (of degree - 2) fitted in the scaled
    variable u = r / a against its series sum_k r^k / (k + 2)! (no cancellation).  degree 6:
    3.1e-9 relative error (3.9e-9 with the coefficients rounded to float32) against the
    degree-7 Taylor series' 7.0e-9 (7.3e-9): one FMA fewer and more accurate."""
    a = math.log(2) / 2 * (1 + 2.0 ** -10)
    u = np.cos(np.linspace(0, math.pi, 1000))
    r = a * u
    q = sum(r ** k / math.factorial(k + 2) for k in range(20))
    scale = r * r / np.exp(r)  # the relative error of p per unit error of q
    basis = np.vander(u, degree - 1, increasing=True)
    w = np.full(len(u), 1.0 / len(u))
    for _ in range(100):
        sw = np.sqrt(w) * scale
        c = np.linalg.lstsq(basis * sw[:, None], q * sw, rcond=None)[0]
        w = w * np.abs(basis @ c - q) * scale + 1e-300
        w /= w.sum()
    return [1.0, 1.0] + [float(c[k] / a ** k) for k in range(degree - 1)]


def _clamp(em, x, lo, hi):
    """x limited to [lo, hi], a NaN passed through (one max and one min on x86; none for an
    infinite bound)."""
    if lo != -math.inf:
        x = em.select(em.cmp("<", x, em.const(lo)), em.const(lo), x)
    return x if hi == math.inf else em.select(em.cmp(">", x, em.const(hi)), em.const(hi), x)


def _scale2(em, x, k, shifter, p):
    """x * 2**n, n = k - shifter an integer in [-2*bias, 2*bias] (k's low bits hold it): two
    multiplies by powers of two, the first exact, so the product is rounded once (subnormal,
    0 or inf as exact x * 2**n rounds); where the target has AVX-512, one vscalef does it."""
    n = em.b.sub(em.as_int(k), em.as_int(shifter))
    half = em.b.ashr(n, em.iconst(1))
    for part in (half, em.b.sub(n, half)):
        x = em.mul(x, em.as_float(em.b.shl(em.b.add(part, em.iconst(p["bias"])), em.iconst(p["mant"]))))
    return x


def _scalef(em, x, n):
    """x * 2**n for an integral float n by AVX-512's vscalef (rounded once, as `_scale2`), or None
    where this emitter's type has no such instruction."""
    if "avx512f" not in em.features:
        return None
    kind = "s" if em.bits == 32 else "d"
    i8, i32 = ir.IntType(8), ir.IntType(32)
    current = ir.Constant(i32, 4)  # the current rounding mode (MXCSR), as a plain multiply
    if em.lanes is None:  # the scalar form works on lane 0 of a 128-bit vector
        vt = ir.VectorType(em.t, 128 // em.bits)
        zero = ir.Constant(i32, 0)
        xv, nv = (em.b.insert_element(ir.Constant(vt, ir.Undefined), v, zero) for v in (x, n))
        y = _x86_call(em, f"llvm.x86.avx512.mask.scalef.s{kind}", vt, [xv, nv, xv, ir.Constant(i8, -1), current])
        return em.b.extract_element(y, zero)
    width = em.lanes * em.bits
    if width == 512:
        mask = ir.Constant(ir.IntType(max(8, em.lanes)), -1)
        return _x86_call(em, f"llvm.x86.avx512.mask.scalef.p{kind}.512", em.t, [x, n, x, mask, current])
    if width in (128, 256) and "avx512vl" in em.features:
        return _x86_call(em, f"llvm.x86.avx512.mask.scalef.p{kind}.{width}", em.t, [x, n, x, ir.Constant(i8, -1)])
    return None


def _x86_call(em, name, vt, args):
    fn = em.module.globals.get(name)
    if fn is None:
        fn = ir.Function(em.module, ir.FunctionType(vt, [a.type for a in args]), name)
    return em.b.call(fn, args)


def exp_nonpositive(em, x):
    """e^x for x <= 0 or NaN (x - max): exp without its clamp from above."""
    return exp(em, x, hi=math.inf)


def exp_nonpositive_flush(em, x):
    """exp_nonpositive, or 0 where that is below twice the smallest normal number and the
    target would compute it slowly (an underflowing multiply; not AVX-512's vscalef): for the
    terms of a sum known to be at least 1, which such terms change by less than 2^-90 of a unit.
    The exp itself is taken of x clamped to that bound, where it is still a normal number: a
    flushed lane's discarded value must not be subnormal either (a subnormal product costs a
    microcode assist on x86, whatever select drops it after: the AVX2 softmin's speed
    depended on how many of its terms underflowed; bench/ab.py's softmin rows at e = 1 and 100)."""
    if "avx512f" in em.features:
        return exp(em, x, hi=math.inf)
    ftype = np.float32 if em.bits == 32 else np.float64
    exact = math.log(2 * np.finfo(ftype).tiny)
    lo = ftype(exact)  # the smallest number of the type >= log(2 tiny): every exp taken is normal
    lo = float(np.nextafter(lo, ftype(np.inf)) if lo < exact else lo)
    return em.select(em.cmp("<", x, em.const(lo)), em.const(0), exp(em, x, lo=lo, hi=math.inf))


def exp(em, x, lo=None, hi=None):
    """e^x = 2^n p(r): n = round(x / ln 2), r = x - n ln 2 in [-ln(2)/2, ln(2)/2] (Cody-Waite,
    exact with FMA), p a polynomial (float32: the degree-6 minimax fit `_fit_exp`; float64: Taylor,
    degree 13), 2^n applied with one rounding (`_scalef`, `_scale2`).  x is first clamped just
    beyond the range where e^x is finite and nonzero, so that 2^n p overflows to inf or
    underflows to 0 by itself: no select for special values (a NaN passes the clamp)."""
    p = _params(em)
    y, k, shifter, n = _exp_reduced(em, x, p["exp_lo"] if lo is None else lo, p["exp_hi"] if hi is None else hi)
    scaled = _scalef(em, y, n)
    return _scale2(em, y, k, shifter, p) if scaled is None else scaled


def exp_nonpositive_times(em, x, w):
    """e^x w, for x <= 0 or NaN, as two factors (a, b) whose product an FMA takes whole: a = p(r) 2^h
    and b = w 2^(n - h), h = n - floor(n / 4) (`exp`'s n and p(r)).  x is clamped where h = -bias,
    a's exponent bits 0: a = 0 there, the term 0 w (NaN for an infinite w) as where e^x rounds to 0;
    above, a and b are normal (b for |w| above 2^(n/4) times the smallest normal number), their exact
    product e^x w (e^x's normal range and beyond it, where e^x alone would be subnormal or 0).  e^x
    itself is not made: a subnormal number made by a multiply and taken by the next instruction made
    the AVX2 weighted softmin slow on far data (Zen 4: bench/ab.py's weighted softmin rows at e = 1
    and 100, with KEOMLIR_TARGET=x86-64-v3).  Where e^x is normal, fma(a, b, s) is
    fma(e^x, w, s) bit for bit, with as many operations.  With AVX-512's vscalef (no such wait): (e^x, w)."""
    p = _params(em)
    # the n whose h = n - floor(n / 4) is -bias: n = -(4 bias) / 3, rounded to where floor(n / 4) fits
    n_zero = -((4 * p["bias"] + 2) // 3)
    y, k, shifter, n = _exp_reduced(em, x, n_zero * math.log(2), math.inf)
    scaled = _scalef(em, y, n)
    if scaled is not None:
        return scaled, w
    ni = em.b.sub(em.as_int(k), em.as_int(shifter))
    quarter = em.b.ashr(ni, em.iconst(2))

    def power(e):  # 2^e (0 for e = -bias)
        return em.as_float(em.b.shl(em.b.add(e, em.iconst(p["bias"])), em.iconst(p["mant"])))

    return em.mul(y, power(em.b.sub(ni, quarter))), em.mul(w, power(quarter))


def _exp_reduced(em, x, lo, hi):
    """(p(r), k, shifter, n) of e^x = 2^n p(r) (`exp`): n = k - shifter, k's low bits holding n."""
    p = _params(em)
    shifter = em.const(1.5 * 2.0 ** p["mant"])
    # e^-y (exp(-SqDist)) is taken from y, each step the same number as from x = -y (rounding is
    # symmetric): the sign folds into the FMAs, no sign flip a lane
    y = em.negated(x)
    src, sign = (x, 1) if y is None else (y, -1)
    src = _clamp(em, src, lo, hi) if sign > 0 else _clamp(em, src, -hi, -lo)
    k = em.fma(src, em.const(sign / math.log(2)), shifter)  # adding the shifter rounds x / ln 2 to an integer
    n = em.sub(k, shifter)
    r = em.fma(n, em.const(-sign * p["ln2_hi"]), src)
    r = em.fma(n, em.const(-p["ln2_lo"]), r if sign > 0 else em.neg(r))
    return _poly(em, r, p["exp_poly"]), k, shifter, n


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


# ---- pow and the inverse trigonometric functions ---------------------------------------

def _atan_reduced(em, a):
    """atan(a) for 0 <= a <= 1 (NaN passes): a = tan(pi/8) splits the range,
    then an odd polynomial on |t| <= tan(pi/8) (fit error 6e-8 in float32, 1.4e-16 in float64)."""
    t8 = math.tan(math.pi / 8)
    big = em.cmp(">", a, em.const(t8))
    t = em.select(big, em.div(em.sub(a, em.const(1)), em.add(a, em.const(1))), a)
    z = em.mul(t, t)
    coeffs = _fit_atan(5 if em.bits == 32 else 11)
    p = em.const(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = em.fma(p, z, em.const(c))
    r = em.fma(em.mul(t, z), p, t)
    return em.select(big, em.add(em.const(math.pi / 4), r), r)


@functools.lru_cache(maxsize=None)
def _fit_atan(n_terms):
    """Coefficients c_k of atan(t) ~ t + t^3 sum_k c_k z^k, z = t^2 <= tan(pi/8)^2: a
    least-squares fit on Chebyshev nodes of g(z) = (atan(t) - t) / t^3, itself summed
    from its series (no cancellation), in the scaled variable u = z / z_max."""
    z_max = math.tan(math.pi / 8) ** 2
    u = (np.cos(np.linspace(0, math.pi, 2000)) + 1) / 2
    z = u * z_max
    g = sum((-1) ** (k + 1) * z ** k / (2 * k + 3) for k in range(40))
    a = np.linalg.lstsq(np.vander(u, n_terms, increasing=True), g, rcond=None)[0]
    return [float(a[k] / z_max ** k) for k in range(n_terms)]




def _atan(em, x):
    ax = em.call("fabs", x)
    inv = em.cmp(">", ax, em.const(1))
    a = em.select(inv, em.div(em.const(1), ax), ax)
    r = _atan_reduced(em, a)
    r = em.select(inv, em.sub(em.const(math.pi / 2), r), r)
    return em.select(em.cmp("<", x, em.const(0)), em.neg(r), r)


def _atan2(em, y, x):
    ax, ay = em.call("fabs", x), em.call("fabs", y)
    swap = em.cmp(">", ay, ax)
    hi, lo = em.select(swap, ay, ax), em.select(swap, ax, ay)
    both_inf = em.and_(em.cmp("==", ax, em.const(math.inf)), em.cmp("==", ay, em.const(math.inf)))
    ratio = em.select(both_inf, em.const(1),
                      em.select(em.cmp("==", hi, em.const(0)), em.const(0), em.div(lo, hi)))
    r = _atan_reduced(em, ratio)
    r = em.select(swap, em.sub(em.const(math.pi / 2), r), r)
    neg_x = em.or_(em.cmp("<", x, em.const(0)),
                   em.and_(em.cmp("==", x, em.const(0)), em.b.icmp_signed("<", em.as_int(x), em.iconst(0))))
    r = em.select(neg_x, em.sub(em.const(math.pi), r), r)
    y_neg = em.b.icmp_signed("<", em.as_int(y), em.iconst(0))  # the sign bit: atan2(-0, x) = -0 or -pi
    r = em.select(y_neg, em.neg(r), r)
    return em.select(em.or_(em.isnan(x), em.isnan(y)), em.add(x, y), r)


def _asin(em, x):
    # asin x = atan2(x, sqrt((1-x)(1+x))): accurate near |x| = 1, NaN outside [-1, 1]
    c = em.call("sqrt", em.mul(em.sub(em.const(1), x), em.add(em.const(1), x)))
    return em.select(em.cmp(">", em.call("fabs", x), em.const(1)), em.const(math.nan), _atan2(em, x, c))


def _acos(em, x):
    # acos x = 2 atan2(sqrt(1-x), sqrt(1+x))
    r = em.mul(em.const(2), _atan2(em, em.call("sqrt", em.sub(em.const(1), x)),
                                   em.call("sqrt", em.add(em.const(1), x))))
    return em.select(em.cmp(">", em.call("fabs", x), em.const(1)), em.const(math.nan), r)


def _pow(em, x, y):
    """C's pow(x, y) as exp(y log|x|), the sign from an odd integer y.  float32
    works in float64 (exact to the last bit of float32 but in rare ties); float64
    loses about |y log x| ulp to the rounding of log."""
    if em.bits == 32:
        wide = em.with_type(ir.DoubleType())
        r = _pow(wide, em.convert(x, wide), em.convert(y, wide))
        return wide.convert(r, em)
    ax = em.call("fabs", x)
    r = em.call("exp", em.mul(y, em.call("log", ax)))
    y_int = em.cmp("==", em.call("floor", y), y)
    y_half = em.mul(y, em.const(0.5))
    y_odd = em.and_(y_int, em.cmp("!=", em.call("floor", y_half), y_half))
    x_neg = em.cmp("<", x, em.const(0))
    r = em.select(em.and_(x_neg, y_odd), em.neg(r), r)
    r = em.select(em.and_(x_neg, em.not_(y_int)), em.const(math.nan), r)
    r = em.select(em.and_(em.cmp("==", x, em.const(0)), em.cmp("<", y, em.const(0))),
                  em.select(y_odd, em.div(em.const(1), x), em.const(math.inf)), r)
    one = em.or_(em.cmp("==", y, em.const(0)), em.cmp("==", x, em.const(1)))
    return em.select(one, em.const(1), r)


FUNCTIONS = {"exp": exp, "exp_nonpositive": exp_nonpositive, "exp_nonpositive_flush": exp_nonpositive_flush,
             "exp_nonpositive_times": exp_nonpositive_times,
             "log": log, "sin": sin, "cos": cos,
             "atan": _atan, "atan2": _atan2, "asin": _asin, "acos": _acos, "pow": _pow}
