"""Block-sparse helpers for torch tensors (results on the input's device), call-compatible with `pykeops.torch.cluster`
(`from keomlir.torch.cluster import grid_cluster, from_matrix, ...`); the
implementation, shared by both front ends, and a worked example are in `keomlir.cluster`."""

from __future__ import annotations

from .. import cluster as _impl
from ..arrays import TORCH

__all__ = list(_impl.PUBLIC)

globals().update(_impl.front_end(TORCH))
