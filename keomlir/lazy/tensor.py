"""LazyTensor: symbolic (M, N, D) tensors built with operators, reduced into arrays.

The NumPy and torch LazyTensors (`keomlir.numpy.LazyTensor`, `keomlir.torch.LazyTensor`)
are subclasses of `GenericLazyTensor` that set its array adapter (`_arrays`), its
`genred_class` and its `kernel_solve_class`.  A LazyTensor is a small expression tree
(keomlir/lazy/tree.py) whose leaves are arrays (i-variables, j-variables, parameters),
symbolic variables `Vi(k, d)` and constants.  Every operator checks dimensions with the
IR's own rule (`keomlir.ir.ops.make`), so a LazyTensor that builds is a formula that
compiles; a reduction (keomlir/lazy/reductions.py) compiles its IR directly.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..backends.launch import DTYPES
from ..ir.node import DimensionError
from ..ir.ops import OPS
from .complex import is_complex_operand
from .reductions import LazyReduction, ReductionMethods
from .surface import SurfaceMethods
from .tree import (formula_text, is_int, is_number, leaf_data, leaf_float, leaf_int, leaf_symb, op_node,
                   symbolic_leaves)

FLOAT_DTYPES = DTYPES  # float16, bfloat16 (torch, or NumPy with ml_dtypes), float32, float64
_OPERATORS = {"+": "Add", "-": "Subtract", "*": "Mult", "/": "Divide", "|": "Scalprod",
              "==": "Equal", "!=": "NotEqual", "<": "LessThan", ">": "GreaterThan",
              "<=": "LessOrEqual", ">=": "GreaterOrEqual"}

def _scalar_equals(x, value):
    return is_number(x) and not isinstance(x, np.ndarray) and x == value


def _promotes_to_complex(method):
    """A real LazyTensor's operator met with a complex operand: made complex first."""
    @functools.wraps(method)
    def run(self, other):
        if not self.is_complex and self._complex_class is not None and is_complex_operand(self._arrays, other):
            return getattr(self.real2complex(), method.__name__)(other)
        return method(self, other)

    return run


# ---- LazyTensor ---------------------------------------------------------------------------


class GenericLazyTensor(SurfaceMethods, ReductionMethods):
    """A symbolic tensor of shape `(*batch, M, N, D)` (see the module docstring).

    Build it with `LazyTensor(x[:, None, :])` (an i-variable), `LazyTensor(y[None, :, :])`
    (a j-variable), `LazyTensor(p)` for a 1-d parameter, `Vi(x)`, `Vj(y)`, `Pm(p)` for
    2-d / 1-d arrays, `Vi(k, d)` for a symbolic variable given at call time, or a Python
    number; combine with operators and methods; reduce with `.sum(dim)`, `.logsumexp(dim)`,
    `.min(dim)`, `.argKmin(K, dim)`..., `K @ v` or `K.solve(b, alpha)`.
    """

    _arrays = None  # the array adapter (keomlir.arrays), set by a front end with its genred_class and
    # kernel_solve_class
    ranges = None  # block-sparse `ranges` 6-tuple for reductions (pykeops's `K_ij.ranges = ...`)
    __array_ufunc__ = None  # NumPy defers `array + lazy` to LazyTensor.__radd__
    __GenericLazyTensor__ = True

    _real_class = _complex_class = None  # a front end's LazyTensor and ComplexLazyTensor
    is_complex = False

    def __init_subclass__(cls, **kwargs):
        """A complex subclass (ComplexMixin) registers itself with its real base class."""
        super().__init_subclass__(**kwargs)
        if cls.is_complex:
            real = next(b for b in cls.__mro__[1:] if issubclass(b, GenericLazyTensor) and not b.is_complex)
            real._real_class, real._complex_class = real, cls

    def __new__(cls, x=None, axis=None):
        """A complex array makes a ComplexLazyTensor, anything else a (real) LazyTensor."""
        if cls._complex_class is not None:
            complex_data = cls._arrays.is_complex(x)
            if cls is cls._complex_class and not complex_data:
                raise TypeError(f"ComplexLazyTensor: expected a complex array, got {type(x).__name__}"
                                f"{' of dtype ' + str(x.dtype) if hasattr(x, 'dtype') else ''}; real data makes a "
                                "LazyTensor (then .real2complex())")
            if complex_data:
                cls = cls._complex_class
        return object.__new__(cls)

    def __init__(self, x=None, axis=None):
        self._sym = None
        self.ni = self.nj = None
        self.batchdims = None
        self._dtype = None
        self._device = None
        if x is None:
            return
        arrays = self._arrays
        if isinstance(x, GenericLazyTensor):
            raise TypeError("LazyTensor(x): x is already a LazyTensor")
        if isinstance(x, LazyReduction):
            raise TypeError("LazyTensor(x): x is a reduced LazyTensor (the result of a symbolic reduction); "
                            "call it on arrays first")
        if isinstance(x, tuple):
            if len(x) != 3 or not all(is_int(v) for v in x):
                raise ValueError(f"LazyTensor(tuple) needs a triple of integers (ind, dim, cat), got {x!r}")
            if axis is not None:
                raise ValueError("LazyTensor((ind, dim, cat)): do not give axis with a symbolic variable")
            ind, dim, cat = (int(v) for v in x)
            if ind < 0 or dim < 1 or cat not in (0, 1, 2):
                raise ValueError(f"LazyTensor((ind, dim, cat)): need ind >= 0, dim >= 1 and cat in 0, 1, 2; "
                                 f"got {x!r}")
            self._sym = leaf_symb(ind, dim, cat)
            return
        if is_int(x):
            if axis not in (None, 2):
                raise ValueError(f"LazyTensor({x}): an integer constant takes no axis (or axis=2)")
            self._sym = leaf_int(int(x))
            return
        if is_number(x) and not arrays.is_array(x) and not isinstance(x, np.ndarray):
            x = [float(x)]
        if isinstance(x, list):
            if axis not in (None, 2):
                raise ValueError("LazyTensor(list): a list of numbers is a parameter vector; axis must be None or 2")
            if not x or not all(is_number(v) for v in x):
                raise TypeError("LazyTensor(list): expected a non-empty list of numbers")
            self._sym = leaf_float(x)
            return
        if arrays.is_complex(x):  # interleaved real pairs: a complex (..., D) is a real (..., 2D)
            x = arrays.complex_to_real(x)
        if not arrays.is_array(x):
            other = " (mixing NumPy and torch is not supported)" if _is_foreign_array(x) else ""
            raise TypeError(f"{type(self).__module__}.LazyTensor: expected a {arrays.name} array, a number, a list "
                            f"of numbers or a triple (ind, dim, cat), got {type(x).__module__}.{type(x).__name__}"
                            f"{other}")
        dtype = arrays.dtype(x)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"LazyTensor: arrays must be float16, bfloat16, float32 or float64, got {dtype}")
        self._dtype, self._device = dtype, arrays.device(x)
        shape = tuple(x.shape)
        if len(shape) == 0:
            x, shape = x.reshape(1), (1,)
        if len(shape) >= 3:
            if axis is not None:
                raise ValueError(f"LazyTensor: do not give axis with an array of shape {shape}: the axis is "
                                 "read from its shape, (..., M, 1, D), (..., 1, N, D) or (..., 1, 1, D)")
            lead, (m, n, d) = shape[:-3], shape[-3:]
            if m == 1 and n == 1:
                x, cat = x.reshape(lead + (d,)), 2
            elif m == 1:
                x, cat = x.reshape(lead + (n, d)), 1
            elif n == 1:
                x, cat = x.reshape(lead + (m, d)), 0
            else:
                raise ValueError(f"LazyTensor: an array of shape {shape} must be (..., M, 1, D) for an i-variable, "
                                 "(..., 1, N, D) for a j-variable or (..., 1, 1, D) for a parameter")
            self.batchdims = lead or None
        elif len(shape) == 2 and axis != 2:
            if axis not in (0, 1) or isinstance(axis, bool):
                raise ValueError(f"LazyTensor: a 2-d array (shape {shape}) needs axis=0 (indexed by i, as Vi) "
                                 f"or axis=1 (indexed by j, as Vj), got axis={axis!r}")
            cat = int(axis)
        else:
            if axis not in (None, 2):
                raise ValueError(f"LazyTensor: a 1-d array (shape {shape}) is a parameter; axis must be None or 2")
            cat = 2
            self.batchdims = tuple(shape[:-1]) or None
        d = x.shape[-1]
        if d < 1:
            raise ValueError(f"LazyTensor: the last dimension of shape {shape} must be at least 1")
        if cat == 0:
            self.ni = x.shape[-2]
        elif cat == 1:
            self.nj = x.shape[-2]
        self._sym = leaf_data(x, d, cat)

    # ---- construction helpers -----------------------------------------------------------
    @classmethod
    def _wrap(cls, sym, meta, ranges=None):
        res = object.__new__(cls)
        res._sym = sym
        res.ni, res.nj, res.batchdims, res._dtype, res._device = meta
        res.ranges = ranges
        return res

    def _meta(self):
        return (self.ni, self.nj, self.batchdims, self._dtype, self._device)

    def lt_constructor(self, x=None, axis=None):
        """A LazyTensor of x: complex when x is complex, whatever self is."""
        return (self._real_class if self.is_complex else type(self))(x, axis)

    def _lazy(self, x, what="operand"):
        if isinstance(x, GenericLazyTensor):
            if type(x)._arrays is not type(self)._arrays:
                raise TypeError(f"cannot combine a {self._arrays.name} LazyTensor with a {x._arrays.name} LazyTensor")
            return x
        if isinstance(x, LazyReduction):
            raise TypeError(f"{what}: a reduced LazyTensor cannot be an operand; call it on arrays first")
        return self.lt_constructor(x)

    def _join(self, others, what):
        ni, nj, batch, dtype, device = self._meta()
        for o in others:
            if o.ni is not None:
                if ni is not None and ni != o.ni:
                    raise ValueError(f"{what}: incompatible numbers of i-indexed rows, M={ni} and M={o.ni}")
                ni = o.ni
            if o.nj is not None:
                if nj is not None and nj != o.nj:
                    raise ValueError(f"{what}: incompatible numbers of j-indexed rows, N={nj} and N={o.nj}")
                nj = o.nj
            if o._dtype is not None:
                if dtype is not None and dtype != o._dtype:
                    raise TypeError(f"{what}: LazyTensors of different dtypes, {dtype} and {o._dtype} "
                                    "(keomlir never converts: cast the arrays first)")
                dtype = o._dtype
            if o._device is not None:
                if device is not None and str(device) != str(o._device):
                    raise ValueError(f"{what}: LazyTensors on different devices, {device} and {o._device}")
                device = o._device
            batch = _broadcast_batch(batch, o.batchdims, what)
        return (ni, nj, batch, dtype, device)

    def _op(self, name, operands=(), attrs=(), what=None):
        """self op operands: merge the metadata, check dimensions with the IR's rule."""
        what = what or name
        operands = [self._lazy(o, what) for o in operands]
        meta = self._join(operands, what)
        all_ops = [self] + operands
        try:
            sym = op_node(name, [o._sym for o in all_ops], attrs)
        except DimensionError as e:
            dims = ", ".join(str(o.ndim) for o in all_ops)
            raise ValueError(f"{what}: incompatible dimensions ({dims}): {e}") from None
        res = self._wrap(sym, meta, next((o.ranges for o in all_ops if o.ranges is not None), None))
        res.backend = next((o.backend for o in all_ops if o.backend is not None), None)
        return res

    def _op_first(self, name, first, rest=(), attrs=(), what=None):
        """An operation whose first operand is `first` (for reflected operators)."""
        first = self._lazy(first, what or name)
        return first._op(name, [self, *rest], attrs, what)

    def unary(self, operation, dimres=None, opt_arg=None, opt_arg2=None):
        """`Operation(self[, opt_arg[, opt_arg2]])` for any operation of the formula language."""
        attrs = [a._sym if isinstance(a, GenericLazyTensor) else a for a in (opt_arg, opt_arg2) if a is not None]
        res = self._op(_check_op(operation), [], attrs)
        _check_dimres(res, dimres, operation)
        return res

    def binary(self, other, operation, is_operator=False, dimres=None, dimcheck="sameor1", opt_arg=None,
               opt_pos="last", rversion=False):
        """`Operation(self, other[, opt_arg])` (or `self op other` for `+ - * / | < ...`)."""
        name = _OPERATORS.get(operation, operation)
        _check_op(name)
        other = self._lazy(other, name)
        if dimcheck == "same" and self.ndim != other.ndim:
            raise ValueError(f"{name} expects operands of the same dimension, got {self.ndim} and {other.ndim}")
        a, b = (other, self) if rversion else (self, other)
        # attributes go where the operation's signature puts them (Grad(f, v, e): 'middle')
        attrs = [] if opt_arg is None else [opt_arg._sym if isinstance(opt_arg, GenericLazyTensor) else opt_arg]
        res = a._op(name, [b], attrs)
        _check_dimres(res, dimres, operation)
        return res

    def ternary(self, other1, other2, operation, dimres=None, dimcheck="sameor1", opt_arg=None):
        """`Operation(self, other1, other2[, opt_arg])`."""
        attrs = [] if opt_arg is None else [opt_arg]
        res = self._op(_check_op(operation), [other1, other2], attrs)
        _check_dimres(res, dimres, operation)
        return res

    def addop(self, other, **kwargs):
        return self.binary(other, "+", is_operator=True, **kwargs)

    def subop(self, other, **kwargs):
        return self.binary(other, "-", is_operator=True, **kwargs)

    def mulop(self, other, **kwargs):
        return self.binary(other, "*", is_operator=True, **kwargs)

    def divop(self, other, **kwargs):
        return self.binary(other, "/", is_operator=True, **kwargs)

    def new_variable_index(self):
        """The first index free for a new symbolic variable."""
        symbolic = symbolic_leaves(self._sym)
        return 1 + max(symbolic) if symbolic else 0

    def reduction(self, reduction_op, other=None, opt_arg=None, axis=None, dim=None, call=True, **kwargs):
        """Any reduction by name (`Sum`, `LogSumExp`, `KMin`...), `other` its formula2."""
        return self._reduce(reduction_op, axis, dim, other=other, opt_arg=opt_arg, call=call, **kwargs)

    # ---- properties --------------------------------------------------------------------------
    @property
    def ndim(self):
        """The inner dimension D of the (..., M, N, D) symbolic tensor (pykeops's meaning)."""
        return self._sym.dim

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def nbatchdims(self):
        return 0 if self.batchdims is None else len(self.batchdims)

    @property
    def _shape(self):
        batch = () if self.batchdims is None else tuple(self.batchdims)
        return batch + (1 if self.ni is None else self.ni, 1 if self.nj is None else self.nj, self.ndim)

    @property
    def shape(self):
        s = self._shape
        return s[:-1] if s[-1] == 1 else s

    def dim(self):
        """The number of dimensions of the symbolic tensor, as torch's `dim()`."""
        return len(self._shape)

    def __str__(self):
        f, _, _, symbolic = self._ir()
        text = f"KeOps LazyTensor\n    formula: {formula_text(f)}"
        if symbolic:
            text += "\n    symbolic variables: " + ", ".join(
                f"Var({k},{s.dim},{s.cat})" for k, s in sorted(symbolic.items()))
        text += f"\n    shape: {self.shape}"
        if self._dtype is not None:
            text += f"\n    dtype: {self._dtype}"
        return text

    __repr__ = __str__

    def __call__(self, *args, **kwargs):
        raise ValueError("a LazyTensor is called only after a reduction (e.g. K.sum(dim=1) with symbolic "
                         "variables); reduce it first")

    # ---- arithmetic -------------------------------------------------------------------------
    @_promotes_to_complex
    def __add__(self, other):
        if _scalar_equals(other, 0):
            return self
        return self._op("Add", [other], what="+")

    @_promotes_to_complex
    def __radd__(self, other):
        if _scalar_equals(other, 0):
            return self
        return self._op_first("Add", other, what="+")

    @_promotes_to_complex
    def __sub__(self, other):
        if _scalar_equals(other, 0):
            return self
        return self._op("Subtract", [other], what="-")

    @_promotes_to_complex
    def __rsub__(self, other):
        if _scalar_equals(other, 0):
            return -self
        return self._op_first("Subtract", other, what="-")

    @_promotes_to_complex
    def __mul__(self, other):
        if _scalar_equals(other, 1):
            return self
        if _scalar_equals(other, -1):
            return -self
        return self._op("Mult", [other], what="*")

    @_promotes_to_complex
    def __rmul__(self, other):
        if _scalar_equals(other, 1):
            return self
        if _scalar_equals(other, -1):
            return -self
        return self._op_first("Mult", other, what="*")

    @_promotes_to_complex
    def __truediv__(self, other):
        if _scalar_equals(other, 1):
            return self
        return self._op("Divide", [other], what="/")

    @_promotes_to_complex
    def __rtruediv__(self, other):
        if _scalar_equals(other, 1):
            return self._op("Inv")
        return self._op_first("Divide", other, what="/")

    def __or__(self, other):
        """`(x | y)`: the scalar product of two vectors of the same dimension."""
        other = self._lazy(other, "|")
        if other.ndim != self.ndim:
            raise ValueError(f"(x | y) needs operands of the same dimension, got {self.ndim} and {other.ndim}")
        return self._op("Scalprod", [other], what="|")

    def __ror__(self, other):
        other = self._lazy(other, "|")
        return other.__or__(self)

    def __neg__(self):
        return self._op("Minus")

    def __pos__(self):
        return self

    def __abs__(self):
        return self._op("Abs")

    def abs(self):
        return self._op("Abs")

    def __pow__(self, other):
        if is_int(other):
            return self._op("Square") if other == 2 else self._op("Pow", attrs=[int(other)], what="**")
        if is_number(other):
            if other == 0.5:
                return self._op("Sqrt")
            if other == -0.5:
                return self._op("Rsqrt")
            if float(other).is_integer():
                return self ** int(other)
        other = self._lazy(other, "**")
        if other.ndim not in (1, self.ndim):
            raise ValueError(f"x ** y: the exponent must have dimension 1 or {self.ndim}, got {other.ndim}")
        return self._op("Powf", [other], what="**")

    def __rpow__(self, other):
        return self._op_first("Powf", other, what="**")

    def power(self, other):
        return self ** other

    def square(self):
        return self._op("Square")

    def sqrt(self):
        return self._op("Sqrt")

    def rsqrt(self):
        return self._op("Rsqrt")

    # comparisons: 1 where true, 0 elsewhere
    def __eq__(self, other):
        return self._op("Equal", [other], what="==")

    def __ne__(self, other):
        return self._op("NotEqual", [other], what="!=")

    def __lt__(self, other):
        return self._op("LessThan", [other], what="<")

    def __gt__(self, other):
        return self._op("GreaterThan", [other], what=">")

    def __le__(self, other):
        return self._op("LessOrEqual", [other], what="<=")

    def __ge__(self, other):
        return self._op("GreaterOrEqual", [other], what=">=")

    __hash__ = object.__hash__

    # ---- complex numbers (keomlir/lazy/complex.py) -------------------------------------------------
    def _made_complex(self, name):
        if self._complex_class is None:
            raise TypeError("this LazyTensor class has no complex counterpart")
        res = self._op(name)
        return self._complex_class._wrap(res._sym, res._meta(), res.ranges)

    def real2complex(self):
        """x + 0i: a complex LazyTensor of the same dimension."""
        return self._made_complex("Real2Complex")

    def imag2complex(self):
        """0 + xi."""
        return self._made_complex("Imag2Complex")

    def exp1j(self):
        """exp(i x) = cos x + i sin x."""
        return self._made_complex("ComplexExp1j")

    def _reduction_output(self, out):
        return out

    # ---- element-wise functions -----------------------------------------------------------------
    def exp(self):
        return self._op("Exp")

    def log(self):
        return self._op("Log")

    def xlogx(self):
        return self._op("XLogX")

    def cos(self):
        return self._op("Cos")

    def sin(self):
        return self._op("Sin")

    def sinxdivx(self):
        return self._op("SinXDivX")

    def sinc(self):
        """sin(pi x) / (pi x)."""
        return (math.pi * self).sinxdivx()

    def asin(self):
        return self._op("Asin")

    def acos(self):
        return self._op("Acos")

    def atan(self):
        return self._op("Atan")

    def atan2(self, other):
        """`y.atan2(x)`: the angle of (x, y), element-wise."""
        return self._op("Atan2", [other], what="atan2")

    def inv(self):
        return self._op("Inv")

    def floor(self):
        return self._op("Floor")

    def sign(self):
        return self._op("Sign")

    def step(self):
        return self._op("Step")

    def relu(self):
        return self._op("ReLU")

    def clamp(self, other1, other2):
        """Clamp into [other1, other2]; integers bounds use ClampInt."""
        if is_int(other1) and is_int(other2):
            return self._op("ClampInt", attrs=[int(other1), int(other2)], what="clamp")
        return self._op("Clamp", [other1, other2], what="clamp")

    def ifelse(self, other1, other2):
        """other1 where self >= 0, other2 elsewhere."""
        return self._op("IfElse", [other1, other2], what="ifelse")

    def mod(self, modulus, offset=0):
        """self - modulus * floor((self - offset) / modulus)."""
        return self._op("Mod", [modulus, offset], what="mod")

    def round(self, other=0):
        """Round to `other` decimals (halves away from zero)."""
        if not is_int(other):
            raise ValueError(f"round(d): d must be an integer, got {other!r}")
        return self._op("Round", attrs=[int(other)], what="round")

    # ---- vector operations -----------------------------------------------------------------------
    def sqnorm2(self):
        return self._op("SqNorm2")

    def norm2(self):
        return self._op("Norm2")

    def norm(self, dim):
        if dim not in (-1, len(self._shape) - 1):
            raise ValueError(f"norm(dim): LazyTensors have norms over their last dimension only (-1), got {dim}")
        return self.norm2()

    def normalize(self):
        return self._op("Normalize")

    def sqdist(self, other):
        return self._op("SqDist", [other], what="sqdist")

    def weightedsqnorm(self, other):
        """`x.weightedsqnorm(s)`: s scalar, diagonal (D) or full symmetric (D*D) weights."""
        other = self._lazy(other, "weightedsqnorm")
        if other.ndim not in (1, self.ndim, self.ndim ** 2):
            raise ValueError(f"weightedsqnorm: weights must have dimension 1, D or D*D (D={self.ndim}), "
                             f"got {other.ndim}")
        return self._op_first("WeightedSqNorm", other, what="weightedsqnorm")

    def weightedsqdist(self, g, s):
        """`x.weightedsqdist(y, s)` = `(x - y).weightedsqnorm(s)`."""
        return (self - g).weightedsqnorm(s)

    def elem(self, i):
        if not is_int(i):
            raise ValueError(f"elem(i): i must be an integer, got {i!r}")
        if not 0 <= i < self.ndim:
            raise ValueError(f"elem(i): index {i} is out of bounds [0, {self.ndim})")
        return self._op("Elem", attrs=[int(i)], what="elem")

    def extract(self, i, d):
        if not (is_int(i) and is_int(d)):
            raise ValueError(f"extract(i, d): integers expected, got {i!r}, {d!r}")
        if not 0 <= i < self.ndim or d < 1 or i + d > self.ndim:
            raise ValueError(f"extract({i}, {d}): the range [{i}, {i + d}) is not inside [0, {self.ndim})")
        return self._op("Extract", attrs=[int(i), int(d)], what="extract")

    def __getitem__(self, key):
        """`x[k]` (elem), `x[k:l]` (extract), also as `x[..., k]` or `x[:, :, k:l]`."""
        if isinstance(key, tuple):
            rest = key[:-1]
            full = (slice(None),) * (len(self._shape) - 1)
            if not (rest == full or (len(rest) >= 1 and rest[0] is Ellipsis
                                     and all(k == slice(None) for k in rest[1:]))):
                raise ValueError("LazyTensors are indexed along their last dimension only: x[..., k] or x[k:l]")
            key = key[-1]
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise ValueError("LazyTensor slices take no step")
            start = 0 if key.start is None else key.start
            stop = self.ndim if key.stop is None else key.stop
            if not (is_int(start) and is_int(stop)):
                raise ValueError(f"LazyTensor slices take integers, got {key!r}")
            start, stop = (v + self.ndim if v < 0 else v for v in (start, stop))
            return self.extract(int(start), int(stop - start))
        if is_int(key):
            k = int(key)
            return self.elem(k + self.ndim if k < 0 else k)
        raise ValueError(f"LazyTensors are indexed by integers and slices, got {key!r}")

    def one_hot(self, D):
        if not is_int(D):
            raise ValueError(f"one_hot(D): D must be an integer, got {D!r}")
        if self.ndim != 1:
            raise ValueError(f"one_hot(D) applies to scalar LazyTensors, got dimension {self.ndim}")
        return self._op("OneHot", attrs=[int(D)], what="one_hot")

    def concat(self, other):
        return self._op("Concat", [other], what="concat")

    @staticmethod
    def concatenate(tuple_of_lt, axis=-1):
        if not isinstance(tuple_of_lt, (tuple, list)) or not tuple_of_lt:
            raise ValueError("concatenate expects a non-empty tuple of LazyTensors")
        first = tuple_of_lt[0]
        if axis not in (-1, len(first._shape) - 1):
            raise ValueError("LazyTensors are concatenated along their last dimension only")
        res = first
        for other in tuple_of_lt[1:]:
            res = res.concat(other)
        return res

    @staticmethod
    def cat(tuple_of_lt, dim):
        return GenericLazyTensor.concatenate(tuple_of_lt, dim)

    def matvecmult(self, other):
        """self (A*B, a matrix stored row by row) times other (B)."""
        return self._op("MatVecMult", [other], what="matvecmult")

    def vecmatmult(self, other):
        """self (A) times other (A*B)."""
        return self._op("VecMatMult", [other], what="vecmatmult")

    def tensorprod(self, other):
        return self._op("TensorProd", [other], what="tensorprod")

    def keops_tensordot(self, other, dimfa, dimfb, contfa, contfb, *args):
        """TensorDot on the inner dimensions: self of shape dimfa, other of shape dimfb,
        contracted over axes contfa / contfb; `args` an optional permutation."""
        attrs = [_int_tuple(v, "keops_tensordot") for v in (dimfa, dimfb, contfa, contfb) + args]
        return self._op("TensorDot", [other], attrs, what="keops_tensordot")

    def keops_kron(self, other, dimfself, dimfother):
        attrs = [_int_tuple(v, "keops_kron") for v in (dimfself, dimfother)]
        return self._op("Kron", [other], attrs, what="keops_kron")

    # ---- derivatives -------------------------------------------------------------------------------
    def _variable(self, v, what):
        v = self._lazy(v, what)
        if v._sym.kind not in ("data", "symb"):
            raise ValueError(f"{what}: differentiate with respect to a variable (Vi, Vj, Pm or LazyTensor(x)), "
                             f"not an expression")
        return v

    def grad(self, other, gradin):
        """Grad(self, other, gradin): the gradient of self in the variable `other`,
        applied to `gradin` (of the dimension of self)."""
        v = self._variable(other, "grad")
        gradin = self._lazy(gradin, "grad")
        if gradin.ndim != self.ndim:
            raise ValueError(f"grad: gradin must have the dimension of the formula ({self.ndim}), "
                             f"got {gradin.ndim}")
        meta = self._join([v], "grad")
        res = self._wrap(self._sym, meta, self.ranges)._op("Grad", [gradin], [v._sym], what="grad")
        return res

    def diff(self, other, diffin):
        """Diff(self, other, diffin): the differential of self in `other`, applied to `diffin`."""
        v = self._variable(other, "diff")
        meta = self._join([v], "diff")
        return self._wrap(self._sym, meta, self.ranges)._op("Diff", [diffin], [v._sym], what="diff")

    def grad_matrix(self, other):
        v = self._variable(other, "grad_matrix")
        meta = self._join([v], "grad_matrix")
        return self._wrap(self._sym, meta, self.ranges)._op("GradMatrix", [], [v._sym], what="grad_matrix")

    def divergence(self, var):
        v = self._variable(var, "divergence")
        meta = self._join([v], "divergence")
        return self._wrap(self._sym, meta, self.ranges)._op("Divergence", [], [v._sym], what="divergence")

    def laplacian(self, var):
        v = self._variable(var, "laplacian")
        meta = self._join([v], "laplacian")
        return self._wrap(self._sym, meta, self.ranges)._op("Laplacian", [], [v._sym], what="laplacian")

def _check_op(name):
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}")
    return name


def _check_dimres(res, dimres, operation):
    if dimres and res.ndim != dimres:
        raise ValueError(f"{operation}: the result has dimension {res.ndim}, not {dimres}")


def _int_tuple(v, what):
    if is_int(v):
        return (int(v),)
    try:
        values = tuple(v)
    except TypeError:
        raise ValueError(f"{what}: expected a tuple of integers, got {v!r}") from None
    if not all(is_int(a) for a in values):
        raise ValueError(f"{what}: expected a tuple of integers, got {v!r}")
    return tuple(int(a) for a in values)


def _broadcast_batch(a, b, what):
    if a is None or b is None:
        return a if b is None else b
    n = max(len(a), len(b))
    a2, b2 = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a2, b2):
        if x != y and 1 not in (x, y):
            raise ValueError(f"{what}: batch dimensions {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(out)


def _is_foreign_array(x):
    mod = type(x).__module__
    return mod.startswith("torch") or mod.startswith("numpy")
