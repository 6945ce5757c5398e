"""Every reduction on both axes, float32 and float64, against dense NumPy."""

import numpy as np
import pytest

from keomlir.backends import cpu
from keomlir.numpy import Genred
from keomlir.schedule import host

from conftest import assert_close

M, N = 41, 67


def _data(dtype, seed=0, d=3):
    r = np.random.default_rng(seed)
    return (r.normal(size=(M, d)).astype(dtype), r.normal(size=(N, d)).astype(dtype),
            r.uniform(0.5, 2, size=(N, 2)).astype(dtype))


def _genred(formula, reduction, axis, dims=(3, 3, 2), **kw):
    """x is indexed by the kept index, y and b by the reduced one, whatever the axis."""
    keep, red = ("Vi", "Vj") if axis == 1 else ("Vj", "Vi")
    aliases = [f"x = {keep}({dims[0]})", f"y = {red}({dims[1]})", f"b = {red}({dims[2]})"]
    return Genred(formula, aliases, reduction_op=reduction, axis=axis, **kw)


def _dense(x, y):
    """(M, N, d) of x_i - y_j and the squared distances, float64."""
    d = x.astype(np.float64)[:, None, :] - y.astype(np.float64)[None]
    return d, (d ** 2).sum(-1)


AXES = pytest.mark.parametrize("axis", [0, 1])
DTYPES = pytest.mark.parametrize("dtype", ["float32", "float64"])


@AXES
@DTYPES
def test_sum(axis, dtype):
    x, y, b = _data(dtype)
    out = _genred("Exp(-SqDist(x,y)) * b", "Sum", axis)(x, y, b)
    _, d2 = _dense(x, y)
    assert_close(out, np.exp(-d2) @ b.astype(np.float64), dtype)


@AXES
@DTYPES
def test_logsumexp_never_overflows(axis, dtype):
    x, y, b = _data(dtype)
    out = _genred("IntCst(500) - SqDist(x,y)", "LogSumExp", axis)(x, y, b)
    _, d2 = _dense(x, y)
    F = 500 - d2
    m = F.max(1, keepdims=True)
    expected = m + np.log(np.exp(F - m).sum(1, keepdims=True))
    assert out.shape == (M, 1)
    assert np.isfinite(out).all()
    assert_close(out, expected, dtype, rtol=1e-6 if dtype == "float32" else 1e-12)


@AXES
@DTYPES
def test_weighted_logsumexp(axis, dtype):
    x, y, b = _data(dtype)
    out = _genred("-SqDist(x,y)", "LogSumExp", axis, formula2="b")(x, y, b)
    _, d2 = _dense(x, y)
    expected = np.log(np.exp(-d2) @ b.astype(np.float64))
    assert out.shape == (M, 2)
    assert_close(out, expected, dtype)


@AXES
@DTYPES
def test_sum_softmax_weight(axis, dtype):
    x, y, b = _data(dtype)
    out = _genred("-SqDist(x,y)", "SumSoftMaxWeight", axis, formula2="b")(x, y, b)
    _, d2 = _dense(x, y)
    w = np.exp(-d2)
    expected = (w @ b.astype(np.float64)) / w.sum(1, keepdims=True)
    assert_close(out, expected, dtype)


@AXES
@DTYPES
@pytest.mark.parametrize("reduction", ["Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax"])
def test_min_max(axis, dtype, reduction):
    x, y, b = _data(dtype)
    out = _genred("x - y", reduction, axis)(x, y, b)
    d, _ = _dense(x, y)
    vals = d.min(1) if "Min" in reduction else d.max(1)
    idx = d.argmin(1) if "Min" in reduction else d.argmax(1)
    if reduction.startswith("Arg"):
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, idx)
    elif "_" in reduction:
        assert out[1].dtype == np.int64
        assert_close(out[0], vals, dtype)
        np.testing.assert_array_equal(out[1], idx)
    else:
        assert_close(out, vals, dtype)


@AXES
@DTYPES
@pytest.mark.parametrize("reduction", ["KMin", "ArgKMin", "KMin_ArgKMin"])
@pytest.mark.parametrize("formula,dim", [("SqDist(x,y)", 1), ("x - y", 3)])
def test_kmin(axis, dtype, reduction, formula, dim):
    x, y, b = _data(dtype)
    K = 5
    out = _genred(formula, reduction, axis, opt_arg=K)(x, y, b)
    d, d2 = _dense(x, y)
    F = d2[..., None] if dim == 1 else d
    order = np.argsort(F, axis=1, kind="stable")[:, :K]
    vals = np.take_along_axis(F, order, axis=1)
    if dim == 1:
        order, vals = order[..., 0], vals[..., 0]
    outs = out if isinstance(out, tuple) else (out,)
    expected = {"KMin": [vals], "ArgKMin": [order], "KMin_ArgKMin": [vals, order]}[reduction]
    for o, e in zip(outs, expected):
        assert o.shape == ((M, K) if dim == 1 else (M, K, 3))
        if e.dtype.kind == "i":
            assert o.dtype == np.int64
            np.testing.assert_array_equal(o, e)
        else:
            assert_close(o, e, dtype)


@AXES
def test_k_ties_keep_the_lower_index_first(axis):
    r = np.random.default_rng(3)
    x = r.integers(0, 3, size=(M, 1)).astype(np.float64)
    y = r.integers(0, 3, size=(N, 1)).astype(np.float64)  # many equal distances
    b = np.ones((N, 2))
    vals, idx = _genred("SqDist(x,y)", "KMin_ArgKMin", axis, dims=(1, 1, 2), opt_arg=9)(x, y, b)
    _, d2 = _dense(x, y)
    order = np.argsort(d2, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(vals, np.take_along_axis(d2, order, axis=1))
    amin = _genred("SqDist(x,y)", "ArgMin", axis, dims=(1, 1, 2))(x, y, b)
    np.testing.assert_array_equal(amin[:, 0], d2.argmin(1))


@DTYPES
@pytest.mark.parametrize("K", [10, 17, 40])
def test_kmin_over_many_logs_with_nan_infinities_and_ties(dtype, K):
    """SIMD code logs the j vectors and inserts their candidates a log at a time, the lists of a
    tile of rows (here 4 rows of 2 components, then 3 rows) four at a time (K = 17: two, each of two
    vectors' lanes, open for two j vectors; K = 40: one): over many logs, with ties, NaN (after
    every number, in order of j), -inf (more than K of them: nothing beats the K-th) and +inf, the
    dense oracle's stable order."""
    r = np.random.default_rng(21)
    n = 3001
    x = r.integers(0, 4, size=(7, 2)).astype(dtype)
    y = r.integers(0, 4, size=(n, 2)).astype(dtype)
    y[r.choice(n, 40, replace=False), 0] = np.nan
    y[r.choice(n, 30, replace=False), 0] = -np.inf  # F = x - y: +inf
    y[r.choice(n, 25, replace=False), 1] = np.inf  # -inf
    y[:20, 0] = np.nan  # NaN while the lists are open
    x[5, 1] = np.nan  # a list of NaN only, in order of j
    vals, idx = Genred("x - y", ["x = Vi(2)", "y = Vj(2)"], "KMin_ArgKMin", axis=1, opt_arg=K)(x, y)
    with np.errstate(invalid="ignore"):
        F = x.astype(np.float64)[:, None, :] - y.astype(np.float64)[None]
    order = np.argsort(F, axis=1, kind="stable")[:, :K]
    assert idx.shape == (7, K, 2)
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(vals, np.take_along_axis(F, order, axis=1).astype(dtype))


@DTYPES
@pytest.mark.parametrize("target", ["x86-64-v3", "neoverse-v1"])
def test_kmin_of_sqdist_on_other_targets(dtype, target, monkeypatch):
    """The logged K-min of SqDist(x, y) compiled for an AVX2-only x86 (run here, against the
    dense oracle, where the host can) and cross-compiled for NEON: LLVM's lowering of the
    insertion's vector compress without AVX-512 once aborted the process."""
    from keomlir import explain
    asm = explain("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "KMin_ArgKMin", opt_arg=10, dtype=dtype,
                  emit="asm", target=target).outputs["asm"]
    assert "keomlir_kmin_flush" in asm
    if target != "x86-64-v3" or not host().has("avx2"):
        return
    monkeypatch.setenv("KEOMLIR_TARGET", target)
    r = np.random.default_rng(5)
    x, y = r.normal(size=(50, 3)).astype(dtype), r.normal(size=(3000, 3)).astype(dtype)
    for K in (10, 17):
        vals, idx = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "KMin_ArgKMin", axis=1, opt_arg=K)(x, y)
        d = ((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")[:, :K]
        np.testing.assert_array_equal(idx, order)
        assert_close(vals, np.take_along_axis(d, order, axis=1), dtype, rtol=1e-6 if dtype == "float32" else 1e-14)


@DTYPES
@pytest.mark.parametrize("formula,dim", [("SqDist(x,y)", 1), ("x - y", 2)])
def test_kmin_logs_wherever_the_j_data_lie(dtype, formula, dim):
    """The SIMD K-min starts each log where its stores keep clear of the j data's loads: a place
    in a page's worth of room past the log, set by the j data's addresses (`unaliased_start`).
    j data at every 64-byte offset in a page (read where they lie: no copy), one log a row (4 a
    tile) or two: the dense oracle's indices."""
    r = np.random.default_rng(8)
    n, K = 2003, 7
    x = r.normal(size=(9, dim)).astype(dtype)
    y = r.normal(size=(n, dim)).astype(dtype)
    d = x.astype(np.float64)[:, None, :] - y.astype(np.float64)[None]
    F = (d ** 2).sum(-1, keepdims=True) if dim == 1 else d
    order = np.argsort(F, axis=1, kind="stable")[:, :K]
    order = order[..., 0] if dim == 1 else order
    g = Genred(formula, [f"x = Vi({dim})", f"y = Vj({dim})"], "ArgKMin", axis=1, opt_arg=K)
    itemsize = np.dtype(dtype).itemsize
    room = np.zeros(n * dim + 2 * 4096 // itemsize, dtype)
    first = (-room.ctypes.data % 4096) // itemsize
    for offset in range(0, 4096, 64):
        at = first + offset // itemsize
        yt = room[at:at + n * dim].reshape(dim, n)  # (dim, n): the kernel's layout of j data
        yt[:] = y.T
        np.testing.assert_array_equal(g(x, yt.T), order, err_msg=f"j data {offset} bytes into a page")


def test_unaliased_target_keeps_clear_of_every_stream():
    """The page offset the logs start from (`_unaliased_target`): clear of every stream's window
    (from a spread below it, the runs' reach, to ALIAS_REACH above) wherever some offset is, for 1 to 5
    streams and 1 to 8 runs at random page offsets (compiled and run, against a search of the page)."""
    import ctypes
    from llvmlite import ir
    from keomlir.backends.llvm import emitter, toolchain
    r = np.random.default_rng(4)
    i64 = ir.IntType(64)
    for n_streams in range(1, 6):
        for runs in (1, 4, 8):
            module = ir.Module()
            fn = ir.Function(module, ir.FunctionType(i64, [i64] * n_streams), "target")
            b = ir.IRBuilder(fn.append_basic_block())
            b.ret(emitter._unaliased_target(b, list(fn.args), runs))
            engine = toolchain.host_engine(toolchain.host_object(module))
            target = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_int64] * n_streams)(engine.get_function_address("target"))
            spread = emitter.ALIAS_SPREAD * (runs - 1) + 64
            page = np.arange(4096)
            for _ in range(50):
                streams = r.integers(0, 2 ** 40, size=n_streams) * 4 + r.integers(0, 4096, size=n_streams)
                clear = lambda t: all((t - s + spread) % 4096 >= emitter.ALIAS_REACH + spread for s in streams)
                some = np.ones(4096, bool)
                for s in streams:
                    some &= (page - s % 4096 + spread) % 4096 >= emitter.ALIAS_REACH + spread
                t = target(*[int(s) for s in streams])
                assert clear(t) or not some.any(), (streams % 4096, runs, t % 4096)


@pytest.mark.parametrize("reduction,identity", [("Sum", 0.0), ("Min", np.inf), ("Max", -np.inf),
                                                ("LogSumExp", -np.inf)])
@AXES
def test_empty_range_gives_identity(reduction, identity, axis):
    x = np.ones((4, 3))
    y = np.ones((0, 3))
    b = np.ones((0, 2))
    formula = "SqDist(x,y)" if reduction == "LogSumExp" else "x - y"
    out = _genred(formula, reduction, axis)(x, y, b)
    assert out.shape[0] == 4
    assert (out == identity).all()


@DTYPES
def test_nan_stays_in_its_row(dtype):
    x, y, b = _data(dtype)
    x[3, 1] = np.nan
    for reduction, formula in [("Sum", "Exp(-SqDist(x,y))*b"), ("LogSumExp", "-SqDist(x,y)"),
                               ("Min", "SqDist(x,y)"), ("ArgKMin", "SqDist(x,y)")]:
        g = _genred(formula, reduction, 1, opt_arg=3 if "K" in reduction else None)
        out, ref = g(x, y, b), g(x, y, b, backend="reference")
        if reduction != "ArgKMin":
            assert np.isnan(out[3]).all()
        rows = np.arange(M) != 3
        assert np.isfinite(out[rows]).all()
        assert_close(out[rows], ref[rows], dtype)


@pytest.mark.parametrize("scheme", ["auto", "block_sum", "kahan_scheme"])
def test_float32_sum_accurate_for_large_n(scheme):
    n = 2_000_000
    r = np.random.default_rng(7)
    y = r.uniform(0, 1, size=(n, 1)).astype(np.float32)
    x = np.zeros((2, 1), np.float32)
    out = Genred("x + y", ["x = Vi(1)", "y = Vj(1)"], "Sum", axis=1, sum_scheme=scheme)(x, y)
    exact = y.astype(np.float64).sum()
    assert abs(out[0, 0] - exact) / exact < 1e-6
    naive = np.cumsum(y[:, 0], dtype=np.float32)[-1]  # what a plain float32 loop gives
    assert abs(out[0, 0] - exact) <= abs(naive - exact)


def test_float32_logsumexp_accurate_for_large_n():
    n = 1_000_000
    r = np.random.default_rng(8)
    y = r.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    x = np.zeros((2, 1), np.float32)
    out = Genred("x + y", ["x = Vi(1)", "y = Vj(1)"], "LogSumExp", axis=1)(x, y)
    exact = np.log(np.exp(y.astype(np.float64)).sum())
    assert abs(out[0, 0] - exact) / exact < 1e-6


def test_float64_accumulator_for_float32_data():
    r = np.random.default_rng(9)
    x, y = r.normal(size=(5, 3)).astype(np.float32), r.normal(size=(3000, 3)).astype(np.float32)
    g = Genred("Exp(-SqDist(x,y))", ["x = Vi(3)", "y = Vj(3)"], "Sum", axis=1, dtype_acc="float64")
    out = g(x, y)
    assert out.dtype == np.float32
    _, d2 = _dense(x, y)
    assert_close(out, np.exp(-d2).sum(1, keepdims=True), "float32", rtol=1e-6)


@pytest.mark.parametrize("reduction", ["Sum", "LogSumExp", "ArgKMin", "Min_ArgMin"])
def test_threads_agree_with_one_thread(reduction):
    r = np.random.default_rng(11)
    x, y = r.normal(size=(3001, 3)), r.normal(size=(500, 3))
    g = Genred("-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], reduction, axis=1,
               opt_arg=4 if "K" in reduction else None)
    try:
        cpu.set_num_threads(1)
        one = g(x, y)
        cpu.set_num_threads(2)
        two = g(x, y)
    finally:
        cpu.set_num_threads(None)
    for a, b in zip(one if isinstance(one, tuple) else (one,), two if isinstance(two, tuple) else (two,)):
        np.testing.assert_array_equal(a, b)


def test_parameters_and_no_i_variable():
    r = np.random.default_rng(12)
    y, p = r.normal(size=(N, 3)), r.normal(size=3)
    out = Genred("(p|y)", ["p = Pm(3)", "y = Vj(3)"], "Sum", axis=1)(p, y)
    assert out.shape == (1, 1)
    assert_close(out, [[(y @ p).sum()]], "float64")


@pytest.mark.parametrize("reduction", ["Sum", "LogSumExp", "SumSoftMaxWeight", "Min_ArgMin", "Max_ArgMax",
                                       "KMin_ArgKMin"])
@DTYPES
def test_few_rows_split_j_across_threads(reduction, dtype):
    """M small, N large: threads take parts of j and their states are merged."""
    r = np.random.default_rng(13)
    x = r.normal(size=(3, 2)).astype(dtype)
    y = np.round(r.normal(size=(150001, 2)), 1).astype(dtype)  # ties across the parts
    b = r.uniform(0.5, 2, size=(150001, 1)).astype(dtype)
    g = Genred("-SqDist(x,y)" if "Soft" in reduction or "Log" in reduction else "SqDist(x,y)",
               ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"], reduction, axis=1,
               opt_arg=5 if "K" in reduction else None, formula2="b" if "Soft" in reduction else None)
    try:
        cpu.set_num_threads(1)
        one = g(x, y, b)
        cpu.set_num_threads(2)
        two = g(x, y, b)
    finally:
        cpu.set_num_threads(None)
    ref = g(x, y, b, backend="reference")
    for a, c, e in zip(*(v if isinstance(v, tuple) else (v,) for v in (one, two, ref))):
        if a.dtype == np.int64:
            np.testing.assert_array_equal(a, e)
            np.testing.assert_array_equal(c, e)
        else:
            assert_close(a, e, dtype, rtol=1e-5 if dtype == "float32" else 1e-12)
            assert_close(c, e, dtype, rtol=1e-5 if dtype == "float32" else 1e-12)


@DTYPES
@pytest.mark.parametrize("target", [None, "x86-64-v3"])
def test_weighted_logsumexp_of_terms_whose_exp_is_subnormal(dtype, target, monkeypatch):
    """Weighted, the terms whose e^x is subnormal (or rounds to 0) can decide the sum: here the
    maximum's weight is tiny and the far terms' weights large.  Their e^x w is made whole by the FMA
    without AVX-512 (`exp_nonpositive_times`: two normal factors, the first 0 where x is clamped), and
    through AVX-512's vscalef: the dense float64 sum, to float32 / float64 precision."""
    if target is not None:
        if not host().has("avx2"):
            pytest.skip("the host cannot run x86-64-v3 code")
        monkeypatch.setenv("KEOMLIR_TARGET", target)
    info = np.finfo(dtype)
    tiny_exp = np.log(float(info.tiny))  # e^x subnormal below this
    r = np.random.default_rng(13)
    n = 1500
    f = np.full((n, 1), -np.inf, dtype)
    f[::7, 0] = (tiny_exp - r.uniform(0.5, 15, size=f[::7].shape[0])).astype(dtype)  # subnormal e^x, or 0
    f[3, 0] = 0.0  # the maximum
    w = np.full((n, 1), 1e30 if dtype == "float32" else 1e300, dtype)  # (a batch's sum stays finite)
    w[3, 0] = float(info.tiny) * 2 ** 20
    x = np.array([[0.0], [1e-3], [-2.0]], dtype)
    g = Genred("f + x * y", ["x = Vi(1)", "y = Vj(1)", "f = Vj(1)", "w = Vj(1)"], "LogSumExp", axis=1,
               formula2="w")
    y = np.linspace(-1, 1, n, dtype=dtype)[:, None]
    F = f.astype(np.float64)[:, 0] + x.astype(np.float64) * y[:, 0].astype(np.float64)
    m = F.max(1, keepdims=True)
    dense = m + np.log(np.exp(F - m) @ w.astype(np.float64))
    assert_close(g(x, y, f, w), dense, dtype, rtol=2e-6 if dtype == "float32" else 1e-13)


@DTYPES
@pytest.mark.parametrize("reduction,weighted,target,formula", [
    ("LogSumExp", False, None, "x * y + b"), ("LogSumExp", True, None, "x * y + b"),
    ("SumSoftMaxWeight", True, None, "x * y + b"), ("LogSumExp", False, "x86-64-v3", "x * y + b"),
    # the same F as a negation (stored as -F, its minimum kept): unweighted, weighted, AVX2
    ("LogSumExp", False, None, "-(-x * y - b)"), ("SumSoftMaxWeight", True, None, "-(-x * y - b)"),
    ("LogSumExp", False, "x86-64-v3", "-(-x * y - b)"),
    # weighted without AVX-512: e^x w made by the FMA from two normal factors (`exp_nonpositive_times`)
    ("LogSumExp", True, "x86-64-v3", "x * y + b"), ("SumSoftMaxWeight", True, "x86-64-v3", "-(-x * y - b)")])
def test_shifted_exp_sums_on_every_path(reduction, weighted, target, formula, dtype, monkeypatch):
    """F = x y + b over 1100 j (SIMD batches flushed full and part-full, blocks, the scalar tail):
    the maximum rising in every batch (y increasing), falling (y decreasing), terms underflowing
    to subnormals and zero (x = 400; flushed to 0 without AVX-512: x86-64-v3), nearly equal terms,
    -inf terms, and rows whose only finite or infinite terms decide the result; against the dense
    float64 sum."""
    if target is not None:
        if not host().has("avx2"):
            pytest.skip("the host cannot run x86-64-v3 code")
        monkeypatch.setenv("KEOMLIR_TARGET", target)
    r = np.random.default_rng(11)
    n = 1100
    x = np.array([[1.0], [-1.0], [400.0], [1e-3], [0.0], [-30.0]], dtype)
    y = np.sort(r.uniform(-1, 1, n))[:, None].astype(dtype)
    b = r.normal(size=(n, 1)).astype(dtype)
    b[r.choice(n, 40, replace=False)] = -np.inf
    w = r.uniform(0.5, 2, size=(n, 2)).astype(dtype)
    kw = dict(formula2="w") if weighted else {}
    g = Genred(formula, ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)", "w = Vj(2)"], reduction, axis=1, **kw)

    def dense(b):
        F = x.astype(np.float64) * y[:, 0].astype(np.float64) + b[:, 0].astype(np.float64)
        W = w.astype(np.float64) if weighted else np.ones((n, 1))
        m = F.max(1, keepdims=True)
        with np.errstate(invalid="ignore"):
            shift = np.where(np.isfinite(m), m, 0.0)
            s = np.exp(F - shift) @ W
            return shift + np.log(s) if reduction == "LogSumExp" else s / np.exp(F - shift).sum(1, keepdims=True)

    assert_close(g(x, y, b, w), dense(b), dtype, rtol=2e-6 if dtype == "float32" else 1e-13)
    b_inf = np.full_like(b, -np.inf)
    b_inf[n - 3] = 0.0  # one finite term: it decides the sum
    assert_close(g(x, y, b_inf, w), dense(b_inf), dtype, rtol=2e-6 if dtype == "float32" else 1e-13)
    b_inf[n - 3] = -np.inf  # no finite term: -inf (LogSumExp), 0/0 (SumSoftMaxWeight)
    out = g(x, y, b_inf, w)
    assert (out == -np.inf).all() if reduction == "LogSumExp" else np.isnan(out).all()
    if reduction == "LogSumExp":  # an infinite term: +inf, as the dense sum
        b_inf[17] = np.inf
        assert (g(x, y, b_inf, w) == np.inf).all()
