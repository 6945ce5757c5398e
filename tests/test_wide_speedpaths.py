"""The speed paths of wide contractions (register-blocked micro-kernel over a tile of
rows, j in cache blocks, states of a chunk of rows merged or resumed between blocks)
against dense float64 NumPy: tails of rows, lanes, chunks and blocks; both axes and
dtypes; block-sparse ranges and j split across threads."""

import numpy as np
import pytest

from keomlir.backends import cpu
from keomlir.schedule.choose import CHUNK_ROWS, COLUMN_ROWS, CONTRACT_ROWS
from keomlir.numpy import Genred

from conftest import assert_close
from test_ranges import mask_of, random_ranges

AXES = pytest.mark.parametrize("axis", [0, 1])
DTYPES = pytest.mark.parametrize("dtype", ["float32", "float64"])
# 2 chunks of rows and a tail tile; several j blocks (D = 200: 640 or 320 j per block) and a lane tail
M, N, D = CHUNK_ROWS + 3 * CONTRACT_ROWS + 5, 1413, 200


def _genred(formula, aliases, reduction, axis, **kw):
    """aliases 'name = i(d)' (kept index) / 'name = j(d)' (reduced index), on either axis."""
    kinds = {"i": "Vi" if axis == 1 else "Vj", "j": "Vj" if axis == 1 else "Vi"}
    text = [a.replace("= i(", f"= {kinds['i']}(").replace("= j(", f"= {kinds['j']}(") for a in aliases]
    return Genred(formula, text, reduction_op=reduction, axis=axis, **kw)


def _data(seed, dtype, m=M, n=N, d=D, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(m, d)) * scale / np.sqrt(d)).astype(dtype)
    y = (rng.normal(size=(n, d)) * scale / np.sqrt(d)).astype(dtype)
    b = rng.normal(size=(n, 4)).astype(dtype)
    diff = x.astype(np.float64)[:, None, :] - y.astype(np.float64)[None]
    return x, y, b, (diff ** 2).sum(-1), x.astype(np.float64) @ y.astype(np.float64).T


def _schedule(g):
    return cpu.kernel_schedule(g.reduction.program, "float32")


def test_the_schedule_names_the_micro_kernel():
    g = Genred("Exp(-SqDist(x,y)) * b", [f"x=Vi({D})", f"y=Vj({D})", "b=Vj(4)"], "Sum", axis=1)
    s = _schedule(g)
    assert (s.strategy, s.contract, s.rows) == ("contraction", ("%2",), CONTRACT_ROWS)  # %2 = SqDist(x,y)
    assert s.cache_block and "contract = %2" in s.text() and "cache_block = " in s.text()
    knn = Genred("SqDist(x,y) * 2", [f"x=Vi({D})", f"y=Vj({D})"], "ArgKMin", axis=1, opt_arg=5)
    assert _schedule(knn).rows == 4  # unscreened K-min: 4 rows (compile time)
    small = Genred("Exp(-SqDist(x,y)) * b", ["x=Vi(16)", "y=Vj(16)", "b=Vj(4)"], "Sum", axis=1)
    assert (_schedule(small).strategy, _schedule(small).contract, _schedule(small).cache_block) == ("lanes", (), 0)


@AXES
@DTYPES
def test_gaussian_and_scalar_product_sums(axis, dtype):
    """Two contractions in one formula, one with its arguments as (j, i)."""
    x, y, b, d2, dot = _data(1, dtype)
    g = _genred("Exp(-SqDist(y,x)) * b + Exp((x|y)) * b", [f"x = i({D})", f"y = j({D})", "b = j(4)"], "Sum", axis)
    b64 = b.astype(np.float64)
    assert_close(g(x, y, b), np.exp(-d2) @ b64 + np.exp(dot) @ b64, dtype)


@AXES
@DTYPES
def test_k_nearest_resumed_across_blocks(axis, dtype):
    """K-min lists resumed from the chunk's buffer in every j block, in order of j."""
    x, y, _, d2, _ = _data(2, dtype)
    al = [f"x = i({D})", f"y = j({D})"]
    idx = _genred("SqDist(x,y)", al, "ArgKMin", axis, opt_arg=7)(x, y)
    assert_close(np.take_along_axis(d2, idx, 1), np.sort(d2, 1)[:, :7], dtype)
    vals, idx2 = _genred("SqDist(x,y)", al, "Min_ArgMin", axis)(x, y)
    assert_close(vals[:, 0], d2.min(1), dtype)
    if dtype == "float64":
        np.testing.assert_array_equal(idx, np.argsort(d2, 1, kind="stable")[:, :7])
        np.testing.assert_array_equal(idx2[:, 0], d2.argmin(1))


@DTYPES
def test_logsumexp_merged_across_blocks(dtype):
    x, y, b, d2, _ = _data(3, dtype)
    lse = _genred("-SqDist(x,y)", [f"x = i({D})", f"y = j({D})"], "LogSumExp", 1)(x, y)
    m = (-d2).max(1, keepdims=True)
    assert_close(lse, m + np.log(np.exp(-d2 - m).sum(1, keepdims=True)), dtype)


@pytest.mark.parametrize("d", [17, 64, 1024])
def test_widths(d):
    x, y, b, d2, dot = _data(d, "float32", m=37, n=300, d=d)
    g = Genred("Exp(-SqDist(x,y)) * b - (x|y) * b", [f"x=Vi({d})", f"y=Vj({d})", "b=Vj(4)"], "Sum", axis=1)
    b64 = b.astype(np.float64)
    assert_close(g(x, y, b), np.exp(-d2) @ b64 - dot @ b64, "float32", atol=2e-4 * np.sqrt(d))


@DTYPES
def test_block_sparse_ranges(dtype):
    x, y, b, d2, _ = _data(4, dtype, m=150, n=400)
    ranges = random_ranges(np.random.default_rng(5), 150, 400)
    g = Genred("Exp(-SqDist(x,y)) * b", [f"x=Vi({D})", f"y=Vj({D})", "b=Vj(4)"], "Sum", axis=1)
    K = np.where(mask_of(ranges, 150, 400), np.exp(-d2), 0.0)
    assert_close(g(x, y, b, ranges=ranges), K @ b.astype(np.float64), dtype)


@DTYPES
def test_few_rows_split_j(dtype):
    """j split across 2 threads, each part cache-blocked, the parts combined."""
    x, y, b, d2, _ = _data(6, dtype, m=3, n=20011)
    al = [f"x=Vi({D})", f"y=Vj({D})"]
    try:
        cpu.set_num_threads(2)
        out = Genred("Exp(-SqDist(x,y)) * b", al + ["b=Vj(4)"], "Sum", axis=1)(x, y, b)
        idx = Genred("SqDist(x,y)", al, "ArgKMin", axis=1, opt_arg=5)(x, y)
    finally:
        cpu.set_num_threads(None)
    assert_close(out, np.exp(-d2) @ b.astype(np.float64), dtype, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert_close(np.take_along_axis(d2, idx, 1), np.sort(d2, 1)[:, :5], dtype)


def test_far_from_origin_stays_exact():
    """Points far from the origin relative to their distances: SqDist is summed as
    (x - y)^2, with no |x|^2 + |y|^2 - 2<x,y> cancellation."""
    x, y, b, d2, _ = _data(7, "float32", m=40, n=100)
    shift = np.float32(100.0)
    g = Genred("Exp(-SqDist(x,y)) * b", [f"x=Vi({D})", f"y=Vj({D})", "b=Vj(4)"], "Sum", axis=1)
    # d2 of the shifted float32 data, exactly
    xs, ys = x + shift, y + shift
    d2s = ((xs.astype(np.float64)[:, None] - ys.astype(np.float64)[None]) ** 2).sum(-1)
    assert_close(g(xs, ys, b), np.exp(-d2s) @ b.astype(np.float64), "float32")


@pytest.mark.parametrize("width", [20, 65, 128, 1000])
@AXES
@DTYPES
def test_wide_right_hand_side_in_column_blocks(width, axis, dtype):
    """K @ B with B of many columns: one kernel of at most `column_block` columns called on
    each block (the last one zero-padded), b row-major, with a j split, block-sparse ranges,
    both axes, tails of rows, of j vectors and of column vectors."""
    rng = np.random.default_rng(width)
    m, n = 6 * COLUMN_ROWS + 5, 1100  # a tail of rows; 2 blocks of j and a tail of j
    x, y = rng.normal(size=(m, 3)).astype(dtype), rng.normal(size=(n, 3)).astype(dtype)
    b = rng.normal(size=(n, width)).astype(dtype)
    g = _genred("Exp(-SqDist(x,y)) * b", ["x = i(3)", "y = j(3)", f"b = j({width})"], "Sum", axis)
    s = _schedule(g)
    blocks = -(-width // s.column_block)  # equal blocks of a multiple of 16 columns, covering the width
    assert (s.strategy, s.column_arg, s.column_block % 16) == ("columns", 2, 0) and blocks * s.column_block < width + 16 * blocks
    K = np.exp(-((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1))
    assert_close(g(x, y, b), K @ b.astype(np.float64), dtype)
    if axis == 1:
        ranges = random_ranges(np.random.default_rng(1), m, n)
        assert_close(g(x, y, b, ranges=ranges), np.where(mask_of(ranges, m, n), K, 0.0) @ b.astype(np.float64), dtype)
    try:
        cpu.set_num_threads(2)  # 3 rows: j split across threads inside each block's call
        assert_close(g(x[:3], y, b), K[:3] @ b.astype(np.float64), dtype)
    finally:
        cpu.set_num_threads(None)


@pytest.mark.parametrize("scheme", ["direct_sum", "block_sum", "kahan_scheme"])
@pytest.mark.parametrize("dtype, acc", [("float32", "auto"), ("float32", "float64"), ("float64", "auto")])
def test_column_micro_kernel_sum_schemes(scheme, dtype, acc):
    """Each sum scheme and accumulator type through the column micro-kernel: 300 columns
    (one block of 304, a register tile of fewer column vectors), with a D = 20 contraction
    (its tile of CONTRACT_ROWS rows), ranges and a j split."""
    rng = np.random.default_rng(3)
    m, n, d, width = 2 * CONTRACT_ROWS + 3, 1300, 20, 300
    x, y = rng.normal(size=(m, d)).astype(dtype) / 3, rng.normal(size=(n, d)).astype(dtype) / 3
    b = rng.normal(size=(n, width)).astype(dtype)
    g = Genred("Exp(-SqDist(x,y)) * b", [f"x = Vi({d})", f"y = Vj({d})", f"b = Vj({width})"], "Sum", axis=1,
               sum_scheme=scheme, dtype_acc=acc)
    s = _schedule(g)
    assert (s.column_arg, s.column_block) == (2, 304) or s.target.l2_bytes < 1 << 20  # one block covers 300
    K = np.exp(-((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1))
    assert_close(g(x, y, b), K @ b.astype(np.float64), dtype)
    ranges = random_ranges(np.random.default_rng(2), m, n)
    assert_close(g(x, y, b, ranges=ranges), np.where(mask_of(ranges, m, n), K, 0.0) @ b.astype(np.float64), dtype)
    try:
        cpu.set_num_threads(2)
        assert_close(g(x[:3], y, b), K[:3] @ b.astype(np.float64), dtype)
    finally:
        cpu.set_num_threads(None)


@pytest.mark.parametrize("scheme", ["block_sum", "kahan_scheme"])
def test_column_micro_kernel_float32_accurate_for_large_n(scheme):
    """Compensated sums stay compensated in the column micro-kernel: 10^6 positive terms
    a column in float32 (the rows' j split across threads: partial states combined)."""
    n, width = 1_000_000, 20
    b = np.random.default_rng(7).uniform(0, 1, size=(n, width)).astype(np.float32)
    x, y = np.zeros((2, 1), np.float32), np.zeros((n, 1), np.float32)
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(1)", "y = Vj(1)", f"b = Vj({width})"], "Sum", axis=1,
               sum_scheme=scheme)
    exact = b.astype(np.float64).sum(0)
    assert np.abs(g(x, y, b) - exact).max() / exact.min() < 1e-6


def test_column_blocks_share_one_kernel_across_widths():
    """Widths 1000, 2000 and 4000 of the right-hand side run the same kernel of 512 columns
    (one disk cache entry, no compilation per width); b used elsewhere in F keeps its width."""
    keys = set()
    for width in (1000, 2000, 4000):
        g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", f"b = Vj({width})"], "Sum", axis=1)
        keys.add(g.reduction.kernel("float32").stats["key"])
    assert len(keys) == 1
    g = Genred("Exp(-SqDist(x,y)) * b + b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(100)"], "Sum", axis=1)
    assert _schedule(g).strategy == "lanes" and not _schedule(g).column_block
    g = Genred("Exp(-SqDist(x,y) * Sum(b)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(100)"], "Sum", axis=1)
    assert _schedule(g).strategy == "lanes" and not _schedule(g).column_block


# ---- K-min of SqDist(x,y) screened by the expanded form, exact values for the j that may enter ----


def _assert_neighbours(idx, d2, dtype):
    """idx (M, K) are the K nearest j by d2 (float64, ties to the lower j); where the dtype's
    rounding cannot order two of the K + 1 nearest distances, their distances agree instead."""
    k = idx.shape[1]
    want = np.argsort(d2, 1, kind="stable")[:, :k]
    near = np.sort(d2, 1)[:, :k + 1]
    tol = (1e-5 if dtype == "float32" else 1e-13) * (1 + near.max())
    assert_close(np.take_along_axis(d2, idx, 1), near[:, :k], dtype, rtol=0, atol=tol)
    clear = (np.diff(near, axis=1) > tol).all(1)
    assert clear.mean() > 0.5  # most rows can be checked index by index
    np.testing.assert_array_equal(idx[clear], want[clear])


def test_the_schedule_screens_k_min_of_sqdist_only():
    def sched(formula, reduction, **kw):
        return _schedule(Genred(formula, [f"x=Vi({D})", f"y=Vj({D})"], reduction, axis=1, **kw))

    for red in ("KMin", "ArgKMin", "KMin_ArgKMin"):
        s = sched("SqDist(x,y)", red, opt_arg=3)
        assert s.screen and "strategy = screened" in s.text() and s.rows == CONTRACT_ROWS
    for formula, red, kw in [("SqDist(x,y) * 2", "ArgKMin", {"opt_arg": 3}), ("-(x|y)", "ArgKMin", {"opt_arg": 3}),
                             ("SqDist(x,y)", "ArgMin", {}), ("SqDist(x,y)", "Sum", {})]:
        assert not sched(formula, red, **kw).screen


@AXES
@DTYPES
@pytest.mark.parametrize("shift", [0.0, 100.0])
def test_screened_k_nearest_are_exact(axis, dtype, shift):
    """Neighbours and values as the exact (x - y)^2, also far from the origin, where
    |x|^2 + |y|^2 - 2<x,y> alone cannot rank them (its float32 error exceeds their gaps)."""
    x, y, _, _, _ = _data(8, dtype)
    x, y = x + np.asarray(shift, dtype), y + np.asarray(shift, dtype)
    d2 = ((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1)
    vals, idx = _genred("SqDist(x,y)", [f"x = i({D})", f"y = j({D})"], "KMin_ArgKMin", axis, opt_arg=9)(x, y)
    _assert_neighbours(idx, d2, dtype)
    assert_close(vals, np.sort(d2, 1)[:, :9], dtype, rtol=1e-5 if dtype == "float32" else 1e-12, atol=0)


@DTYPES
def test_screened_k_nearest_in_tight_clusters(dtype):
    """Near neighbours 100x closer than the other points, all far from the origin: the screen
    rejects the far points, and the expanded form's error (above the near ones' gaps) must be
    covered by its bound, or true neighbours are rejected."""
    rng = np.random.default_rng(12)
    x = (7 + rng.normal(size=(40, D)) / np.sqrt(D)).astype(dtype)
    near = x[:, None] + 0.1 * rng.normal(size=(40, 20, D)) / np.sqrt(D)
    y = np.concatenate([near.reshape(-1, D), 7 + 3 * rng.normal(size=(600, D)) / np.sqrt(D)]).astype(dtype)
    y = y[rng.permutation(len(y))]
    d2 = ((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1)
    vals, idx = Genred("SqDist(x,y)", [f"x=Vi({D})", f"y=Vj({D})"], "KMin_ArgKMin", axis=1, opt_arg=9)(x, y)
    _assert_neighbours(idx, d2, dtype)
    assert_close(vals, np.sort(d2, 1)[:, :9], dtype, rtol=1e-5 if dtype == "float32" else 1e-12, atol=0)


def test_screened_k_nearest_overflow_and_nan():
    """|x|^2 overflows float32 while <x,y> and (x - y)^2 do not (the expanded form is +inf):
    the screen must not reject there; NaN data sorts last, as unscreened."""
    rng = np.random.default_rng(9)
    x = (np.float32(1.368e18) + np.float32(1e17) * rng.normal(size=(40, D)) / np.sqrt(D)).astype(np.float32)
    y = (np.float32(1.166e18) + np.float32(1e17) * rng.normal(size=(300, D)) / np.sqrt(D)).astype(np.float32)
    y[5, 7] = np.nan
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    assert (x64 ** 2).sum(1).min() > np.finfo(np.float32).max > np.nanmax(np.abs(x64 @ y64.T))
    d2 = ((x64[:, None] - y64[None]) ** 2).sum(-1)
    idx = Genred("SqDist(x,y)", [f"x=Vi({D})", f"y=Vj({D})"], "ArgKMin", axis=1, opt_arg=4)(x, y)
    _assert_neighbours(idx, np.where(np.isnan(d2), np.inf, d2), "float32")
    # K = all 12 j (a K of 300 took a minute to compile): the NaN one comes last
    vals = Genred("SqDist(x,y)", [f"x=Vi({D})", f"y=Vj({D})"], "KMin", axis=1, opt_arg=12)(x[:2], y[:12])
    assert np.isnan(vals[:, -1]).all() and not np.isnan(vals[:, :-1]).any()


@DTYPES
def test_screened_k_nearest_block_sparse(dtype):
    """The block-sparse kernel screens with |y|^2 computed in the micro-kernel (no cache blocks)."""
    x, y, _, d2, _ = _data(10, dtype, m=150, n=400)
    ranges = random_ranges(np.random.default_rng(11), 150, 400)
    vals, idx = Genred("SqDist(x,y)", [f"x=Vi({D})", f"y=Vj({D})"], "KMin_ArgKMin", axis=1, opt_arg=3)(
        x, y, ranges=ranges)
    masked = np.where(mask_of(ranges, 150, 400), d2, np.inf)
    assert_close(vals, np.sort(masked, 1)[:, :3], dtype)
    found = np.isfinite(vals)
    assert (idx[~found] == -1).all() and found.any()
    assert_close(np.take_along_axis(masked, np.where(found, idx, 0), 1)[found], vals[found], dtype)
