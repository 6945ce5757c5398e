"""Block-sparse helpers for NumPy arrays, call-compatible with `pykeops.numpy.cluster`
(`from keomlir.numpy.cluster import grid_cluster, from_matrix, ...`); the
implementation, shared by both front ends, and a worked example are in `keomlir.cluster`."""

from __future__ import annotations

from .. import cluster as _impl
from ..arrays import NUMPY

__all__ = list(_impl.PUBLIC)

globals().update(_impl.front_end(NUMPY))
