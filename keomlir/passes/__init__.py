"""Passes over the IR, in pipeline order."""

from .manager import PASSES, Pass, PassManager, register_pass  # noqa: F401
from . import autodiff, simplify, cse, tiling  # noqa: F401

DEFAULT_PIPELINE = ("autodiff", "simplify", "cse", "tiling")
