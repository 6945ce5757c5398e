"""The IR math library against float64 NumPy: stated ulp bounds, special values,
scalar and vector (SIMD) forms."""

import ctypes

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from keomlir.backends.llvm import toolchain
from keomlir.backends.llvm.emitter import Emitter
from keomlir.backends.llvm.emitter import counted_loop
from keomlir.schedule.targets import detect_host

# name: (sampling, range, float32 ulp bound, float64 ulp bound); sin/cos also get an
# absolute bound on the whole range (their relative error grows near zeros of large x)
CASES = {
    "exp": ("uniform", (-110.0, 110.0), 1, 2),
    "log": ("log", (1e-35, 1e35), 3, 3),
    "sin": ("uniform", (-100.0, 100.0), 2, 8),
    "cos": ("uniform", (-100.0, 100.0), 2, 8),
}
ABS_BOUND = {"float32": 1.2e-7, "float64": 2.3e-16}


HOST_AVX512 = detect_host().has("avx512f")  # (False on other architectures: the generic path alone)


def _compile(name, dtype, lanes, features=(), negate=False):
    t = ir.FloatType() if dtype == "float32" else ir.DoubleType()
    m = ir.Module()
    m.triple = llvm.get_process_triple()
    f = ir.Function(m, ir.FunctionType(ir.VoidType(), [t.as_pointer(), t.as_pointer(), ir.IntType(64)]), "f")
    b = ir.IRBuilder(f.append_basic_block())
    vt = t if lanes is None else ir.VectorType(t, lanes)
    em = Emitter(b, vt)
    em.features = frozenset(features)
    with counted_loop(b, ir.Constant(ir.IntType(64), 0), f.args[2], "k", lanes or 1) as k:
        src = b.bitcast(b.gep(f.args[0], [k]), vt.as_pointer())
        dst = b.bitcast(b.gep(f.args[1], [k]), vt.as_pointer())
        x = b.load(src, align=4)
        b.store(em.call(name, em.neg(x) if negate else x), dst, align=4)
    b.ret_void()
    engine = toolchain.host_engine(toolchain.host_object(m))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(engine.get_function_address("f"))

    def run(x):
        n = len(x) + (-len(x)) % (lanes or 1)
        xp = np.zeros(n, dtype)
        xp[:len(x)] = x
        y = np.empty_like(xp)
        fn(xp.ctypes.data, y.ctypes.data, n)
        return y[:len(x)]

    run.keep = engine  # the code lives as long as its engine
    return run


def _ulp_error(y, ref64, dtype):
    refc = ref64.astype(dtype)
    return np.abs(y.astype(np.float64) - ref64) / np.spacing(np.abs(refc)).astype(np.float64)


@pytest.mark.parametrize("lanes", [None, 8])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_ulp_bound(name, dtype, lanes):
    sampling, (lo, hi), ulp32, ulp64 = CASES[name]
    r = np.random.default_rng(0)
    n = 1 << 18
    x = r.uniform(lo, hi, n) if sampling == "uniform" else np.exp(r.uniform(np.log(lo), np.log(hi), n))
    x = x.astype(dtype)
    f = _compile(name, dtype, lanes)
    with np.errstate(all="ignore"):
        ref = getattr(np, name)(x.astype(np.float64))
    finite = np.isfinite(ref.astype(dtype)) & (np.abs(ref) > np.finfo(dtype).tiny)
    err = _ulp_error(f(x)[finite], ref[finite], dtype)
    assert err.max() <= (ulp32 if dtype == "float32" else ulp64)


@pytest.mark.skipif(not HOST_AVX512, reason="the host has no AVX-512")
@pytest.mark.parametrize("lanes", [None, 8, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_scalef_same_bits(dtype, lanes):
    """2^n by AVX-512's vscalef gives exactly the generic two-multiply result (both round the
    exact product once), subnormal, zero and infinite results included; ulp bound as above."""
    if lanes == 16 and dtype == "float64":
        pytest.skip("no 1024-bit vectors")
    lo, hi = (-120.0, 100.0) if dtype == "float32" else (-800.0, 800.0)
    r = np.random.default_rng(3)
    x = r.uniform(lo, hi, 1 << 16).astype(dtype)
    x[:4096] = r.uniform(lo * 0.87, lo * 0.72, 4096)  # results near and below the smallest normal
    x[:6] = [np.nan, np.inf, -np.inf, 0.0, hi, lo]
    fast = _compile("exp", dtype, lanes, ("avx512f", "avx512vl"))(x)
    assert np.array_equal(fast.view(np.uint8), _compile("exp", dtype, lanes)(x).view(np.uint8))
    with np.errstate(all="ignore"):
        ref = np.exp(x.astype(np.float64))
    finite = np.isfinite(ref.astype(dtype)) & (np.abs(ref) > np.finfo(dtype).tiny)
    assert _ulp_error(fast[finite], ref[finite], dtype).max() <= CASES["exp"][2 if dtype == "float32" else 3]


@pytest.mark.parametrize("features", [(), ("avx512f", "avx512vl")])
@pytest.mark.parametrize("lanes", [None, 16])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_of_negation_same_bits(dtype, lanes, features):
    """exp(-y) taken from y (the sign folded into its FMAs: Exp(-SqDist)) gives the bits of exp
    of the negated number, over the whole range, both clamps and special values included."""
    if features and not HOST_AVX512:
        pytest.skip("the host has no AVX-512")
    lanes = None if lanes is None else lanes // (2 if dtype == "float64" else 1)
    big = 120.0 if dtype == "float32" else 800.0
    y = np.random.default_rng(5).uniform(-big, big, 1 << 14).astype(dtype)
    y[:8] = [np.nan, np.inf, -np.inf, 0.0, -0.0, big * 1e30 if dtype == "float64" else 3e38, -3e38, 1e-40]
    with np.errstate(all="ignore"):
        want = _compile("exp", dtype, lanes, features)(-y)
    got = _compile("exp", dtype, lanes, features, negate=True)(y)
    assert np.isnan(got[0]) and np.isnan(want[0])  # (a NaN's sign is not kept)
    assert np.array_equal(got[1:].view(np.uint8), want[1:].view(np.uint8))


@pytest.mark.parametrize("features", [(), ("avx512f",)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_nonpositive(dtype, features):
    """exp of x <= 0 (its domain: x - max), bit for bit; the flushing form: the same, or 0 below
    twice the smallest normal number (where every exp it takes is still normal; vscalef: never 0,
    it computes subnormals at full speed)."""
    if features and not HOST_AVX512:
        pytest.skip("the host has no AVX-512")
    lo = -120.0 if dtype == "float32" else -800.0
    x = np.random.default_rng(4).uniform(lo, 0, 1 << 14).astype(dtype)
    x[:4] = [np.nan, -np.inf, 0.0, -0.0]
    with np.errstate(all="ignore"):
        want = _compile("exp", dtype, 8)(x)
        got = _compile("exp_nonpositive", dtype, 8, features)(x)
        flushed = _compile("exp_nonpositive_flush", dtype, 8, features)(x)
    assert np.array_equal(got, want, equal_nan=True)
    bound = np.log(2 * np.finfo(dtype).tiny)  # below it (in float64), flushed
    kept = ~(x.astype(np.float64) < bound)
    assert np.array_equal(flushed[kept], want[kept], equal_nan=True)
    assert (want[kept & ~np.isnan(want)] >= np.finfo(dtype).tiny).all()
    assert np.array_equal(flushed[~kept], want[~kept] if features else np.zeros((~kept).sum(), dtype))
    assert (~kept).sum() > 100 and (kept & (x < bound + 1)).sum() > 10  # both sides of the bound drawn
    assert np.isnan(flushed[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_absolute_bound_on_large_arguments(name, dtype):
    x = np.random.default_rng(1).uniform(-1e4, 1e4, 1 << 16).astype(dtype)
    got = _compile(name, dtype, 8)(x)
    assert np.abs(got - getattr(np, name)(x.astype(np.float64))).max() <= ABS_BOUND[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_values(dtype):
    fi = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, fi.max, fi.tiny, fi.tiny / 8,
                  88.7, 89.0, -87.0, -104.0, 709.0, 710.0, -745.0, -746.0], dtype)
    for name in ("exp", "log", "sin", "cos"):
        xs = x if name in ("exp", "log") else x[np.abs(x) != fi.max]  # trig: |x| <= 1e4 is the stated range
        with np.errstate(all="ignore"):
            ref = getattr(np, name)(xs.astype(np.float64)).astype(dtype)
        got = _compile(name, dtype, None)(xs)
        atol = 4 * fi.tiny if name in ("exp", "log") else ABS_BOUND[dtype]
        close = np.isclose(got, ref, rtol=4 * fi.eps, atol=atol, equal_nan=True)
        assert close.all(), (name, xs[~close], got[~close], ref[~close])


@pytest.mark.parametrize("lanes", [None, 8])
@pytest.mark.parametrize("dtype,bound", [("float32", 4), ("float64", 6)])
@pytest.mark.parametrize("name,lo,hi", [("atan", -50.0, 50.0), ("asin", -1.0, 1.0), ("acos", -1.0, 1.0)])
def test_inverse_trig_ulp_bound(name, lo, hi, dtype, bound, lanes):
    x = np.random.default_rng(2).uniform(lo, hi, 1 << 16).astype(dtype)
    ref = {"atan": np.arctan, "asin": np.arcsin, "acos": np.arccos}[name](x.astype(np.float64))
    assert _ulp_error(_compile(name, dtype, lanes)(x), ref, dtype).max() <= bound
