"""Complex LazyTensors (pykeops's ComplexLazyTensor), on the formula language's
complex operations.

A complex array of shape (..., D) becomes interleaved real pairs (..., 2D), KeOps's
storage ([re0, im0, re1, im1, ...]); a complex LazyTensor is a LazyTensor over those
pairs whose operators are the complex ones: `*` ComplexMult, `/` ComplexDivide,
`exp` ComplexExp, `sum(-1)` ComplexSum, `abs` ComplexAbs, `real`, `imag`, `angle`,
`conj`...  A real operand is made complex first (Real2Complex); a complex scalar
(D = 1) broadcasts.  Sum reductions (`.sum(dim)`, `@`) return complex arrays; the
other reductions have no meaning on complex numbers and are refused.  In torch, the
conversions are `view_as_real` / `view_as_complex`, so autograd flows through them.
"""

from __future__ import annotations

import numbers

# operations whose meaning on interleaved pairs is the complex one
COMPLEX_OPS = frozenset({
    "Add", "Subtract", "Minus", "ComplexMult", "ComplexDivide", "ComplexExp", "Conj", "ComplexSum", "ComplexSumT",
    "Concat",
})
# complex -> real
REAL_RESULTS = {"real": "ComplexReal", "imag": "ComplexImag", "angle": "ComplexAngle", "abs": "ComplexAbs",
                "sqnorm": "ComplexSquareAbs"}


def is_complex_operand(arrays, x):
    return getattr(x, "is_complex", False) is True or isinstance(x, complex) or arrays.is_complex(x)


class ComplexMixin:
    """The complex behaviour of a LazyTensor class (mixed into the NumPy / torch ones)."""

    is_complex = True

    # ---- shape: D complex numbers -----------------------------------------------------
    @property
    def ndim(self):
        return self._sym.dim // 2

    def _retype(self, lt, cls):
        return cls._wrap(lt._sym, lt._meta(), lt.ranges)

    def _real(self, lt):
        return self._retype(lt, self._real_class)

    def _complex(self, lt):
        return self._retype(lt, self._complex_class)

    def _cplx(self, other, what):
        """`other` as a complex LazyTensor: complex ones as they are, Python complex numbers
        as complex parameters, real LazyTensors, arrays and numbers made complex."""
        if isinstance(other, complex) and not isinstance(other, numbers.Real):
            return self._complex(self._real_class([float(other.real), float(other.imag)]))
        other = self._lazy(other, what)
        return other if other.is_complex else other.real2complex()

    def _op(self, name, operands=(), attrs=(), what=None):
        if name not in COMPLEX_OPS:
            raise TypeError(f"{what or name} is not defined for complex LazyTensors (complex operations: +, -, *, /, "
                            "exp, conj, real, imag, angle, abs, sum(-1), and Sum reductions)")
        return super()._op(name, operands, attrs, what)

    # ---- arithmetic -----------------------------------------------------------------------
    def _add_like(self, name, other, what, reflected=False):
        other = self._cplx(other, what)
        a, b = (other, self) if reflected else (self, other)
        if a.ndim != b.ndim:  # a complex scalar repeated to the other's dimension
            if 1 not in (a.ndim, b.ndim):
                raise ValueError(f"{what}: incompatible complex dimensions {a.ndim} and {b.ndim}")
            if a.ndim == 1:
                a = a._op("ComplexSumT", [], [2 * b.ndim], what=what)
            else:
                b = b._op("ComplexSumT", [], [2 * a.ndim], what=what)
        return self._complex(a._op(name, [b], what=what))

    def __add__(self, other):
        return self._add_like("Add", other, "+")

    def __radd__(self, other):
        return self._add_like("Add", other, "+", reflected=True)

    def __sub__(self, other):
        return self._add_like("Subtract", other, "-")

    def __rsub__(self, other):
        return self._add_like("Subtract", other, "-", reflected=True)

    def __mul__(self, other):
        return self._op("ComplexMult", [self._cplx(other, "*")], what="*")

    def __rmul__(self, other):
        return self._cplx(other, "*")._op("ComplexMult", [self], what="*")

    def __truediv__(self, other):
        return self._op("ComplexDivide", [self._cplx(other, "/")], what="/")

    def __rtruediv__(self, other):
        return self._cplx(other, "/")._op("ComplexDivide", [self], what="/")

    def __neg__(self):
        return self._op("Minus")

    # ---- complex functions ----------------------------------------------------------------------
    def exp(self):
        return self._op("ComplexExp")

    def conj(self):
        return self._op("Conj")

    def _to_real(self, key):
        return self._real(self)._op(REAL_RESULTS[key])

    @property
    def real(self):
        return self._to_real("real")

    @property
    def imag(self):
        return self._to_real("imag")

    def angle(self):
        return self._to_real("angle")

    def abs(self):
        return self._to_real("abs")

    __abs__ = abs

    def sqnorm2(self):
        """Σ |z_k|^2, a real scalar."""
        return self._to_real("sqnorm").sum(-1)

    def sum(self, axis=-1, dim=None, **kwargs):
        if dim is not None:
            axis = dim
        if axis in (-1, len(self._shape) - 1):
            return self._op("ComplexSum")
        return self._reduce("Sum", axis, None, what="sum", **kwargs)

    def _reduce(self, op, axis, dim, other=None, opt_arg=None, call=True, what=None, **kwargs):
        if op != "Sum":
            raise TypeError(f"{what or op}: complex LazyTensors have Sum reductions only (sum(dim), @)")
        return super()._reduce(op, axis, dim, other, opt_arg, call, what, **kwargs)

    def _reduction_output(self, out):
        return self._arrays.real_to_complex(out)
