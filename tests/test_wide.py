"""Wide variables (dimension above the renderer's WIDE_THRESHOLD, lowered as loops over
components) against dense float64 NumPy, on both axes, float32 and float64."""

import numpy as np
import pytest

from keomlir.backends import cpu
from keomlir.backends.llvm import renderer
from keomlir.numpy import Genred

from conftest import assert_close

M, N = 41, 67
WIDTHS = pytest.mark.parametrize("w", [17, 64, 300])
AXES = pytest.mark.parametrize("axis", [0, 1])
DTYPES = pytest.mark.parametrize("dtype", ["float32", "float64"])


def _genred(formula, aliases, reduction, axis, **kw):
    """aliases as 'name = i(d)' (kept index) / 'name = j(d)' (reduced index) / 'name = p(d)'."""
    kinds = {"i": "Vi" if axis == 1 else "Vj", "j": "Vj" if axis == 1 else "Vi", "p": "Pm"}
    text = [a.replace("= i(", f"= {kinds['i']}(").replace("= j(", f"= {kinds['j']}(")
             .replace("= p(", "= Pm(") for a in aliases]
    return Genred(formula, text, reduction_op=reduction, axis=axis, **kw)


def _points(rng, n, d, dtype):
    """Normal points scaled so squared distances are O(1) whatever d."""
    return (rng.normal(size=(n, d)) / np.sqrt(d)).astype(dtype)


def _sqdist(x, y):
    d = x.astype(np.float64)[:, None, :] - y.astype(np.float64)[None]
    return d, (d ** 2).sum(-1)


@WIDTHS
@AXES
@DTYPES
def test_gaussian_times_wide_rhs(w, axis, dtype):
    """K @ B with B of w columns: the Sum state is wide."""
    rng = np.random.default_rng(w)
    x, y, b = _points(rng, M, 3, dtype), _points(rng, N, 3, dtype), rng.normal(size=(N, w)).astype(dtype)
    g = _genred("Exp(-SqDist(x,y)) * b", ["x = i(3)", "y = j(3)", f"b = j({w})"], "Sum", axis)
    _, d2 = _sqdist(x, y)
    assert_close(g(x, y, b), np.exp(-d2) @ b.astype(np.float64), dtype)


@WIDTHS
@AXES
@DTYPES
def test_wide_sqdist_and_scalprod(w, axis, dtype):
    rng = np.random.default_rng(w + 1)
    x, y, b = _points(rng, M, w, dtype), _points(rng, N, w, dtype), rng.normal(size=(N, 2)).astype(dtype)
    g = _genred("Exp(-SqDist(x,y)) * b + Exp((x|y)) * b", ["x = i(%d)" % w, "y = j(%d)" % w, "b = j(2)"],
                "Sum", axis)
    _, d2 = _sqdist(x, y)
    dot = x.astype(np.float64) @ y.astype(np.float64).T
    b64 = b.astype(np.float64)
    assert_close(g(x, y, b), np.exp(-d2) @ b64 + np.exp(dot) @ b64, dtype)


@WIDTHS
@DTYPES
def test_wide_elementwise_chains_and_vector_reductions(w, dtype):
    """Element-wise ops on wide operands, scalars broadcast, a wide parameter, Norm2, Max, Sum."""
    rng = np.random.default_rng(w + 2)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    p = rng.uniform(0.5, 1.5, size=w).astype(dtype)
    f = "Exp(-Norm2(x - y)) * Max(x * y) + Sum(Square(p * x - y)) + SqNorm2(Abs(x) * y)"
    g = _genred(f, [f"x = i({w})", f"y = j({w})", f"p = p({w})"], "Sum", 1)
    X, Y, P = (v.astype(np.float64) for v in (x, y, p))
    d, _ = _sqdist(x, y)
    prod = X[:, None, :] * Y[None]
    F = (np.exp(-np.sqrt((d ** 2).sum(-1))) * prod.max(-1)
         + (((P * X)[:, None, :] - Y[None]) ** 2).sum(-1)
         + ((np.abs(X)[:, None, :] * Y[None]) ** 2).sum(-1))
    assert_close(g(x, y, p), F.sum(1, keepdims=True), dtype)


@WIDTHS
@AXES
@DTYPES
def test_logsumexp_and_argkmin_over_wide_sqdist(w, axis, dtype):
    """Scalar F of wide vectors: the state is not wide."""
    rng = np.random.default_rng(w + 3)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    al = [f"x = i({w})", f"y = j({w})"]
    _, d2 = _sqdist(x, y)
    lse = _genred("-SqDist(x,y)", al, "LogSumExp", axis)(x, y)
    m = (-d2).max(1, keepdims=True)
    assert_close(lse, m + np.log(np.exp(-d2 - m).sum(1, keepdims=True)), dtype)
    idx = _genred("SqDist(x,y)", al, "ArgKMin", axis, opt_arg=5)(x, y)
    # the neighbours found are the 5 nearest (their distances, up to the dtype's rounding)
    assert_close(np.take_along_axis(d2, idx, 1), np.sort(d2, 1)[:, :5], dtype)
    if dtype == "float64":
        np.testing.assert_array_equal(idx, np.argsort(d2, 1, kind="stable")[:, :5])


@WIDTHS
@AXES
@DTYPES
def test_gradient_of_gaussian_in_wide_x(w, axis, dtype):
    rng = np.random.default_rng(w + 4)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    b, e = rng.normal(size=(N, 1)).astype(dtype), rng.normal(size=(M, 1)).astype(dtype)
    g = _genred("Grad(Exp(-SqDist(x,y)) * b, x, e)", [f"x = i({w})", f"y = j({w})", "b = j(1)", "e = i(1)"],
                "Sum", axis)
    d, d2 = _sqdist(x, y)
    coef = -2 * np.exp(-d2) * b.astype(np.float64)[:, 0][None] * e.astype(np.float64)  # (M, N)
    assert_close(g(x, y, b, e), (coef[:, :, None] * d).sum(1), dtype)


@DTYPES
def test_wide_operand_of_an_unrolled_op(dtype):
    """Ops without a loop form (Elem, Extract, Concat) take wide operands unrolled."""
    rng = np.random.default_rng(5)
    w = 20
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    g = _genred("Elem(x, 3) * Concat(Extract(y, 2, 17), x)", [f"x = i({w})", f"y = j({w})"], "Sum", 1)
    X, Y = x.astype(np.float64), y.astype(np.float64)
    cat = np.concatenate([np.broadcast_to(Y[None, :, 2:19], (M, N, 17)), np.broadcast_to(X[:, None], (M, N, w))], -1)
    F = X[:, None, 3:4] * cat
    assert_close(g(x, y), F.sum(1), dtype)


@pytest.mark.parametrize("w", [17, 64])
@DTYPES
def test_block_sparse_ranges_wide(w, dtype):
    from test_ranges import mask_of, random_ranges
    rng = np.random.default_rng(w + 6)
    m, n = 90, 150
    x, y = _points(rng, m, w, dtype), _points(rng, n, w, dtype)
    b = rng.normal(size=(n, w)).astype(dtype)
    ranges = random_ranges(rng, m, n)
    g = _genred("Exp(-SqDist(x,y)) * b", [f"x = i({w})", f"y = j({w})", f"b = j({w})"], "Sum", 1)
    _, d2 = _sqdist(x, y)
    K = np.where(mask_of(ranges, m, n), np.exp(-d2), 0.0)
    assert_close(g(x, y, b, ranges=ranges), K @ b.astype(np.float64), dtype)


@DTYPES
def test_few_rows_split_j_wide(dtype):
    """M = 3, N large on 2 threads: partial wide states written to cells and combined."""
    rng = np.random.default_rng(7)
    w, n = 64, 20000
    x, y = _points(rng, 3, w, dtype), _points(rng, n, w, dtype)
    b = rng.normal(size=(n, w)).astype(dtype)
    al = [f"x = i({w})", f"y = j({w})", f"b = j({w})"]
    _, d2 = _sqdist(x, y)
    try:
        cpu.set_num_threads(2)
        out = _genred("Exp(-SqDist(x,y)) * b", al, "Sum", 1)(x, y, b)
        lse = _genred("-SqDist(x,y)", al, "LogSumExp", 1)(x, y, b)
    finally:
        cpu.set_num_threads(None)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert_close(out, np.exp(-d2) @ b.astype(np.float64), dtype, rtol=rtol)
    m = (-d2).max(1, keepdims=True)
    assert_close(lse, m + np.log(np.exp(-d2 - m).sum(1, keepdims=True)), dtype, rtol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_width_1024(dtype):
    rng = np.random.default_rng(8)
    w = 1024
    x, y, b = _points(rng, M, w, dtype), _points(rng, N, w, dtype), rng.normal(size=(N, w)).astype(dtype)
    g = _genred("Exp(-SqDist(x,y)) * b", [f"x = i({w})", f"y = j({w})", f"b = j({w})"], "Sum", 1)
    _, d2 = _sqdist(x, y)
    assert_close(g(x, y, b), np.exp(-d2) @ b.astype(np.float64), dtype)


def test_code_size_independent_of_width():
    """The rendered module of a 4096-wide formula is about as large as a 64-wide one's (b's
    columns run in register tiles of 4 vectors: 64 columns fill one, 32 a narrower one)."""
    def size(w):
        g = Genred("Exp(-SqDist(x,y)) * b", [f"x = Vi({w})", f"y = Vj({w})", f"b = Vj({w})"], "Sum", axis=1)
        return len(str(renderer.render(cpu.schedule(g.reduction.program), "float32")))

    assert size(4096) < 1.1 * size(64)


@pytest.mark.parametrize("scheme", ["direct_sum", "kahan_scheme", "block_sum"])
@pytest.mark.parametrize("acc", ["auto", "float64"])
def test_wide_sum_schemes_and_accumulators(scheme, acc):
    """Every sum scheme's slot arrays, with float32 data and float32 or float64 accumulators."""
    rng = np.random.default_rng(9)
    w = 40
    x, y, b = _points(rng, M, 3, "float32"), _points(rng, 2000, 3, "float32"), rng.normal(size=(2000, w)).astype("float32")
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", f"b = Vj({w})"], "Sum", axis=1,
               sum_scheme=scheme, dtype_acc=acc)
    _, d2 = _sqdist(x, y)
    assert_close(g(x, y, b), np.exp(-d2) @ b.astype(np.float64), "float32")
