"""LazyTensor, shared by the NumPy and torch front ends.

tree.py: the expression tree and its IR; tensor.py: the LazyTensor API (operators,
math, construction); reductions.py: reductions, `@` and `solve`, and their handles;
surface.py: the rest of pykeops's methods (bspline, softdtw_sqdist, trace_operator...);
complex.py: complex LazyTensors; variables.py: Vi / Vj / Pm / Var.
"""

from .complex import ComplexMixin  # noqa: F401
from .reductions import LazyReduction, LazySolve  # noqa: F401
from .tensor import GenericLazyTensor  # noqa: F401
from .variables import make_variable_helpers  # noqa: F401

__all__ = ["ComplexMixin", "GenericLazyTensor", "LazyReduction", "LazySolve", "make_variable_helpers"]
