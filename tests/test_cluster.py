"""Block-sparse helpers (keomlir.numpy.cluster, keomlir.torch.cluster) against
brute-force oracles written with plain Python loops."""

import inspect
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import keomlir.numpy.cluster as npc  # noqa: E402
import keomlir.torch.cluster as tc  # noqa: E402

NAMES = ["cluster_centroids", "cluster_ranges", "cluster_ranges_centroids", "from_matrix",
         "grid_cluster", "sort_clusters", "swap_axes"]


class Front:
    """One front end: its module and conversions to and from its array type."""

    def __init__(self, name):
        self.name = name
        self.mod = npc if name == "numpy" else tc

    def __repr__(self):
        return self.name

    def arr(self, a, dtype=None):
        a = np.asarray(a, dtype=dtype)
        return a if self.name == "numpy" else torch.from_numpy(a.copy())

    def np(self, a):
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    def is_array(self, a):
        return isinstance(a, np.ndarray if self.name == "numpy" else torch.Tensor)

    def dtype_name(self, a):
        return str(a.dtype).replace("torch.", "")


FRONTS = [Front("numpy"), Front("torch")]
front = pytest.mark.parametrize("f", FRONTS, ids=repr)


# --------------------------------------------------------------------------- oracles

def oracle_voxels(x, size, anchor_at_min):
    """The integer voxel coordinates of each point, one Python tuple per point."""
    m, d = x.shape
    sides = [float(s) for s in np.broadcast_to(np.ravel(np.asarray(size, dtype=float)), (d,))]
    anchor = [min(float(x[i, k]) for i in range(m)) if anchor_at_min else 0.0 for k in range(d)]
    return [tuple(math.floor((float(x[i, k]) - anchor[k]) / sides[k]) for k in range(d)) for i in range(m)]


def oracle_counts(lab, n):
    counts = [0] * n
    for v in lab:
        counts[int(v)] += 1
    return counts


def oracle_ranges(counts):
    out, start = [], 0
    for c in counts:
        out.append([start, start + int(c)])
        start += int(c)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def oracle_sums(x, lab, n, weights=None):
    """Per cluster: sum of w_i x_i (n, D) and sum of w_i (n,)."""
    m, d = x.shape
    sums, totals = np.zeros((n, d)), np.zeros(n)
    for i in range(m):
        w = 1.0 if weights is None else float(weights[i])
        totals[int(lab[i])] += w
        for c in range(d):
            sums[int(lab[i]), c] += w * float(x[i, c])
    return sums, totals


def oracle_centroids(x, lab, n, weights=None):
    sums, totals = oracle_sums(x, lab, n, weights)
    out = np.full(sums.shape, np.nan)
    for k in range(n):
        if totals[k] != 0:
            out[k] = sums[k] / totals[k]
    return out


def mask_from_keep(ranges_i, ranges_j, keep, m, n):
    """Dense (m, n) mask implied by the cluster ranges and the cluster mask keep."""
    mask = np.zeros((m, n), dtype=bool)
    for k in range(len(ranges_i)):
        for l in range(len(ranges_j)):
            if keep[k][l]:
                for i in range(ranges_i[k][0], ranges_i[k][1]):
                    for j in range(ranges_j[l][0], ranges_j[l][1]):
                        mask[i, j] = True
    return mask


def mask_from_half(ranges, slices, redranges, m, n):
    """Dense (m, n) mask scheduled by one half (ranges, slices, redranges) of a 6-tuple."""
    mask = np.zeros((m, n), dtype=bool)
    for k in range(len(ranges)):
        lo = 0 if k == 0 else int(slices[k - 1])
        for l in range(lo, int(slices[k])):
            for i in range(int(ranges[k][0]), int(ranges[k][1])):
                for j in range(int(redranges[l][0]), int(redranges[l][1])):
                    mask[i, j] = True
    return mask


def random_ranges(rng, count, max_len=4):
    """count [start, end) intervals, in any order, with gaps and empty ones."""
    out, start = [], 0
    for _ in range(count):
        start += int(rng.integers(0, 3))
        length = int(rng.integers(0, max_len + 1))
        out.append([start, start + length])
        start += length
    out = np.array(out, dtype=np.int64).reshape(-1, 2)
    return out[rng.permutation(count)]


# --------------------------------------------------------------------------- API surface

@front
def test_exports_and_signatures(f):
    assert sorted(f.mod.__all__) == NAMES
    params = {
        "grid_cluster": ["x", "size"],
        "sort_clusters": ["x", "lab"],
        "cluster_ranges": ["lab", "Nlab=None"],
        "cluster_centroids": ["x", "lab", "Nlab=None", "weights=None", "weights_c=None"],
        "cluster_ranges_centroids": ["x", "lab", "weights=None", "min_weight=1e-09"],
        "from_matrix": ["ranges_i", "ranges_j", "keep"],
        "swap_axes": ["ranges"],
    }
    for name in NAMES:
        fn = getattr(f.mod, name)
        assert [str(p) for p in inspect.signature(fn).parameters.values()] == params[name]
        assert fn.__doc__


# --------------------------------------------------------------------------- grid_cluster

@front
def test_grid_cluster_doc_example(f):
    x = f.arr([[0.], [.1], [.9], [.05], [.5]], np.float32)
    lab = f.mod.grid_cluster(x, .2)
    assert f.np(lab).tolist() == [0, 0, 2, 0, 1]
    assert f.dtype_name(lab) == ("int64" if f.name == "numpy" else "int32")


@front
@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("vector_size", [False, True])
def test_grid_cluster_random(f, d, dtype, vector_size):
    rng = np.random.default_rng(100 * d + vector_size)
    x_np = (rng.normal(size=(150, d)) * 3 + 1.5).astype(dtype)
    size = rng.uniform(0.5, 2.0, size=d) if vector_size else 0.7
    lab = f.np(f.mod.grid_cluster(f.arr(x_np), f.arr(size) if vector_size else size))
    assert lab.shape == (150,)
    voxels = oracle_voxels(x_np, size, anchor_at_min=f.name == "torch")
    # same voxel <=> same label, labels numbered in the lexicographic order of the voxels
    expected = {v: k for k, v in enumerate(sorted(set(voxels)))}
    assert lab.tolist() == [expected[v] for v in voxels]


@front
def test_grid_cluster_wide_grid_and_integers(f):
    # a grid wider than 1024 voxels along a coordinate: no two voxels share a label
    x = f.arr([[0., 1024.], [1., 0.], [0., 0.], [1., 1024.], [0., 1024.5]])
    assert f.np(f.mod.grid_cluster(x, 1.0)).tolist() == [1, 2, 0, 3, 1]
    xi = f.arr([[3, -2], [3, -1], [-4, 0]], np.int64)
    assert f.np(f.mod.grid_cluster(xi, 2)).tolist() == [1, 1, 0]


@front
def test_grid_cluster_empty_and_device(f):
    lab = f.mod.grid_cluster(f.arr(np.zeros((0, 2))), 1.0)
    assert f.np(lab).shape == (0,)
    if f.name == "torch":
        x = torch.randn(10, 3, requires_grad=True)
        lab = tc.grid_cluster(x, 0.5)
        assert lab.device == x.device and not lab.requires_grad and lab.dtype == torch.int32


# --------------------------------------------------------------------------- sort_clusters

@front
@pytest.mark.parametrize("container", ["array", "tuple", "list"])
def test_sort_clusters_random(f, container):
    rng = np.random.default_rng(7)
    m = 60
    lab_np = rng.integers(0, 6, size=m)
    a_np, b_np = rng.normal(size=(m, 3)), rng.normal(size=(m, 2, 2))
    perm = sorted(range(m), key=lambda i: lab_np[i])  # Python's sort is stable
    x = {"array": f.arr(a_np), "tuple": (f.arr(a_np), f.arr(b_np)), "list": [f.arr(a_np), f.arr(b_np)]}[container]
    x_sorted, lab_sorted = f.mod.sort_clusters(x, f.arr(lab_np))
    assert f.np(lab_sorted).tolist() == [int(lab_np[i]) for i in perm]
    assert f.dtype_name(lab_sorted) == f.dtype_name(f.arr(lab_np))
    if container == "array":
        assert f.is_array(x_sorted)
        np.testing.assert_array_equal(f.np(x_sorted), a_np[perm])
    else:
        assert type(x_sorted) is type(x) and len(x_sorted) == 2
        np.testing.assert_array_equal(f.np(x_sorted[0]), a_np[perm])
        np.testing.assert_array_equal(f.np(x_sorted[1]), b_np[perm])


@front
def test_sort_clusters_doc_example(f):
    x = f.arr([[0.], [5.], [.4], [.3], [2.]])
    x_sorted, lab = f.mod.sort_clusters(x, f.arr([0, 2, 0, 0, 1], np.int32))
    assert f.np(x_sorted).ravel().tolist() == [0., .4, .3, 2., 5.]
    assert f.np(lab).tolist() == [0, 0, 0, 1, 2]


# --------------------------------------------------------------------------- cluster_ranges

@front
@pytest.mark.parametrize("seed", range(4))
def test_cluster_ranges_random(f, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    lab_np = rng.integers(0, n, size=int(rng.integers(1, 50)))
    counts = oracle_counts(lab_np, int(lab_np.max()) + 1)
    ranges = f.mod.cluster_ranges(f.arr(lab_np))
    assert f.dtype_name(ranges) == "int64"
    np.testing.assert_array_equal(f.np(ranges), oracle_ranges(counts))
    # each range holds exactly the points of its label once the cloud is sorted
    _, lab_sorted = f.mod.sort_clusters(f.arr(lab_np), f.arr(lab_np))
    lab_sorted = f.np(lab_sorted)
    for k, (s, e) in enumerate(f.np(ranges)):
        assert all(lab_sorted[s:e] == k) and e - s == counts[k]
    # the counts may be given (integers, or floats as pykeops passes them around)
    for nlab in (f.arr(counts, np.int64), f.arr(counts, np.float32)):
        np.testing.assert_array_equal(f.np(f.mod.cluster_ranges(f.arr(lab_np), nlab)), oracle_ranges(counts))


@front
def test_cluster_ranges_empty(f):
    assert f.np(f.mod.cluster_ranges(f.arr(np.zeros(0, np.int64)))).shape == (0, 2)


# --------------------------------------------------------------------------- centroids

@front
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cluster_centroids_random(f, seed, dtype):
    rng = np.random.default_rng(seed)
    m, d, n = 40, 3, 6
    x_np = rng.normal(size=(m, d)).astype(dtype)
    lab_np = rng.integers(0, n - 1, size=m)  # label n - 2 may be absent; n - 1 always is
    w_np = rng.uniform(0.1, 2.0, size=m).astype(dtype)
    x, lab, w = f.arr(x_np), f.arr(lab_np), f.arr(w_np)
    top = int(lab_np.max()) + 1
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)

    c = f.mod.cluster_centroids(x, lab)
    assert f.dtype_name(c) == dtype and f.np(c).shape == (top, d)
    np.testing.assert_allclose(f.np(c), oracle_centroids(x_np, lab_np, top), equal_nan=True, **tol)

    c = f.mod.cluster_centroids(x, lab, weights=w)
    np.testing.assert_allclose(f.np(c), oracle_centroids(x_np, lab_np, top, w_np), equal_nan=True, **tol)
    c = f.mod.cluster_centroids(x, lab, weights=f.arr(w_np[:, None]))  # (M, 1) weights
    np.testing.assert_allclose(f.np(c), oracle_centroids(x_np, lab_np, top, w_np), equal_nan=True, **tol)

    # Nlab sets the number of clusters: the last one is empty, hence NaN
    counts = oracle_counts(lab_np, n)
    c = f.np(f.mod.cluster_centroids(x, lab, Nlab=f.arr(counts, np.int64)))
    assert c.shape == (n, d) and np.isnan(c[n - 1]).all()
    np.testing.assert_allclose(c, oracle_centroids(x_np, lab_np, n), equal_nan=True, **tol)

    # weights_c is used as the denominator when given
    wc = np.array([2.0] * n)
    c = f.np(f.mod.cluster_centroids(x, lab, f.arr(counts, np.int64), weights=w, weights_c=f.arr(wc)))
    np.testing.assert_allclose(c, oracle_sums(x_np, lab_np, n, w_np)[0] / 2.0, **tol)


@front
def test_cluster_centroids_doc_example(f):
    x = f.arr([[0.], [1.], [4.], [5.], [6.]])
    c = f.mod.cluster_centroids(x, f.arr([0, 0, 1, 1, 1]), weights=f.arr([.5, .5, 2., 1., 1.]))
    np.testing.assert_allclose(f.np(c), [[0.5], [4.75]])


def test_torch_centroids_are_differentiable():
    x = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(8, dtype=torch.float64) + 0.5
    w.requires_grad_(True)
    lab = torch.tensor([0, 1, 0, 2, 2, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda x, w: tc.cluster_centroids(x, lab, weights=w), (x, w))


@front
@pytest.mark.parametrize("seed", range(3))
def test_cluster_ranges_centroids_random(f, seed):
    rng = np.random.default_rng(seed + 10)
    m, d = 30, 2
    x_np = rng.normal(size=(m, d))
    lab_np = rng.integers(0, 5, size=m)
    x, lab = f.arr(x_np), f.arr(lab_np)
    n = int(lab_np.max()) + 1
    counts = oracle_counts(lab_np, n)

    ranges, centroids, weights_c = f.mod.cluster_ranges_centroids(x, lab)
    np.testing.assert_array_equal(f.np(ranges), f.np(f.mod.cluster_ranges(lab)))
    np.testing.assert_array_equal(f.np(ranges), oracle_ranges(counts))
    np.testing.assert_allclose(f.np(centroids), f.np(f.mod.cluster_centroids(x, lab)), equal_nan=True)
    np.testing.assert_allclose(f.np(centroids), oracle_centroids(x_np, lab_np, n), rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(f.np(weights_c), counts)

    # weights at or below min_weight count as min_weight
    w_np = rng.uniform(0.5, 2.0, size=m)
    w_np[:4] = [0.0, -1.0, 1e-12, 1e-9]
    clamped = np.where(w_np <= 1e-9, 1e-9, w_np)
    ranges, centroids, weights_c = f.mod.cluster_ranges_centroids(x, lab, weights=f.arr(w_np))
    np.testing.assert_array_equal(f.np(ranges), oracle_ranges(counts))
    np.testing.assert_allclose(f.np(centroids), oracle_centroids(x_np, lab_np, n, clamped), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(f.np(weights_c), oracle_sums(x_np, lab_np, n, clamped)[1], rtol=1e-12)
    _, _, weights_c = f.mod.cluster_ranges_centroids(x, lab, weights=f.arr(w_np), min_weight=0.75)
    clamped = np.where(w_np <= 0.75, 0.75, w_np)
    np.testing.assert_allclose(f.np(weights_c), oracle_sums(x_np, lab_np, n, clamped)[1], rtol=1e-12)


@front
def test_cluster_ranges_centroids_doc_example(f):
    x = f.arr([[0.], [.5], [1.], [2.], [3.]])
    lab = f.arr([0, 0, 1, 1, 1])
    r, c, w = f.mod.cluster_ranges_centroids(x, lab, weights=f.arr([1., .5, 1., 1., 10.]))
    assert f.np(r).tolist() == [[0, 2], [2, 5]]
    np.testing.assert_allclose(f.np(c).ravel(), [1 / 6, 2.75])
    np.testing.assert_allclose(f.np(w), [1.5, 12.])


# --------------------------------------------------------------------------- from_matrix

def check_from_matrix(f, ri_np, rj_np, keep_np, ranges_dtype=np.int64):
    ri, rj = f.arr(ri_np, ranges_dtype), f.arr(rj_np, ranges_dtype)
    out = f.mod.from_matrix(ri, rj, f.arr(keep_np, bool))
    assert isinstance(out, tuple) and len(out) == 6
    ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i = [f.np(a) for a in out]
    mc, nc = keep_np.shape
    assert ranges_i.shape == (mc, 2) and ranges_j.shape == (nc, 2)
    assert slices_i.shape == (mc,) and slices_j.shape == (nc,)
    assert redranges_j.shape == (int(keep_np.sum()), 2) and redranges_i.shape == (int(keep_np.sum()), 2)
    np.testing.assert_array_equal(ranges_i, ri_np)
    np.testing.assert_array_equal(ranges_j, rj_np)
    slices_dtype = "int64" if f.name == "numpy" else "int32"
    kept_dtype = "int64" if f.name == "numpy" else np.dtype(ranges_dtype).name
    assert [f.dtype_name(a) for a in out] == [kept_dtype, slices_dtype, kept_dtype] * 2
    m = int(max([0] + [e for _, e in ri_np]))
    n = int(max([0] + [e for _, e in rj_np]))
    expected = mask_from_keep(ri_np.tolist(), rj_np.tolist(), keep_np.tolist(), m, n)
    np.testing.assert_array_equal(mask_from_half(ranges_i, slices_i, redranges_j, m, n), expected)
    np.testing.assert_array_equal(mask_from_half(ranges_j, slices_j, redranges_i, n, m), expected.T)
    # cluster by cluster (not only the union): row cluster k lists its kept column clusters in order
    for k in range(mc):
        lo = 0 if k == 0 else int(slices_i[k - 1])
        assert redranges_j[lo:slices_i[k]].tolist() == [rj_np[l].tolist() for l in range(nc) if keep_np[k, l]]
    for l in range(nc):
        lo = 0 if l == 0 else int(slices_j[l - 1])
        assert redranges_i[lo:slices_j[l]].tolist() == [ri_np[k].tolist() for k in range(mc) if keep_np[k, l]]
    return out


@front
def test_from_matrix_doc_example(f):
    ri, rj = np.array([[2, 5], [7, 12]]), np.array([[1, 4], [4, 9], [20, 30]])
    keep = np.array([[True, True, False], [False, True, False]])
    out = check_from_matrix(f, ri, rj, keep, np.int32)
    assert [f.np(a).tolist() for a in out] == [
        [[2, 5], [7, 12]], [2, 3], [[1, 4], [4, 9], [4, 9]],
        [[1, 4], [4, 9], [20, 30]], [1, 3, 3], [[2, 5], [2, 5], [7, 12]]]


@front
@pytest.mark.parametrize("seed", range(6))
def test_from_matrix_random(f, seed):
    rng = np.random.default_rng(seed)
    mc, nc = int(rng.integers(0, 7)), int(rng.integers(0, 7))
    density = [0.0, 0.3, 0.7, 1.0][seed % 4]
    keep = rng.random((mc, nc)) < density
    check_from_matrix(f, random_ranges(rng, mc), random_ranges(rng, nc), keep,
                      np.int32 if seed % 2 else np.int64)


@settings(max_examples=40, deadline=None)
@given(mc=st.integers(0, 5), nc=st.integers(0, 5), seed=st.integers(0, 2**32 - 1),
       density=st.floats(0, 1), use_torch=st.booleans())
def test_from_matrix_hypothesis(mc, nc, seed, density, use_torch):
    rng = np.random.default_rng(seed)
    keep = rng.random((mc, nc)) < density
    check_from_matrix(FRONTS[use_torch], random_ranges(rng, mc), random_ranges(rng, nc), keep)


@front
def test_from_matrix_integer_keep(f):
    ri, rj = np.array([[0, 2], [2, 3]]), np.array([[0, 1], [1, 4]])
    a = f.mod.from_matrix(f.arr(ri), f.arr(rj), f.arr([[1, 0], [1, 1]], np.uint8))
    b = f.mod.from_matrix(f.arr(ri), f.arr(rj), f.arr([[True, False], [True, True]]))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(f.np(u), f.np(v))


@front
def test_swap_axes(f):
    rng = np.random.default_rng(3)
    ri, rj = random_ranges(rng, 4), random_ranges(rng, 5)
    keep = rng.random((4, 5)) < 0.5
    ranges = f.mod.from_matrix(f.arr(ri), f.arr(rj), f.arr(keep))
    swapped = f.mod.swap_axes(ranges)
    transposed = f.mod.from_matrix(f.arr(rj), f.arr(ri), f.arr(keep.T.copy()))
    assert isinstance(swapped, tuple) and len(swapped) == 6
    for u, v in zip(swapped, transposed):
        np.testing.assert_array_equal(f.np(u), f.np(v))
    assert all(u is v for u, v in zip(f.mod.swap_axes(swapped), ranges))
    assert f.mod.swap_axes(None) is None
    assert f.mod.swap_axes(list(ranges))[0] is ranges[3]


# --------------------------------------------------------------------------- errors

def error_cases(f):
    a = f.arr
    x, lab = a(np.zeros((4, 2))), a([0, 1, 1, 0])
    r2, r3, keep = a([[0, 1], [1, 3]]), a([[0, 2], [2, 3], [3, 5]]), a(np.ones((2, 3), bool))
    other = np.zeros((4, 2)) if f.name == "torch" else torch.zeros(4, 2)
    m = f.mod
    return [
        (m.grid_cluster, (other, 1.0), TypeError, r"x: expected a (NumPy array|torch tensor)"),
        (m.grid_cluster, (a(np.zeros(4)), 1.0), ValueError, r"x: expected a 2-d \(M, D\)"),
        (m.grid_cluster, (a(np.zeros((4, 2), complex)), 1.0), TypeError, r"x: expected real"),
        (m.grid_cluster, (x, 0.0), ValueError, r"size: the voxel side must be positive"),
        (m.grid_cluster, (x, "big"), TypeError, r"size: expected a positive number"),
        (m.grid_cluster, (x, a([1.0, 2.0, 3.0])), ValueError, r"size: expected .* \(2,\) array"),
        (m.grid_cluster, (x, a([1.0, -2.0])), ValueError, r"size: voxel sides must be positive"),
        (m.grid_cluster, (a([[0.0, np.nan]]), 1.0), ValueError, r"x: points must be finite"),
        (m.sort_clusters, (x, a([0.0, 1.0, 1.0, 0.0])), TypeError, r"lab: expected integer labels"),
        (m.sort_clusters, (x, a([[0, 1, 1, 0]])), ValueError, r"lab: expected a 1-d \(M,\) vector"),
        (m.sort_clusters, (x, a([0, 1, 1])), ValueError, r"x and lab: expected the same number of points, got 4 and 3"),
        (m.sort_clusters, ((x, a(np.zeros(5))), lab), ValueError, r"x\[1\] and lab"),
        (m.sort_clusters, ([x, other], lab), TypeError, r"x\[1\]: expected"),
        (m.cluster_ranges, (a([0, -1, 2]),), ValueError, r"lab: labels must be non-negative"),
        (m.cluster_ranges, (lab, a([[2, 2]])), ValueError, r"Nlab: expected a 1-d"),
        (m.cluster_ranges, (lab, a([2, -2])), ValueError, r"Nlab: counts must be non-negative"),
        (m.cluster_centroids, (a(np.zeros((3, 2))), lab), ValueError, r"x and lab: expected the same number"),
        (m.cluster_centroids, (x, lab, a([4])), ValueError, r"lab: labels must be smaller than len\(Nlab\) = 1"),
        (m.cluster_centroids, (x, lab, None, a([1.0, 2.0])), ValueError, r"weights: expected 4 weights"),
        (m.cluster_centroids, (x, lab, None, a(np.ones(4)), a(np.ones(3))), ValueError, r"weights_c: expected 2"),
        (m.cluster_ranges_centroids, (x, lab, a(np.ones((4, 2)))), ValueError, r"weights: expected 4"),
        (m.cluster_ranges_centroids, (x, lab, a(np.ones(4)), "small"), TypeError, r"min_weight: expected a number"),
        (m.from_matrix, (r2, r3, a(np.ones((3, 2), bool))), ValueError,
         r"keep: expected a boolean matrix of shape \(len\(ranges_i\), len\(ranges_j\)\) = \(2, 3\), "
         r"got shape \(3, 2\)"),
        (m.from_matrix, (r2, r3, a(np.ones((2, 3)))), TypeError, r"keep: expected a boolean"),
        (m.from_matrix, (r2, r3, other), TypeError, r"keep: expected a (NumPy array|torch tensor)"),
        (m.from_matrix, (a([0, 1]), r3, keep), ValueError, r"ranges_i: expected a \(K, 2\) array"),
        (m.from_matrix, (r2, a(np.zeros((3, 2))), keep), TypeError, r"ranges_j: expected integer indices"),
        (m.from_matrix, (a([[0, 1], [3, 2]]), r3, keep), ValueError,
         r"ranges_i: every range must satisfy start <= end"),
        (m.from_matrix, (r2, a([[0, 2], [-1, 3], [3, 5]]), keep), ValueError, r"ranges_j: start indices"),
        (m.swap_axes, ((r2,) * 5,), ValueError, r"ranges: expected a 6-tuple"),
        (m.swap_axes, (r2,), TypeError, r"ranges: expected None or a 6-tuple"),
    ]


@front
@pytest.mark.parametrize("case", range(len(error_cases(FRONTS[0]))))
def test_errors(f, case):
    fn, args, exc, match = error_cases(f)[case]
    with pytest.raises(exc, match=match):
        fn(*args)


@front
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8, np.uint64])
def test_label_dtypes(f, dtype):
    if f.name == "torch" and dtype == np.uint64:
        pytest.skip("torch has limited uint64 support")
    x_np, lab_np = np.arange(10.0).reshape(5, 2), np.array([2, 0, 2, 1, 0], dtype=dtype)
    r, c, w = f.mod.cluster_ranges_centroids(f.arr(x_np), f.arr(lab_np))
    assert f.np(r).tolist() == [[0, 2], [2, 3], [3, 5]]
    np.testing.assert_allclose(f.np(c), oracle_centroids(x_np, lab_np, 3))
    _, lab_sorted = f.mod.sort_clusters(f.arr(x_np), f.arr(lab_np))
    assert f.np(lab_sorted).tolist() == [0, 0, 1, 2, 2] and f.np(lab_sorted).dtype == dtype


# --------------------------------------------------------------------------- end to end

@front
def test_pipeline_covers_near_pairs(f):
    """grid_cluster -> sort_clusters -> cluster_ranges_centroids -> from_matrix: with a
    threshold on centroid distances wide enough, every close pair of points is scheduled."""
    rng = np.random.default_rng(5)
    x_np, y_np = rng.uniform(0, 4, size=(80, 2)), rng.uniform(0, 4, size=(70, 2))
    size, radius = 0.5, 0.3
    x, y = f.arr(x_np), f.arr(y_np)
    x, x_lab = f.mod.sort_clusters(x, f.mod.grid_cluster(x, size))
    y, y_lab = f.mod.sort_clusters(y, f.mod.grid_cluster(y, size))
    x_ranges, x_c, _ = f.mod.cluster_ranges_centroids(x, x_lab)
    y_ranges, y_c, _ = f.mod.cluster_ranges_centroids(y, y_lab)
    d = np.sqrt(((f.np(x_c)[:, None, :] - f.np(y_c)[None, :, :]) ** 2).sum(-1))
    keep = d <= radius + 2 * size * math.sqrt(2)  # each point is within a voxel diagonal of its centroid
    ranges = f.mod.from_matrix(x_ranges, y_ranges, f.arr(keep))
    xs, ys = f.np(x), f.np(y)
    scheduled = mask_from_half(*[f.np(r) for r in ranges[:3]], len(xs), len(ys))
    close = np.sqrt(((xs[:, None] - ys[None]) ** 2).sum(-1)) <= radius
    assert close.any() and not (close & ~scheduled).any() and not scheduled.all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_results_stay_on_the_device():
    x = torch.rand(50, 3, device="cuda")
    lab = tc.grid_cluster(x, 0.25)
    x, lab = tc.sort_clusters(x, lab)
    ranges, centroids, weights_c = tc.cluster_ranges_centroids(x, lab, weights=torch.rand(50, device="cuda"))
    keep = torch.cdist(centroids, centroids) < 0.5
    out = tc.from_matrix(ranges, ranges, keep)
    for t in (lab, ranges, centroids, weights_c, *out):
        assert t.device == x.device
    assert lab.dtype == torch.int32 and out[1].dtype == torch.int32
