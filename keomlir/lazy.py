"""LazyTensor: symbolic (M, N, D) tensors built with operators, reduced into arrays.

The NumPy and torch LazyTensors (`keomlir.numpy.LazyTensor`, `keomlir.torch.LazyTensor`)
share this core.  A LazyTensor is a small expression tree whose leaves are arrays
(i-variables, j-variables, parameters), symbolic variables `Vi(k, d)` and constants.
Every operator checks dimensions with the IR's own rule (`keomlir.ir.ops.make`), so a
LazyTensor that builds is a formula that compiles.  A reduction renders the tree to a
formula string with inline `Var(pos, dim, cat)` variables and runs it through the
framework's `Genred` (or `KernelSolve`): one compiler path for strings and LazyTensors.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from .ir.node import DimensionError
from .ir.ops import OPS, make
from .lazy_complex import is_complex_operand

FLOAT_DTYPES = ("float16", "float32", "float64")
_INFIX = {"Add": "+", "Subtract": "-", "Mult": "*", "Divide": "/"}
_OPERATORS = {"+": "Add", "-": "Subtract", "*": "Mult", "/": "Divide", "|": "Scalprod",
              "==": "Equal", "!=": "NotEqual", "<": "LessThan", ">": "GreaterThan",
              "<=": "LessOrEqual", ">=": "GreaterOrEqual"}
_INIT_KWARGS = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim",
                "use_fast_math", "optional_flags", "cuda_type", "dtype", "passes")
_IGNORED_INIT = ("enable_chunks", "rec_multVar_highdim", "use_fast_math", "optional_flags", "cuda_type", "dtype")


# ---- the expression tree ---------------------------------------------------------------


class _Sym:
    """One node of a LazyTensor's tree.  kind: 'data' (an array: cat 0 i, 1 j, 2
    parameter), 'symb' (Var(ind, dim, cat) given at call time), 'int' (IntCst),
    'float' (a parameter made of Python numbers, an array once the dtype is known) or
    'op'.  `ir` is the matching IR node, whose dimension rule checked the operands."""

    __slots__ = ("kind", "name", "args", "attrs", "data", "cat", "value", "ir")

    def __init__(self, kind, ir, name=None, args=(), attrs=(), data=None, cat=None, value=None):
        self.kind, self.ir, self.name, self.args, self.attrs = kind, ir, name, tuple(args), tuple(attrs)
        self.data, self.cat, self.value = data, cat, value

    @property
    def dim(self):
        return self.ir.dim


def _var_ir(dim, cat):
    return make("Var", (), (0, dim, cat))


def _leaf_data(array, dim, cat):
    return _Sym("data", _var_ir(dim, cat), data=array, cat=cat)


def _leaf_symb(ind, dim, cat):
    return _Sym("symb", _var_ir(dim, cat), cat=cat, value=ind)


def _leaf_int(n):
    return _Sym("int", make("IntCst", (), (n,)), value=n)


def _leaf_float(values):
    return _Sym("float", _var_ir(len(values), 2), cat=2, value=tuple(float(v) for v in values))


def _op_node(name, operands, attrs=()):
    """An operation node; attrs in signature order (ints, index tuples, variable leaves)."""
    ir_attrs = [a.ir if isinstance(a, _Sym) else a for a in attrs]
    ir = make(name, [o.ir for o in operands], ir_attrs)  # the IR's dimension rule
    return _Sym("op", ir, name=name, args=operands, attrs=attrs)


def _is_variable(sym):
    return sym.kind in ("data", "symb", "float")


def _swap_ij(sym, memo=None):
    """The tree with i- and j-variables exchanged (transposition)."""
    memo = {} if memo is None else memo
    found = memo.get(id(sym))
    if found is not None:
        return found
    if sym.kind in ("data", "symb") and sym.cat in (0, 1):
        cat = 1 - sym.cat
        res = _Sym(sym.kind, _var_ir(sym.dim, cat), data=sym.data, cat=cat, value=sym.value)
    elif sym.kind == "op":
        args = [_swap_ij(a, memo) for a in sym.args]
        attrs = [_swap_ij(a, memo) if isinstance(a, _Sym) else a for a in sym.attrs]
        res = _op_node(sym.name, args, attrs)
    else:
        res = sym
    memo[id(sym)] = res
    return res


def _walk(sym, seen=None):
    seen = set() if seen is None else seen
    if id(sym) in seen:
        return
    seen.add(id(sym))
    yield sym
    for a in sym.args:
        yield from _walk(a, seen)
    for a in sym.attrs:
        if isinstance(a, _Sym):
            yield from _walk(a, seen)


def _symbolic_leaves(*syms):
    found = {}
    for s in syms:
        if s is None:
            continue
        for node in _walk(s):
            if node.kind == "symb":
                key = node.value
                prev = found.get(key)
                if prev is not None and (prev.dim, prev.cat) != (node.dim, node.cat):
                    raise ValueError(f"symbolic variable {key} is used as Var({key},{prev.dim},{prev.cat}) "
                                     f"and as Var({key},{node.dim},{node.cat})")
                found[key] = node
    return found


class _Renderer:
    """Formula text for one or two trees sharing one argument numbering: symbolic
    variables keep their index, arrays and Python-number parameters are numbered
    after them, in order of first appearance."""

    def __init__(self, first_position, named=False):
        self.next, self.named = first_position, named
        self.positions = {}
        self.leaves = []  # ('data', array) or ('float', values), by position
        self.declared = []  # (pos, dim, cat) of each of them

    def position(self, sym):
        key = (id(sym.data), sym.cat) if sym.kind == "data" else ("float", sym.value)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = self.next
            self.next += 1
            self.leaves.append((sym.kind, sym.data if sym.kind == "data" else sym.value, sym.cat))
            self.declared.append((pos, sym.dim, sym.cat))
        return pos

    def text(self, sym, memo=None):
        memo = {} if memo is None else memo
        found = memo.get(id(sym))
        if found is not None:
            return found
        if sym.kind in ("symb", "data", "float"):
            pos = sym.value if sym.kind == "symb" else self.position(sym)
            res = f"v{pos}" if self.named else f"Var({pos},{sym.dim},{sym.cat})"
        elif sym.kind == "int":
            res = f"IntCst({sym.value})"
        elif sym.name in _INFIX:
            a, b = (self.text(x, memo) for x in sym.args)
            res = f"({a} {_INFIX[sym.name]} {b})"
        elif sym.name == "Scalprod":
            a, b = (self.text(x, memo) for x in sym.args)
            res = f"({a} | {b})"
        else:
            parts, operands, attrs = [], iter(sym.args), iter(sym.attrs)
            for kind in OPS[sym.name].kinds[:len(sym.args) + len(sym.attrs)]:
                if kind == "f":
                    parts.append(self.text(next(operands), memo))
                elif kind == "v":
                    parts.append(self.text(next(attrs), memo))
                elif kind == "n":
                    parts.append("Ind(" + ",".join(str(int(v)) for v in next(attrs)) + ")")
                else:
                    parts.append(str(int(next(attrs))))
            res = f"{sym.name}({', '.join(parts)})"
        memo[id(sym)] = res
        return res


# ---- framework tools --------------------------------------------------------------------


class NumpyTools:
    """What differs between the NumPy and torch LazyTensors."""

    name = "NumPy"

    def is_array(self, x):
        return isinstance(x, np.ndarray)

    def dtype(self, x):
        return str(x.dtype)

    def device(self, x):
        return None

    def array(self, values, dtype, device):
        return np.asarray(values, dtype=dtype)

    def is_complex(self, x):
        return isinstance(x, np.ndarray) and x.dtype.kind == "c"

    def complex_to_real(self, z):
        """(..., D) complex -> (..., 2D) interleaved real pairs."""
        return np.ascontiguousarray(z).view(np.float32 if z.dtype == np.complex64 else np.float64)

    def real_to_complex(self, a):
        return np.ascontiguousarray(a).view(np.complex64 if a.dtype == np.float32 else np.complex128)

    def genred(self, *args, **kwargs):
        from .numpy import Genred

        return Genred(*args, **kwargs)

    def kernel_solve(self, *args, **kwargs):
        from .numpy import KernelSolve

        return KernelSolve(*args, **kwargs)


class TorchTools(NumpyTools):
    name = "torch"

    def is_array(self, x):
        import torch

        return isinstance(x, torch.Tensor)

    def dtype(self, x):
        return str(x.dtype).replace("torch.", "")

    def device(self, x):
        return x.device

    def array(self, values, dtype, device):
        import torch

        return torch.tensor(values, dtype=getattr(torch, dtype), device=device)

    def is_complex(self, x):
        import torch

        return isinstance(x, torch.Tensor) and x.is_complex()

    def complex_to_real(self, z):
        import torch

        return torch.view_as_real(z).reshape(tuple(z.shape[:-1]) + (2 * z.shape[-1],))

    def real_to_complex(self, a):
        import torch

        return torch.view_as_complex(a.reshape(tuple(a.shape[:-1]) + (-1, 2)).contiguous())

    def genred(self, *args, **kwargs):
        from .torch import Genred

        return Genred(*args, **kwargs)

    def kernel_solve(self, *args, **kwargs):
        from .torch import KernelSolve

        return KernelSolve(*args, **kwargs)


NUMPY_TOOLS, TORCH_TOOLS = NumpyTools(), TorchTools()


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (numbers.Real, np.floating, np.integer)) and not isinstance(x, bool)


def _scalar_equals(x, value):
    return _is_number(x) and not isinstance(x, np.ndarray) and x == value


def _promotes_to_complex(method):
    """A real LazyTensor's operator met with a complex operand: made complex first."""
    @functools.wraps(method)
    def run(self, other):
        if not self.is_complex and self._complex_class is not None and is_complex_operand(self._tools, other):
            return getattr(self.real2complex(), method.__name__)(other)
        return method(self, other)

    return run


# ---- LazyTensor ---------------------------------------------------------------------------


class GenericLazyTensor:
    """A symbolic tensor of shape `(*batch, M, N, D)` (see the module docstring).

    Build it with `LazyTensor(x[:, None, :])` (an i-variable), `LazyTensor(y[None, :, :])`
    (a j-variable), `LazyTensor(p)` for a 1-d parameter, `Vi(x)`, `Vj(y)`, `Pm(p)` for
    2-d / 1-d arrays, `Vi(k, d)` for a symbolic variable given at call time, or a Python
    number; combine with operators and methods; reduce with `.sum(dim)`, `.logsumexp(dim)`,
    `.min(dim)`, `.argKmin(K, dim)`..., `K @ v` or `K.solve(b, alpha)`.
    """

    _tools = None  # NUMPY_TOOLS or TORCH_TOOLS, set by the NumPy / torch subclasses
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
            complex_data = cls._tools.is_complex(x)
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
        tools = self._tools
        if isinstance(x, GenericLazyTensor):
            raise TypeError("LazyTensor(x): x is already a LazyTensor")
        if isinstance(x, LazyReduction):
            raise TypeError("LazyTensor(x): x is a reduced LazyTensor (the result of a symbolic reduction); "
                            "call it on arrays first")
        if isinstance(x, tuple):
            if len(x) != 3 or not all(_is_int(v) for v in x):
                raise ValueError(f"LazyTensor(tuple) needs a triple of integers (ind, dim, cat), got {x!r}")
            if axis is not None:
                raise ValueError("LazyTensor((ind, dim, cat)): do not give axis with a symbolic variable")
            ind, dim, cat = (int(v) for v in x)
            if ind < 0 or dim < 1 or cat not in (0, 1, 2):
                raise ValueError(f"LazyTensor((ind, dim, cat)): need ind >= 0, dim >= 1 and cat in 0, 1, 2; "
                                 f"got {x!r}")
            self._sym = _leaf_symb(ind, dim, cat)
            return
        if _is_int(x):
            if axis not in (None, 2):
                raise ValueError(f"LazyTensor({x}): an integer constant takes no axis (or axis=2)")
            self._sym = _leaf_int(int(x))
            return
        if _is_number(x) and not tools.is_array(x) and not isinstance(x, np.ndarray):
            x = [float(x)]
        if isinstance(x, list):
            if axis not in (None, 2):
                raise ValueError("LazyTensor(list): a list of numbers is a parameter vector; axis must be None or 2")
            if not x or not all(_is_number(v) for v in x):
                raise TypeError("LazyTensor(list): expected a non-empty list of numbers")
            self._sym = _leaf_float(x)
            return
        if tools.is_complex(x):  # interleaved real pairs: a complex (..., D) is a real (..., 2D)
            x = tools.complex_to_real(x)
        if not tools.is_array(x):
            other = " (mixing NumPy and torch is not supported)" if _is_foreign_array(x) else ""
            raise TypeError(f"{type(self).__module__}.LazyTensor: expected a {tools.name} array, a number, a list "
                            f"of numbers or a triple (ind, dim, cat), got {type(x).__module__}.{type(x).__name__}"
                            f"{other}")
        dtype = tools.dtype(x)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"LazyTensor: arrays must be float16, float32 or float64, got {dtype}")
        self._dtype, self._device = dtype, tools.device(x)
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
        self._sym = _leaf_data(x, d, cat)

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
            if type(x)._tools is not type(self)._tools:
                raise TypeError(f"cannot combine a {self._tools.name} LazyTensor with a {x._tools.name} LazyTensor")
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
            sym = _op_node(name, [o._sym for o in all_ops], attrs)
        except DimensionError as e:
            dims = ", ".join(str(o.ndim) for o in all_ops)
            raise ValueError(f"{what}: incompatible dimensions ({dims}): {e}") from None
        return self._wrap(sym, meta, next((o.ranges for o in all_ops if o.ranges is not None), None))

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
        symbolic = _symbolic_leaves(self._sym)
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

    @property
    def formula(self):
        """The formula this LazyTensor renders to (arguments numbered as in a reduction)."""
        return self._render()[0]

    @property
    def variables(self):
        """The arrays behind this LazyTensor, in argument order."""
        formula, _, leaves, _, _ = self._render()
        return tuple(self._materialize(leaves, self._dtype, self._device))

    def _render(self, other=None, named=False):
        """(formula, formula2, leaves, symbolic variables, aliases).  With `named`, the
        variables are written `vK` and every argument is declared as an alias `vK =
        Var(K,dim,cat)` (what the Genreds get: their gradient Genreds, rebuilt from the
        formula alone or with rewritten aliases, then still know every argument)."""
        symbolic = _symbolic_leaves(self._sym, other)
        first = 1 + max(symbolic) if symbolic else 0
        r = _Renderer(first, named)
        memo = {}
        f = r.text(self._sym, memo)
        g = r.text(other, memo) if other is not None else None
        declared = sorted([(k, v.dim, v.cat) for k, v in symbolic.items()] + r.declared)
        aliases = tuple(f"v{k} = Var({k},{d},{c})" for k, d, c in declared)
        return f, g, r.leaves, symbolic, aliases

    def _materialize(self, leaves, dtype, device, nbatch=0):
        """The arrays of the leaves (numbers made arrays of `dtype`), each given the
        full number of batch dimensions (leading 1s), as the batched Genred call wants."""
        out = []
        for kind, value, cat in leaves:
            if kind == "data":
                a = value
            else:
                if dtype is None:
                    raise ValueError("this LazyTensor holds no array: its dtype is unknown")
                a = self._tools.array(value, dtype, device)
            want = nbatch + (1 if cat == 2 else 2)
            if len(a.shape) < want:
                a = a.reshape((1,) * (want - len(a.shape)) + tuple(a.shape))
            out.append(a)
        return out

    def __str__(self):
        f, _, _, symbolic, _ = self._render()
        text = f"KeOps LazyTensor\n    formula: {f}"
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
        if _is_int(other):
            return self._op("Square") if other == 2 else self._op("Pow", attrs=[int(other)], what="**")
        if _is_number(other):
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

    # ---- complex numbers (keomlir/lazy_complex.py) -------------------------------------------------
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
        if _is_int(other1) and _is_int(other2):
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
        if not _is_int(other):
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
        if not _is_int(i):
            raise ValueError(f"elem(i): i must be an integer, got {i!r}")
        if not 0 <= i < self.ndim:
            raise ValueError(f"elem(i): index {i} is out of bounds [0, {self.ndim})")
        return self._op("Elem", attrs=[int(i)], what="elem")

    def extract(self, i, d):
        if not (_is_int(i) and _is_int(d)):
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
            if not (_is_int(start) and _is_int(stop)):
                raise ValueError(f"LazyTensor slices take integers, got {key!r}")
            start, stop = (v + self.ndim if v < 0 else v for v in (start, stop))
            return self.extract(int(start), int(stop - start))
        if _is_int(key):
            k = int(key)
            return self.elem(k + self.ndim if k < 0 else k)
        raise ValueError(f"LazyTensors are indexed by integers and slices, got {key!r}")

    def one_hot(self, D):
        if not _is_int(D):
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

    # ---- reductions --------------------------------------------------------------------------------
    def _reduce(self, op, axis, dim, other=None, opt_arg=None, call=True, what=None, **kwargs):
        what = what or op
        if axis is None:
            axis = dim
        nb = self.nbatchdims
        if axis is None:
            raise ValueError(f"{what}: give the reduction axis, axis=/dim={nb} (over i) or {nb + 1} (over j)")
        if not _is_int(axis) or axis - nb not in (0, 1):
            raise ValueError(f"{what}: axis (or dim) must be {nb} (reduce over i) or {nb + 1} (reduce over j)"
                             f"{' with ' + str(nb) + ' batch dimension(s)' if nb else ''}, got {axis!r}")
        meta = self._meta()
        if other is not None:
            other = self._lazy(other, what)
            meta = self._join([other], what)
        init, call_kwargs = _split_kwargs(kwargs)
        if self.ranges is not None:
            call_kwargs.setdefault("ranges", self.ranges)
        other_sym = other._sym if other is not None else None
        formula, formula2, leaves, symbolic, aliases = self._render(other_sym, named=True)
        shown = self._render(other_sym)[:2]
        red = LazyReduction(self._tools, formula, formula2, aliases, op, int(axis - nb), opt_arg, init,
                            call_kwargs, leaves, len(symbolic), meta, self.ndim, self)
        red.shown = shown
        red.post = self._reduction_output
        if call and not symbolic and meta[3] is not None:
            return red()
        return red

    def sum(self, axis=-1, dim=None, **kwargs):
        """`sum(-1)`: the sum of the vector's coordinates (a LazyTensor); `sum(0)` / `sum(1)`:
        the Sum reduction over i / over j (an array)."""
        if dim is not None:
            axis = dim
        if axis in (-1, len(self._shape) - 1):
            return self._op("Sum")
        return self._reduce("Sum", axis, None, what="sum", **kwargs)

    def sum_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("Sum", axis, dim, what="sum_reduction", **kwargs)

    def logsumexp(self, axis=None, dim=None, weight=None, **kwargs):
        """log Σ exp(self) (self scalar), or log Σ exp(self) * weight with `weight=`."""
        return self._reduce("LogSumExp", axis, dim, other=weight, what="logsumexp", **kwargs)

    def logsumexp_reduction(self, **kwargs):
        return self.logsumexp(**kwargs)

    def sumsoftmaxweight(self, weight, axis=None, dim=None, **kwargs):
        """Σ exp(self) weight / Σ exp(self)."""
        return self._reduce("SumSoftMaxWeight", axis, dim, other=weight, what="sumsoftmaxweight", **kwargs)

    def sumsoftmaxweight_reduction(self, **kwargs):
        return self.sumsoftmaxweight(**kwargs)

    def _unary_or_reduce(self, unary, reduction, axis, dim, kwargs):
        if dim is not None:
            axis = dim
        if axis in (-1, len(self._shape) - 1):
            return self._op(unary)
        return self._reduce(reduction, axis, None, what=reduction.lower(), **kwargs)

    def min(self, axis=-1, dim=None, **kwargs):
        return self._unary_or_reduce("Min", "Min", axis, dim, kwargs)

    def max(self, axis=-1, dim=None, **kwargs):
        return self._unary_or_reduce("Max", "Max", axis, dim, kwargs)

    def argmin(self, axis=-1, dim=None, **kwargs):
        return self._unary_or_reduce("ArgMin", "ArgMin", axis, dim, kwargs)

    def argmax(self, axis=-1, dim=None, **kwargs):
        return self._unary_or_reduce("ArgMax", "ArgMax", axis, dim, kwargs)

    def __min__(self, **kwargs):
        return self.min(**kwargs)

    def __max__(self, **kwargs):
        return self.max(**kwargs)

    def min_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("Min", axis, dim, what="min_reduction", **kwargs)

    def max_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("Max", axis, dim, what="max_reduction", **kwargs)

    def argmin_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("ArgMin", axis, dim, what="argmin_reduction", **kwargs)

    def argmax_reduction(self, axis=None, dim=None, **kwargs):
        return self._reduce("ArgMax", axis, dim, what="argmax_reduction", **kwargs)

    def min_argmin(self, axis=None, dim=None, **kwargs):
        return self._reduce("Min_ArgMin", axis, dim, what="min_argmin", **kwargs)

    def min_argmin_reduction(self, **kwargs):
        return self.min_argmin(**kwargs)

    def max_argmax(self, axis=None, dim=None, **kwargs):
        return self._reduce("Max_ArgMax", axis, dim, what="max_argmax", **kwargs)

    def max_argmax_reduction(self, **kwargs):
        return self.max_argmax(**kwargs)

    def Kmin(self, K, axis=None, dim=None, **kwargs):
        return self._reduce("KMin", axis, dim, opt_arg=K, what="Kmin", **kwargs)

    def Kmin_reduction(self, **kwargs):
        return self.Kmin(**kwargs)

    def argKmin(self, K, axis=None, dim=None, **kwargs):
        return self._reduce("ArgKMin", axis, dim, opt_arg=K, what="argKmin", **kwargs)

    def argKmin_reduction(self, **kwargs):
        return self.argKmin(**kwargs)

    def Kmin_argKmin(self, K, axis=None, dim=None, **kwargs):
        return self._reduce("KMin_ArgKMin", axis, dim, opt_arg=K, what="Kmin_argKmin", **kwargs)

    def Kmin_argKmin_reduction(self, **kwargs):
        return self.Kmin_argKmin(**kwargs)

    # ---- linear algebra ------------------------------------------------------------------------------
    def __matmul__(self, v, **kwargs):
        """`K @ v`: (K * Vj(v)).sum(over j) for a dense v of shape (N,), (N, k) or (..., N, k)."""
        if self.ndim != 1:
            raise ValueError(f"K @ v needs a LazyTensor K of inner dimension 1, here K.shape = {self.shape}")
        if isinstance(v, (GenericLazyTensor, LazyReduction)) or not self._tools.is_array(v):
            raise TypeError(f"K @ v: v must be a {self._tools.name} array, got {type(v).__name__}")
        if len(v.shape) == 0:
            raise ValueError("K @ v: v must have at least one dimension")
        shape = tuple(v.shape)
        newdims = (1, shape[0], 1) if len(shape) == 1 else shape[:-2] + (1,) + shape[-2:]
        kv = self * self.lt_constructor(v.reshape(newdims))
        kv = kv._reduce("Sum", kv.nbatchdims + 1, None, what="@", **kwargs)
        if isinstance(kv, LazyReduction):
            return kv
        return kv.reshape(-1) if len(shape) == 1 else kv

    def matvec(self, v):
        """K @ v, in the dtype of K (for scipy.sparse.linalg.aslinearoperator)."""
        return self @ self._cast(v)

    def rmatvec(self, v):
        return self.T @ self._cast(v)

    def matmat(self, v):
        return self @ self._cast(v)

    def rmatmat(self, v):
        return self.T @ self._cast(v)

    def _cast(self, v):
        if self._dtype is not None and isinstance(v, np.ndarray) and str(v.dtype) != self._dtype:
            return v.astype(self._dtype)
        return v

    def t(self):
        """The transposed symbolic matrix: i- and j-variables exchanged, shape (..., N, M, D)."""
        ni, nj, batch, dtype, device = self._meta()
        ranges = None if self.ranges is None else tuple(self.ranges[3:]) + tuple(self.ranges[:3])  # halves swapped
        return self._wrap(_swap_ij(self._sym), (nj, ni, batch, dtype, device), ranges)

    @property
    def T(self):
        return self.t()

    def solve(self, other, var=None, call=True, alpha=1e-10, eps=1e-6, maxiter=None, x0=None, verbose=False,
              **kwargs):
        """Solve `(alpha Id + K) a = other` by conjugate gradient: `K.solve(b, alpha)` with K
        an (M, M) symbolic matrix of inner dimension 1 (or of the dimension of b), b an
        (M, D) array; all D columns are solved at once.  With `var=` (a symbolic
        variable of self), solves `alpha var + self(var) summed = other` where self is
        linear in var.  (alpha Id + K) must be symmetric positive definite."""
        if isinstance(other, GenericLazyTensor):
            if other._sym.kind != "data" or other._sym.cat not in (0, 1):
                raise ValueError("solve(b): b must be an array, or a LazyTensor made of one (M, D) array")
            b_lazy = other
        else:
            if not self._tools.is_array(other):
                raise TypeError(f"solve(b): b must be a {self._tools.name} array, got {type(other).__name__}")
            shape = tuple(other.shape)
            if len(shape) == 1:
                res = self.solve(other.reshape(shape[0], 1), var, call, alpha, eps, maxiter,
                                 None if x0 is None else x0.reshape(shape[0], 1), verbose, **kwargs)
                return res.reshape(-1) if not isinstance(res, LazyReduction) else res
            if len(shape) == 2:
                b_lazy = self.lt_constructor(other, axis=0)
            else:  # (..., M, D): batch dimensions
                b_lazy = self.lt_constructor(other.reshape(shape[:-1] + (1,) + shape[-1:]))
        axis = 1 - b_lazy._sym.cat  # b indexed by i: the unknown is indexed by j, reduced over j
        symbolic = _symbolic_leaves(self._sym)
        if var is None:
            if self.ndim not in (1, b_lazy.ndim):
                raise ValueError(f"solve: the system has dimension {self.ndim} but b has dimension {b_lazy.ndim} "
                                 "(K must have inner dimension 1 or that of b)")
            index = 1 + max(symbolic) if symbolic else 0
            var = self.lt_constructor((index, b_lazy.ndim, axis))
            system = self * var
        else:
            var = self._lazy(var, "solve")
            if var._sym.kind != "symb":
                raise ValueError("solve(b, var=...): var must be a symbolic variable such as Vj(k, d)")
            if var._sym.cat != axis or var.ndim != b_lazy.ndim:
                raise ValueError(f"solve: var must be Var(k, {b_lazy.ndim}, {axis}), indexed like the unknown, "
                                 f"got Var({var._sym.value}, {var.ndim}, {var._sym.cat})")
            system = self
        if system.ndim != b_lazy.ndim:
            raise ValueError(f"solve: the system has dimension {system.ndim} but b has dimension {b_lazy.ndim}")
        meta = system._join([b_lazy], "solve")
        ni, nj = meta[0], meta[1]
        if ni is not None and nj is not None and ni != nj:
            raise ValueError(f"solve: the kernel matrix must be square, got shape {self.shape}")
        formula, _, leaves, symbolic, aliases = system._render(named=True)
        varind = var._sym.value
        init, call_kwargs = _split_kwargs(kwargs)
        if system.ranges is not None:
            call_kwargs.setdefault("ranges", system.ranges)
        solver = _cached_solver(self._tools, formula, aliases, f"v{varind}", axis, init)
        red = LazySolve(self._tools, solver, formula, varind, axis, b_lazy._sym.data, leaves, symbolic, meta,
                        dict(call_kwargs, alpha=alpha, eps=eps, maxiter=maxiter, x0=x0, verbose=verbose), self)
        if call and len(symbolic) == 1 and meta[3] is not None:
            return red()
        return red


def _check_op(name):
    if name not in OPS:
        raise ValueError(f"unknown operation {name!r}")
    return name


def _check_dimres(res, dimres, operation):
    if dimres and res.ndim != dimres:
        raise ValueError(f"{operation}: the result has dimension {res.ndim}, not {dimres}")


def _int_tuple(v, what):
    if _is_int(v):
        return (int(v),)
    try:
        values = tuple(v)
    except TypeError:
        raise ValueError(f"{what}: expected a tuple of integers, got {v!r}") from None
    if not all(_is_int(a) for a in values):
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


def _split_kwargs(kwargs):
    init, call = {}, {}
    for key, value in kwargs.items():
        if key in _INIT_KWARGS:
            if key not in _IGNORED_INIT:
                init[key] = tuple(value) if isinstance(value, list) else value
        else:
            call[key] = value
    return tuple(sorted(init.items())), call


@functools.lru_cache(maxsize=512)
def _cached_genred(tools, formula, formula2, aliases, op, axis, opt_arg, init):
    return tools.genred(formula, list(aliases), reduction_op=op, axis=axis, opt_arg=opt_arg, formula2=formula2,
                        **dict(init))


@functools.lru_cache(maxsize=128)
def _cached_solver(tools, formula, aliases, varinv, axis, init):
    return tools.kernel_solve(formula, list(aliases), varinv, axis=axis, **dict(init))


def _identity(x):
    return x


class LazyReduction:
    """A reduction of a LazyTensor that still has symbolic variables (or no dtype yet):
    call it with one array per symbolic variable, in the order of their indices."""

    def __init__(self, tools, formula, formula2, aliases, op, axis, opt_arg, init, call_kwargs, leaves, n_symbolic,
                 meta, ndim, source):
        self._tools = tools
        self.formula, self.formula2, self.reduction_op, self.axis, self.opt_arg = formula, formula2, op, axis, opt_arg
        self.kwargs = call_kwargs
        self._init = init
        self._leaves = leaves
        self._n_symbolic = n_symbolic
        self._meta = meta
        self.ndim = ndim
        self._source = source
        self.aliases = aliases
        self.callfun = _cached_genred(tools, formula, formula2, aliases, op, axis, opt_arg, init)
        self.post = _identity  # complex LazyTensors: real pairs back to complex arrays

    @property
    def dtype(self):
        return self._meta[3]

    def __call__(self, *args, **kwargs):
        if len(args) != self._n_symbolic:
            raise ValueError(f"this reduction takes {self._n_symbolic} array(s) for its symbolic variables, "
                             f"got {len(args)}")
        dtype, device = self._meta[3], self._meta[4]
        if dtype is None and args:
            if not self._tools.is_array(args[0]):
                raise TypeError(f"expected {self._tools.name} arrays, got {type(args[0]).__name__}")
            dtype, device = self._tools.dtype(args[0]), self._tools.device(args[0])
        batch = self._meta[2]
        data = self._source._materialize(self._leaves, dtype, device, len(batch) if batch else 0)
        return self.post(self.callfun(*args, *data, **dict(self.kwargs, **kwargs)))

    def __str__(self):
        f, g = getattr(self, "shown", (self.formula, self.formula2))
        text = f"KeOps LazyTensor\n    formula: {f}\n    shape: {self._source.shape}\n" \
               f"    reduction: {self.reduction_op} (axis={self.axis})"
        if g is not None:
            text += f"\n        formula2: {g}"
        if self.opt_arg is not None:
            text += f"\n        opt_arg: {self.opt_arg}"
        return text

    __repr__ = __str__


class LazySolve:
    """`K.solve(b)` with symbolic variables left: call with their arrays, by index
    (the unknown's slot is filled with b)."""

    def __init__(self, tools, solver, formula, varind, axis, b, leaves, symbolic, meta, kwargs, source):
        self._tools, self.callfun, self.formula = tools, solver, formula
        self.varind, self.axis, self._b, self._leaves = varind, axis, b, leaves
        self._symbolic, self._meta, self.kwargs, self._source = symbolic, meta, kwargs, source
        self.reduction_op = "Solve"

    def __call__(self, *args, **kwargs):
        slots = sorted(self._symbolic)
        expected = len(slots) - 1
        if len(args) != expected:
            raise ValueError(f"this solve takes {expected} array(s) for its symbolic variables, got {len(args)}")
        it = iter(args)
        filled = [self._b if k == self.varind else next(it) for k in slots]
        dtype, device = self._meta[3], self._meta[4]
        batch = self._meta[2]
        data = self._source._materialize(self._leaves, dtype, device, len(batch) if batch else 0)
        return self.callfun(*filled, *data, **dict(self.kwargs, **kwargs))

    def __str__(self):
        return f"KeOps LazyTensor\n    formula: {self._source.formula}\n    shape: {self._source.shape}\n" \
               f"    reduction: Solve (axis={self.axis}, unknown Var({self.varind},...))"

    __repr__ = __str__


def make_variable_helpers(cls):
    """Vi, Vj, Pm (and Var) for one LazyTensor class."""

    def Var(x_or_ind, dim=None, cat=None):
        if dim is None:
            return cls(x_or_ind, axis=cat)
        return cls((x_or_ind, dim, cat))

    def Vi(x_or_ind, dim=None):
        """An i-indexed variable: `Vi(x)` for an (M, D) array, `Vi(k, d)` symbolic."""
        return Var(x_or_ind, dim, 0)

    def Vj(x_or_ind, dim=None):
        """A j-indexed variable: `Vj(y)` for an (N, D) array, `Vj(k, d)` symbolic."""
        return Var(x_or_ind, dim, 1)

    def Pm(x_or_ind, dim=None):
        """A parameter: `Pm(p)` for a (D,) array or a number, `Pm(k, d)` symbolic."""
        return Var(x_or_ind, dim, 2)

    return Var, Vi, Vj, Pm
