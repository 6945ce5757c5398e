"""Block-sparse helpers for torch tensors, call-compatible with `pykeops.torch.cluster`.

    >>> from keomlir.torch.cluster import grid_cluster, sort_clusters, cluster_ranges_centroids, from_matrix
    >>> x_lab = grid_cluster(x, 0.1)                          # (M,) voxel labels
    >>> x, x_lab = sort_clusters(x, x_lab)                    # contiguous clusters
    >>> x_ranges, x_centroids, _ = cluster_ranges_centroids(x, x_lab)
    >>> ranges = from_matrix(x_ranges, y_ranges, keep)        # Genred(..., ranges=ranges)

One implementation serves NumPy and torch: see `keomlir.cluster`.
"""

from __future__ import annotations

from .. import cluster as _impl

__all__ = ["cluster_centroids", "cluster_ranges", "cluster_ranges_centroids", "from_matrix",
           "grid_cluster", "sort_clusters", "swap_axes"]

_XP = _impl.TORCH


def grid_cluster(x, size):
    return _impl.grid_cluster(_XP, x, size)


def sort_clusters(x, lab):
    return _impl.sort_clusters(_XP, x, lab)


def cluster_ranges(lab, Nlab=None):
    return _impl.cluster_ranges(_XP, lab, Nlab)


def cluster_centroids(x, lab, Nlab=None, weights=None, weights_c=None):
    return _impl.cluster_centroids(_XP, x, lab, Nlab, weights, weights_c)


def cluster_ranges_centroids(x, lab, weights=None, min_weight=1e-9):
    return _impl.cluster_ranges_centroids(_XP, x, lab, weights, min_weight)


def from_matrix(ranges_i, ranges_j, keep):
    return _impl.from_matrix(_XP, ranges_i, ranges_j, keep)


def swap_axes(ranges):
    return _impl.swap_axes(ranges)


for _f in (grid_cluster, sort_clusters, cluster_ranges, cluster_centroids, cluster_ranges_centroids,
           from_matrix, swap_axes):
    _f.__doc__ = getattr(_impl, _f.__name__).__doc__
del _f
