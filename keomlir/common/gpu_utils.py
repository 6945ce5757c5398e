"""`pykeops.common.gpu_utils`: how many GPUs keomlir can use."""

from __future__ import annotations

from ..backends import cuda


def get_gpu_number():
    """The number of CUDA devices keomlir's GPU backend sees (0 without a usable driver)."""
    return cuda.device_count()
