"""Passes over the IR, in pipeline order.

DEFAULT_PIPELINE is target-independent: every front end runs it once per
reduction.  How a program then runs on a machine is no pass: it rewrites
nothing, and `keomlir.schedule` decides it.
"""

from .manager import (PASSES, NodePass, Pass, PassManager, PassStatistics, load_pass_file,  # noqa: F401
                      parse_pipeline, register_pass, split_pipeline)
from . import autodiff, simplify, cse  # noqa: F401

DEFAULT_PIPELINE = ("autodiff", "simplify", "cse")
