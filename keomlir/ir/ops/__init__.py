"""The operation registry: importing a family module registers its operations."""

from .base import OPS, Op, make, register  # noqa: F401
from . import elementwise, vector, tensor, complex, derivative, sequence  # noqa: F401
