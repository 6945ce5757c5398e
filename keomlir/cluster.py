"""Block-sparse helpers shared by `keomlir.numpy.cluster` and `keomlir.torch.cluster`.

The seven public helpers of pykeops's `cluster` modules (`grid_cluster`,
`sort_clusters`, `cluster_ranges`, `cluster_centroids`,
`cluster_ranges_centroids`, `from_matrix`, `swap_axes`) are written once
here, over an array adapter (`keomlir.arrays.NUMPY` or `TORCH`) that
supplies the few library calls that differ between NumPy arrays and torch
tensors; each helper takes the adapter as its first argument. The front-end modules
bind an adapter and expose pykeops's signatures.

Vocabulary: `lab` is a 1-d vector of non-negative integer cluster labels,
one per point; cluster `k` of a sorted point cloud is the slice
`x[ranges[k, 0]:ranges[k, 1]]`. A block-sparse `ranges` argument of Genred
is the 6-tuple `(ranges_i, slices_i, redranges_j, ranges_j, slices_j,
redranges_i)`: for axis=1, the rows of cluster `k` (`ranges_i[k]`) reduce
over the union of the column intervals `redranges_j[slices_i[k-1]:slices_i[k]]`
(with `slices_i[-1]` read as 0); the last three arrays say the same with
`i` and `j` exchanged, for axis=0.

    >>> from keomlir.torch.cluster import grid_cluster, sort_clusters, cluster_ranges_centroids, from_matrix
    >>> x_lab = grid_cluster(x, 0.1)                          # (M,) voxel labels
    >>> x, x_lab = sort_clusters(x, x_lab)                    # contiguous clusters
    >>> x_ranges, x_centroids, _ = cluster_ranges_centroids(x, x_lab)
    >>> keep = ((x_centroids[:, None] - y_centroids[None]) ** 2).sum(-1) < 0.2 ** 2
    >>> ranges = from_matrix(x_ranges, y_ranges, keep)        # Genred(...)(x, y, b, ranges=ranges)
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

__all__ = ["grid_cluster", "sort_clusters", "cluster_ranges", "cluster_centroids",
           "cluster_ranges_centroids", "from_matrix", "swap_axes"]


# --------------------------------------------------------------------------- checks

def _shape(a):
    return tuple(a.shape)


def _check_array(xp, a, name):
    if not xp.is_array(a):
        raise TypeError(f"{name}: expected {xp.array_word}, got {type(a).__name__}")


def _check_points(xp, x, name="x"):
    """x must be an (M, D) array of real numbers."""
    _check_array(xp, x, name)
    if len(x.shape) != 2:
        raise ValueError(f"{name}: expected a 2-d (M, D) array of points, got shape {_shape(x)}")
    if xp.kind(x) not in ("f", "i"):
        raise TypeError(f"{name}: expected real (floating or integer) values, got dtype {x.dtype}")


def _check_labels(xp, lab, name="lab"):
    """lab must be a 1-d vector of non-negative integers."""
    _check_array(xp, lab, name)
    if xp.kind(lab) != "i":
        raise TypeError(f"{name}: expected integer labels, got dtype {lab.dtype}")
    if len(lab.shape) != 1:
        raise ValueError(f"{name}: expected a 1-d (M,) vector of labels, got shape {_shape(lab)}")
    if lab.shape[0] and xp.to_int(lab.min()) < 0:
        raise ValueError(f"{name}: labels must be non-negative, got {xp.to_int(lab.min())}")


def _check_same_length(a, b, name_a, name_b):
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b}: expected the same number of points, "
                         f"got {a.shape[0]} and {b.shape[0]}")


def _n_labels(xp, lab):
    """max(lab) + 1, or 0 for no labels."""
    return xp.to_int(lab.max()) + 1 if lab.shape[0] else 0


def _vector(xp, a, n, name, what):
    """a as a 1-d vector of n real numbers; (n,) and (n, 1) are accepted."""
    _check_array(xp, a, name)
    shape = _shape(a)
    if shape not in ((n,), (n, 1)):
        raise ValueError(f"{name}: expected {n} {what} as an ({n},) or ({n}, 1) array, got shape {shape}")
    if xp.kind(a) not in ("f", "i"):
        raise TypeError(f"{name}: expected real (floating or integer) values, got dtype {a.dtype}")
    return a.reshape((n,))


def _counts_vector(xp, Nlab, name="Nlab"):
    """Nlab (numbers of points per cluster) as an int64 vector."""
    _check_array(xp, Nlab, name)
    if len(Nlab.shape) != 1:
        raise ValueError(f"{name}: expected a 1-d (C,) vector of counts, got shape {_shape(Nlab)}")
    if xp.kind(Nlab) not in ("f", "i"):
        raise TypeError(f"{name}: expected integer counts, got dtype {Nlab.dtype}")
    if Nlab.shape[0] and xp.to_int((Nlab < 0).sum()):
        raise ValueError(f"{name}: counts must be non-negative")
    if xp.kind(Nlab) == "f":
        Nlab = Nlab + 0.5  # pykeops passes float counts around: round them
    return xp.int64(Nlab)


def _check_ranges(xp, r, name):
    _check_array(xp, r, name)
    if len(r.shape) != 2 or r.shape[1] != 2:
        raise ValueError(f"{name}: expected a (K, 2) array of [start, end) indices, got shape {_shape(r)}")
    if xp.kind(r) != "i":
        raise TypeError(f"{name}: expected integer indices, got dtype {r.dtype}")
    if r.shape[0]:
        if xp.to_int((r[:, 0] < 0).sum()):
            raise ValueError(f"{name}: start indices must be non-negative")
        if xp.to_int((r[:, 1] < r[:, 0]).sum()):
            raise ValueError(f"{name}: every range must satisfy start <= end")


# --------------------------------------------------------------------------- helpers

def grid_cluster(xp, x, size):
    """Labels (M,) of the cubic cells ("voxels") of side `size` that hold the points x (M, D).

    Two points get the same label if and only if they lie in the same voxel;
    labels are compact, 0..C-1 for the C non-empty voxels, numbered in the
    lexicographic order of the voxels' integer coordinates (first coordinate
    first). `size` is a positive number or a (D,) vector of positive sides.
    NumPy: voxels are measured from the origin, labels are int64. torch:
    voxels are measured from the per-coordinate minimum of x, labels are int32
    on x's device (both as in pykeops).
    """
    _check_points(xp, x)
    m, d = x.shape
    if isinstance(size, numbers.Real) and not isinstance(size, bool):
        if not (math.isfinite(size) and size > 0):
            raise ValueError(f"size: the voxel side must be positive and finite, got {size}")
        side = float(size)  # a Python number keeps x's dtype in x / size
    elif xp.is_array(size) or isinstance(size, (np.ndarray, list, tuple)):
        side = xp.as_array(size, x)
        if _shape(side) not in ((), (1,), (d,)) or xp.kind(side) not in ("f", "i"):
            raise ValueError(f"size: expected a positive number or a ({d},) array of voxel sides, "
                             f"got shape {_shape(side)} and dtype {side.dtype}")
        if xp.to_int((side <= 0).sum()) or not xp.all_finite(side):
            raise ValueError("size: voxel sides must be positive and finite")
    else:
        raise TypeError(f"size: expected a positive number or a ({d},) array of voxel sides, "
                        f"got {type(size).__name__}")
    if m == 0:
        return xp.astype(xp.zeros_int64(0, x), xp.label_dtype(x))
    if not xp.all_finite(x):
        raise ValueError("x: points must be finite (no NaN or infinity)")
    points = xp.astype(x, xp.float_dtype(x)) if xp.kind(x) == "i" else x
    points = xp.plain(points)
    if xp.grid_anchor_at_min:
        points = points - xp.column_min(points)
    cells = xp.floor_int64(points / side)
    return xp.astype(xp.unique_rows_inverse(cells), xp.label_dtype(x))


def sort_clusters(xp, x, lab):
    """(x_sorted, lab_sorted): the labels sorted (stable sort) and x permuted the same way.

    x is one (M, ...) array or a tuple/list of them (the same container type
    comes back); lab is an (M,) vector of integer labels.
    """
    _check_labels(xp, lab)
    items = list(x) if isinstance(x, (tuple, list)) else [x]
    for k, a in enumerate(items):
        name = f"x[{k}]" if isinstance(x, (tuple, list)) else "x"
        _check_array(xp, a, name)
        if len(a.shape) == 0:
            raise ValueError(f"{name}: expected an (M, ...) array, got a 0-d array")
        _check_same_length(a, lab, name, "lab")
    perm = xp.stable_argsort(lab)
    moved = [a[perm] for a in items]
    if isinstance(x, tuple):
        moved = tuple(moved)
    elif not isinstance(x, list):
        moved = moved[0]
    return moved, lab[perm]


def cluster_ranges(xp, lab, Nlab=None):
    """(C, 2) int64 [start, end) indices of the C clusters in a point cloud sorted by label.

    Cluster k holds `Nlab[k]` points (by default the number of labels equal
    to k); the ranges are consecutive, starting at 0.
    """
    _check_labels(xp, lab)
    counts = xp.counts(lab, 0) if Nlab is None else _counts_vector(xp, Nlab)
    pivots = xp.concat([xp.zeros_int64(1, lab), xp.cumsum_int64(counts)])
    return xp.stack_columns(pivots[:-1], pivots[1:])


def cluster_centroids(xp, x, lab, Nlab=None, weights=None, weights_c=None):
    """(C, D) centroids: c_k = sum_{lab_i = k} w_i x_i / sum_{lab_i = k} w_i.

    The weights w_i default to 1. C is len(Nlab) when Nlab (points per cluster)
    is given, max(lab) + 1 otherwise. Nlab (without weights) and weights_c
    (the total weight of each cluster, with weights) are used as the
    denominators when given (weights_c is ignored without weights). Empty
    clusters give NaN. The centroids have x's floating dtype.
    """
    _check_points(xp, x)
    _check_labels(xp, lab)
    _check_same_length(x, lab, "x", "lab")
    m = x.shape[0]
    if Nlab is not None:
        Nlab = _counts_vector(xp, Nlab)
        n = Nlab.shape[0]
        if _n_labels(xp, lab) > n:
            raise ValueError(f"lab: labels must be smaller than len(Nlab) = {n}, got {_n_labels(xp, lab) - 1}")
    else:
        n = _n_labels(xp, lab)
    if weights is not None:
        weights = _vector(xp, weights, m, "weights", "weights (one per point)")
    if weights is None:
        weights_c = None  # only a denominator of weighted means (ignored otherwise, as in pykeops)
    if weights_c is not None:
        weights_c = _vector(xp, weights_c, n, "weights_c", "cluster weights (one per cluster)")
    out_dtype = xp.float_dtype(x)
    work = xp.float_dtype(*[a for a in (x, weights, weights_c) if a is not None])
    points = xp.astype(x, work)
    if weights is None:
        num = xp.segment_sum(points, lab, n)
        den = xp.counts(lab, n) if Nlab is None else Nlab
    else:
        w = xp.astype(weights, work)
        num = xp.segment_sum(points * w.reshape((m, 1)), lab, n)
        den = xp.segment_sum(w, lab, n) if weights_c is None else weights_c
    c = xp.divide(num, xp.astype(den, work).reshape((n, 1)))
    return xp.astype(c, out_dtype)


def cluster_ranges_centroids(xp, x, lab, weights=None, min_weight=1e-9):
    """(ranges, centroids, weights_c) of a labelled point cloud, C = max(lab) + 1 clusters.

    ranges: (C, 2) int64 as `cluster_ranges(lab)`; centroids: (C, D) as
    `cluster_centroids`; weights_c: (C,) total weight of each cluster (the
    number of points without weights), in the centroids' dtype. Weights
    smaller than or equal to `min_weight` are replaced by `min_weight`.
    """
    _check_points(xp, x)
    _check_labels(xp, lab)
    _check_same_length(x, lab, "x", "lab")
    m = x.shape[0]
    n = _n_labels(xp, lab)
    counts = xp.counts(lab, n)
    ranges = cluster_ranges(xp, lab, counts)
    dtype = xp.float_dtype(x)
    if weights is None:
        return ranges, cluster_centroids(xp, x, lab, counts), xp.astype(counts, dtype)
    if not isinstance(min_weight, numbers.Real) or isinstance(min_weight, bool):
        raise TypeError(f"min_weight: expected a number, got {type(min_weight).__name__}")
    w = _vector(xp, weights, m, "weights", "weights (one per point)")
    w = xp.clamp_min(xp.astype(w, xp.float_dtype(x, w)), float(min_weight))
    weights_c = xp.segment_sum(w, lab, n)
    centroids = cluster_centroids(xp, x, lab, counts, weights=w, weights_c=weights_c)
    return ranges, centroids, xp.astype(weights_c, dtype)


def from_matrix(xp, ranges_i, ranges_j, keep):
    """The 6-tuple `ranges` argument of Genred for a cluster-to-cluster mask.

    ranges_i (Mc, 2) and ranges_j (Nc, 2) are the [start, end) indices of the
    clusters of i and j variables; keep (Mc, Nc) says which pairs of clusters
    interact. Returns (ranges_i, slices_i, redranges_j, ranges_j, slices_j,
    redranges_i): slices_i[k] is the number of True in keep[:k+1] and
    redranges_j lists, row after row, the ranges_j of the kept columns (the
    second half is the same for keep transposed). NumPy: all int64. torch:
    the ranges keep their dtype, the slices are int32 (as in pykeops).
    """
    _check_ranges(xp, ranges_i, "ranges_i")
    _check_ranges(xp, ranges_j, "ranges_j")
    _check_array(xp, keep, "keep")
    expected = (ranges_i.shape[0], ranges_j.shape[0])
    if _shape(keep) != expected:
        raise ValueError(f"keep: expected a boolean matrix of shape (len(ranges_i), len(ranges_j)) = "
                         f"{expected}, got shape {_shape(keep)}")
    if xp.kind(keep) == "i":
        keep = keep != 0
    elif xp.kind(keep) != "b":
        raise TypeError(f"keep: expected a boolean (or 0/1 integer) matrix, got dtype {keep.dtype}")
    devices = {str(xp.device(a)) for a in (ranges_i, ranges_j, keep)}
    if len(devices) > 1:
        raise ValueError(f"ranges_i, ranges_j and keep: expected arrays on one device, got {sorted(devices)}")
    _, cols = xp.nonzero(keep)         # kept pairs row after row: the j clusters of each i cluster
    _, rows = xp.nonzero(keep.T)       # kept pairs column after column
    slices_i = xp.cumsum_int64(keep.sum(1))
    slices_j = xp.cumsum_int64(keep.sum(0))
    return (xp.ranges_out(ranges_i), xp.slices_out(slices_i, keep), xp.ranges_out(ranges_j[cols]),
            xp.ranges_out(ranges_j), xp.slices_out(slices_j, keep), xp.ranges_out(ranges_i[rows]))


def swap_axes(ranges):
    """`ranges` with its i and j halves exchanged (None stays None)."""
    if ranges is None:
        return None
    if not isinstance(ranges, (tuple, list)):
        raise TypeError(f"ranges: expected None or a 6-tuple of arrays, got {type(ranges).__name__}")
    if len(ranges) != 6:
        raise ValueError(f"ranges: expected a 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, slices_j, "
                         f"redranges_i), got {len(ranges)} items")
    return (*ranges[3:], *ranges[:3])


PUBLIC = ("cluster_centroids", "cluster_ranges", "cluster_ranges_centroids", "from_matrix", "grid_cluster",
          "sort_clusters", "swap_axes")


def front_end(xp):
    """{name: helper} for one front end: each helper of PUBLIC with its adapter
    argument bound to `xp`, so it has pykeops's signature (and its own docstring)."""
    helpers = {}
    for name in PUBLIC:
        fn = globals()[name]
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].name != "xp":  # swap_axes: the same for every array library
            helpers[name] = fn
            continue

        def bound(*args, _fn=fn, **kwargs):
            return _fn(xp, *args, **kwargs)

        bound.__name__ = bound.__qualname__ = name
        bound.__doc__ = fn.__doc__
        bound.__signature__ = inspect.Signature(params[1:])
        helpers[name] = bound
    return helpers
