"""Passes over the IR, in pipeline order.

DEFAULT_PIPELINE is target-independent: every front end runs it once per
reduction.  TARGET_PIPELINE schedules the result for one target; a backend
runs it with its `Target` (the GPU's kernels schedule themselves).
"""

from .manager import PASSES, Pass, PassManager, register_pass  # noqa: F401
from . import autodiff, simplify, cse, tiling  # noqa: F401
from ..schedule import Target  # noqa: F401

DEFAULT_PIPELINE = ("autodiff", "simplify", "cse")
TARGET_PIPELINE = ("tiling",)
