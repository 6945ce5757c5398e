"""`pykeops.common.lazy_tensor`: the LazyTensor base classes, for the isinstance checks of
code written against pykeops (every NumPy or torch LazyTensor of keomlir is a
`GenericLazyTensor`; the complex ones are also `ComplexGenericLazyTensor`)."""

from __future__ import annotations

from ..lazy import ComplexMixin as ComplexGenericLazyTensor
from ..lazy import GenericLazyTensor

__all__ = ["ComplexGenericLazyTensor", "GenericLazyTensor", "is_complex_lazytensor"]


def is_complex_lazytensor(x):
    """Is x a complex LazyTensor."""
    return isinstance(x, ComplexGenericLazyTensor)
