"""keomlir's IR: nodes, operations, reductions, programs and the verifier."""

from .node import DimensionError, Node, print_ssa, to_formula, variables  # noqa: F401
from .ops import OPS, make  # noqa: F401
from .program import Program, replace_vars, swap_ij  # noqa: F401
from . import serial  # noqa: F401
from .reductions import REDUCTIONS  # noqa: F401
from . import kmin  # noqa: F401  (registers the K-min reductions)
from .verify import VerificationError, verify_program  # noqa: F401
