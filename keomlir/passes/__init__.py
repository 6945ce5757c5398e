"""Passes over the IR, in pipeline order."""

from .manager import PASSES, Pass, PassManager, register_pass  # noqa: F401
from . import simplify, cse  # noqa: F401

DEFAULT_PIPELINE = ("simplify", "cse")
