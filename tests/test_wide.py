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


@WIDTHS
@DTYPES
def test_concat_extract_elem(w, dtype):
    """Index operations on wide operands, in loop form: Concats of i, j and computed
    halves, wide and narrow Extracts, Elem of a variable and of a computed vector."""
    rng = np.random.default_rng(w + 5)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    f = (f"Elem(x, 3) * Concat(Extract(y, 2, {w - 3}), x - y)"
         f" + Elem(x - y, {w - 1}) * Concat(y, Extract(x, 1, {w - 3})) + Sum(Extract(x - y, 5, 4))")
    g = _genred(f, [f"x = i({w})", f"y = j({w})"], "Sum", 1)
    X, Y = (np.broadcast_to(v.astype(np.float64), (M, N, w)) for v in (x[:, None], y[None]))
    D = X - Y
    F = (X[..., 3:4] * np.concatenate([Y[..., 2:w - 1], D], -1)
         + D[..., w - 1:] * np.concatenate([Y, X[..., 1:w - 2]], -1) + D[..., 5:9].sum(-1, keepdims=True))
    assert_close(g(x, y), F.sum(1), dtype)


@WIDTHS
@DTYPES
def test_contractions(w, dtype):
    """MatVecMult and TensorDot to a narrow result (wide sums), VecMatMult, TensorProd
    and a permuted TensorDot to a wide one."""
    rng = np.random.default_rng(w + 10)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    a = rng.normal(size=3 * w).astype(dtype)
    b = rng.normal(size=(N, 2 * w)).astype(dtype)
    c = rng.normal(size=(M, 3)).astype(dtype)
    al = [f"x = i({w})", f"y = j({w})", f"a = p({3 * w})", f"b = j({2 * w})", "c = i(3)"]
    X, Y, A, B, C = (v.astype(np.float64) for v in (x, y, a, b, c))
    D = X[:, None] - Y[None]
    Cat = np.concatenate([np.broadcast_to(B[None], (M, N, 2 * w)), np.broadcast_to(X[:, None], (M, N, w))], -1)
    Cat = Cat.reshape(M, N, 3, w)

    narrow = f"MatVecMult(a, x - y) + Concat(TensorDot(b, x, Ind(2,{w}), Ind({w}), Ind(1), Ind(0)), Elem(x, 0))"
    expected = np.einsum("kl,mnl->mnk", A.reshape(3, w), D) + np.concatenate(
        [np.einsum("nal,ml->mna", B.reshape(N, 2, w), X), np.broadcast_to(X[:, None, :1], (M, N, 1))], -1)
    assert_close(_genred(narrow, al, "Sum", 1)(x, y, a, b, c), expected.sum(1), dtype)

    vm = _genred("VecMatMult(c, Concat(b, x))", al, "Sum", 1)(x, y, a, b, c)
    assert_close(vm, np.einsum("mk,mnkl->ml", C, Cat), dtype)

    wide = (f"TensorProd(c, x - y)"
            f" + TensorDot(Concat(b, x), TensorProd(c, c), Ind(3,{w}), Ind(3,3), Ind(0), Ind(0), Ind(1,0))")
    expected = np.einsum("mk,mnl->mnkl", C, D) + np.einsum("mnak,ma,ml->mnlk", Cat, C, C)
    assert_close(_genred(wide, al, "Sum", 1)(x, y, a, b, c), expected.reshape(M, N, 3 * w).sum(1), dtype)


@WIDTHS
@AXES
@DTYPES
def test_gradient_of_gaussian_with_wide_x_and_b(w, axis, dtype):
    """Grad(Exp(-SqDist(x,y)) * b, x, e) with x, b and e all wide (a wide Sum state)."""
    rng = np.random.default_rng(w + 11)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    b, e = rng.normal(size=(N, w)).astype(dtype), rng.normal(size=(M, w)).astype(dtype)
    g = _genred("Grad(Exp(-SqDist(x,y)) * b, x, e)", [f"x = i({w})", f"y = j({w})", f"b = j({w})", f"e = i({w})"],
                "Sum", axis)
    d, d2 = _sqdist(x, y)
    coef = -2 * np.exp(-d2) * (e.astype(np.float64) @ b.astype(np.float64).T)  # (M, N)
    assert_close(g(x, y, b, e), (coef[:, :, None] * d).sum(1), dtype)


@WIDTHS
@DTYPES
def test_gradients_through_index_and_vector_ops(w, dtype):
    """The adjoints gradients produce, in loop form: ExtractT (of Extract and Concat),
    ElemT, SumT, OneHot(ArgMax), Normalize and VecMatMult (of MatVecMult)."""
    rng = np.random.default_rng(w + 12)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    a = rng.normal(size=3 * w).astype(dtype)
    e = rng.normal(size=(M, 3)).astype(dtype)
    f = (f"Elem(x, 2) * Sum(Extract(y, 1, {w - 1}) * Extract(x, 0, {w - 1})) + (Concat(x, y) | Concat(y, x))"
         " + Exp(-Sum(x * y)) + Max(x * y) + Norm2(x - y) + (MatVecMult(a, x) | e)")
    g = _genred(f"Grad({f}, x, Elem(e, 0))", [f"x = i({w})", f"y = j({w})", f"a = p({3 * w})", "e = i(3)"], "Sum", 1)
    X, Y, A, E = (v.astype(np.float64) for v in (x, y, a, e))
    Xb, Yb = np.broadcast_to(X[:, None], (M, N, w)), np.broadcast_to(Y[None], (M, N, w))
    grad = np.zeros((M, N, w))
    grad[..., 2] += (Yb[..., 1:] * Xb[..., :-1]).sum(-1)
    grad[..., :-1] += Xb[..., 2:3] * Yb[..., 1:]
    grad += 2 * Yb - np.exp(-(Xb * Yb).sum(-1))[..., None] * Yb
    grad += (np.arange(w) == (Xb * Yb).argmax(-1)[..., None]) * Yb
    D = Xb - Yb
    grad += D / np.sqrt((D ** 2).sum(-1, keepdims=True))
    grad += (E @ A.reshape(3, w))[:, None]
    assert_close(g(x, y, a, e), (E[:, None, :1] * grad).sum(1), dtype)


@WIDTHS
@AXES
@DTYPES
def test_min_max_and_indices_of_a_wide_formula(w, axis, dtype):
    """Component-wise Min / ArgMin / Max_ArgMax of a wide F: states in array slots."""
    rng = np.random.default_rng(w + 13)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    al = [f"x = i({w})", f"y = j({w})"]
    # F in the dtype, exactly as the kernel rounds it: the indices must then match exactly
    F = (np.abs(x[:, None] - y[None]) * x[:, None]).astype(np.float64)
    f = "Abs(x - y) * x"
    assert_close(_genred(f, al, "Min", axis)(x, y), F.min(1), dtype)
    np.testing.assert_array_equal(_genred(f, al, "ArgMin", axis)(x, y), F.argmin(1))
    vals, idx = _genred(f, al, "Max_ArgMax", axis)(x, y)
    assert_close(vals, F.max(1), dtype)
    np.testing.assert_array_equal(idx, F.argmax(1))


@WIDTHS
@AXES
@DTYPES
def test_k_min_of_a_wide_formula(w, axis, dtype):
    """KMin / ArgKMin / KMin_ArgKMin of a wide F: the K ranks in array slots, (K, w) outputs."""
    rng = np.random.default_rng(w + 14)
    x, y = _points(rng, M, w, dtype), _points(rng, N, w, dtype)
    al = [f"x = i({w})", f"y = j({w})"]
    F = np.abs(x[:, None] - y[None]).astype(np.float64)  # exact in the dtype: indices must match
    order = np.argsort(F, axis=1, kind="stable")[:, :3]
    vals, idx = _genred("Abs(x - y)", al, "KMin_ArgKMin", axis, opt_arg=3)(x, y)
    assert_close(vals, np.take_along_axis(F, order, 1), dtype)
    np.testing.assert_array_equal(idx, order)
    assert_close(_genred("Abs(x - y)", al, "KMin", axis, opt_arg=2)(x, y), np.sort(F, 1)[:, :2], dtype)
    idx4 = _genred("Abs(x - y)", al, "ArgKMin", axis, opt_arg=4)(x, y)
    np.testing.assert_array_equal(idx4, np.argsort(F, axis=1, kind="stable")[:, :4])


@WIDTHS
@AXES
@DTYPES
def test_logsumexp_and_softmax_with_wide_weights(w, axis, dtype):
    """LogSumExp and SumSoftMaxWeight with a wide formula2: the weighted sums in array slots."""
    rng = np.random.default_rng(w + 15)
    x, y, b = _points(rng, M, 3, dtype), _points(rng, N, 3, dtype), rng.normal(size=(N, w)).astype(dtype)
    al = ["x = i(3)", "y = j(3)", f"b = j({w})"]
    _, d2 = _sqdist(x, y)
    B = b.astype(np.float64)
    lse = _genred("-SqDist(x,y)", al, "LogSumExp", axis, formula2="Exp(b)")(x, y, b)
    assert_close(lse, np.log(np.exp(-d2) @ np.exp(B)), dtype)
    soft = _genred("-SqDist(x,y)", al, "SumSoftMaxWeight", axis, formula2="b")(x, y, b)
    K = np.exp(-d2)
    assert_close(soft, (K @ B) / K.sum(1, keepdims=True), dtype)


@WIDTHS
@pytest.mark.parametrize("reduction", ["Sum", "LogSumExp", "SumSoftMaxWeight"])
def test_torch_gradients_with_wide_weights(w, reduction):
    """The torch front end's backward of K @ b, log(K @ exp(b)) and softmax(-d2) @ b with
    b of w columns (the reductions it builds keep wide states) against dense NumPy."""
    torch = pytest.importorskip("torch")
    from keomlir.torch import Genred as TorchGenred
    rng = np.random.default_rng(w + 17)
    x, y, b = _points(rng, M, 3, "float64"), _points(rng, N, 3, "float64"), rng.normal(size=(N, w))
    c = np.cos(np.arange(w))  # the output's cotangent, the same for every row
    formula, formula2 = ("Exp(-SqDist(x,y)) * b", None) if reduction == "Sum" else (
        "-SqDist(x,y)", "Exp(b)" if reduction == "LogSumExp" else "b")
    g = TorchGenred(formula, ["x = Vi(3)", "y = Vj(3)", f"b = Vj({w})"], reduction, axis=1, formula2=formula2)
    xt, yt, bt = (torch.tensor(v, requires_grad=True) for v in (x, y, b))
    out = g(xt, yt, bt)
    grads = torch.autograd.grad((out * torch.tensor(c)).sum(), [xt, yt, bt])
    d, d2 = _sqdist(x, y)
    K = np.exp(-d2)
    if reduction == "Sum":
        value, dK, db = K @ b, np.broadcast_to(b @ c, (M, N)), K.T @ np.broadcast_to(c, (M, w))
    elif reduction == "LogSumExp":
        S = K @ np.exp(b)
        value, dK, db = np.log(S), (c / S) @ np.exp(b).T, np.exp(b) * (K.T @ (c / S))
    else:
        Z = K.sum(1, keepdims=True)
        value = K @ b / Z
        dK, db = (b @ c - value @ c[:, None]) / Z, (K / Z).T @ np.broadcast_to(c, (M, w))
    dx = (-2 * dK * K)[..., None] * d  # through K_ij = exp(-|x_i - y_j|^2)
    assert_close(out.detach().numpy(), value, "float64")
    for got, expected in zip(grads, [dx.sum(1), -dx.sum(0), db]):
        assert_close(got.numpy(), expected, "float64")


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


@DTYPES
def test_wide_states_split_j_ranges_and_cache_blocks(dtype):
    """The new wide states (Min_ArgMin, KMin_ArgKMin, SumSoftMaxWeight) saved to cells and
    merged: j split across 2 threads (M = 3), block-sparse ranges, and j in cache blocks
    (a wide contraction in F: K-min lists resumed, extremes merged, in order of j)."""
    from test_ranges import mask_of, random_ranges
    rng = np.random.default_rng(16)
    w = 300
    x, y, b = _points(rng, 3, w, dtype), _points(rng, 1000, w, dtype), rng.normal(size=(1000, w)).astype(dtype)
    al = [f"x = i({w})", f"y = j({w})", f"b = j({w})"]

    def check(x, y, b, mask=None, **kw):
        F = (np.exp(-((x[:, None] - y[None]) ** 2).sum(-1))[..., None] * b[None]).astype(np.float64)
        if mask is not None:
            F = np.where(mask[..., None], F, np.inf)
        vals, idx = _genred("Exp(-SqDist(x,y)) * b", al, "Min_ArgMin", 1)(x, y, b, **kw)
        assert_close(vals, F.min(1), dtype)
        np.testing.assert_array_equal(idx, np.where(np.isinf(F.min(1)), -1, F.argmin(1)))  # no j: index -1
        vals, idx = _genred("Exp(-SqDist(x,y)) * b", al, "KMin_ArgKMin", 1, opt_arg=3)(x, y, b, **kw)
        order = np.argsort(F, axis=1, kind="stable")[:, :3]
        assert_close(vals, np.take_along_axis(F, order, 1), dtype, rtol=1e-4)
        if dtype == "float64":
            np.testing.assert_array_equal(idx, np.where(np.isinf(np.take_along_axis(F, order, 1)), -1, order))
        soft = _genred("-SqDist(x,y)", al, "SumSoftMaxWeight", 1, formula2="b")(x, y, b, **kw)
        _, d2 = _sqdist(x, y)
        K = np.exp(-d2) if mask is None else np.where(mask, np.exp(-d2), 0.0)
        with np.errstate(invalid="ignore"):  # a row without j: 0 / 0
            assert_close(soft, (K @ b.astype(np.float64)) / K.sum(1, keepdims=True), dtype)

    try:
        cpu.set_num_threads(2)
        check(x, y, b)  # few rows: j split
    finally:
        cpu.set_num_threads(None)
    xs = _points(rng, 41, w, dtype)
    check(xs, y, b)  # j in cache blocks
    ranges = random_ranges(rng, 41, 1000)
    check(xs, y, b, mask_of(ranges, 41, 1000), ranges=ranges)


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
        return len(str(renderer.render(g.reduction.program, "float32")))

    assert size(4096) < 1.1 * size(64)


@pytest.mark.parametrize("formula,reduction,k", [
    (lambda w: f"Elem(x, 3) * Concat(Extract(y, 2, {w - 3}), x - y) + ElemT(Elem(y, 1), {2 * w - 3}, 3)", "Sum", None),
    (lambda w: f"MatVecMult(a, x - y) + TensorDot(b, x, Ind(3,{w}), Ind({w}), Ind(1), Ind(0))", "Sum", None),
    (lambda w: f"TensorProd(c, x) + TensorProd(c, TensorDot(b, c, Ind(3,{w}), Ind(3), Ind(0), Ind(0)))", "Sum", None),
    (lambda w: "Grad(Norm2(x - y) + Max(x * y) + Exp(-Sum(x * y)), x, e)", "Sum", None),
    (lambda w: "x - y", "Max_ArgMax", None),
    (lambda w: "x - y", "KMin_ArgKMin", 3),
    (lambda w: "-SqDist(x, y)", "SumSoftMaxWeight", None),
])
def test_loop_forms_independent_of_width(formula, reduction, k):
    """Each loop form renders to about the same module at width 32 and 4096 (an op that
    fell back to unrolling would grow 128 times)."""
    def size(w):
        al = [f"x = Vi({w})", f"y = Vj({w})", f"a = Pm({3 * w})", f"b = Vj({3 * w})", "c = Vi(3)", "e = Vi(1)"]
        f2 = "b" if reduction == "SumSoftMaxWeight" else None
        g = Genred(formula(w), al, reduction, axis=1, opt_arg=k, formula2=f2)
        return len(str(renderer.render(g.reduction.program, "float32")))

    assert size(4096) < 1.1 * size(32)


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
