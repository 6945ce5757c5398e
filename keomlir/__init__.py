"""keomlir: a compiler for reductions of huge symbolic matrices (pykeops-compatible)."""

__version__ = "0.1.0"
