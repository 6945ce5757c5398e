"""`pykeops.common.gpu_utils`: how many GPUs keomlir can use."""

from __future__ import annotations

from ..backends.cuda import driver


def get_gpu_number():
    """The number of CUDA devices keomlir's GPU backend sees (0 without a usable driver)."""
    return driver.device_count()
