"""The reductions of a LazyTensor: `.sum(dim)`, `.logsumexp(dim)`, `.argKmin(K, dim)`...,
`K @ v` and `K.solve(b)`, and the handles they return while symbolic variables are left.

A reduction numbers the tree's arrays and numbers (`tree.Numbering`) into IR nodes
and compiles them with the front end's `Genred.from_ir` (or `KernelSolve.from_ir`);
Genreds are cached by that IR, whose nodes hash and compare structurally.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from ..compile import CompiledReduction
from ..ir import variables
from .tree import Numbering, formula_text, is_int, swap_ij, symbolic_leaves

# keyword arguments of a reduction that are compile options (the others are call options)
_INIT_KWARGS = ("dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim",
                "use_fast_math", "optional_flags", "cuda_type", "dtype", "passes")
_IGNORED_INIT = ("enable_chunks", "rec_multVar_highdim", "use_fast_math", "optional_flags", "cuda_type", "dtype")


class ReductionMethods:
    """The reduction methods of GenericLazyTensor (a mixin: every LazyTensor is one, so
    `isinstance(x, ReductionMethods)` here means "x is a LazyTensor")."""

    genred_class = kernel_solve_class = None  # the front end's Genred and KernelSolve

    # ---- from the tree to IR -----------------------------------------------------------------------
    def _ir(self, other=None):
        """(F, G, leaves, symbolic variables): the IR of self (and of `other`, a tree)
        with one argument numbering; `leaves` are the arrays and numbers to pass after
        the symbolic variables' arrays, in position order."""
        symbolic = symbolic_leaves(self._sym, other)
        numbering = Numbering(1 + max(symbolic) if symbolic else 0)
        f = numbering.ir(self._sym)
        g = numbering.ir(other) if other is not None else None
        return f, g, numbering.leaves, symbolic

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
                a = self._arrays.array(value, dtype, device)
            want = nbatch + (1 if cat == 2 else 2)
            if len(a.shape) < want:
                a = a.reshape((1,) * (want - len(a.shape)) + tuple(a.shape))
            out.append(a)
        return out

    @staticmethod
    def separate_kwargs(kwargs):
        """(options of a reduction's compilation, options of its call) of its keyword arguments, as dicts."""
        return ({k: v for k, v in kwargs.items() if k in _INIT_KWARGS},
                {k: v for k, v in kwargs.items() if k not in _INIT_KWARGS})

    @property
    def formula(self):
        """The formula of this LazyTensor, as text (arguments numbered as in a reduction)."""
        return formula_text(self._ir()[0])

    @property
    def variables(self):
        """The arrays behind this LazyTensor, in argument order."""
        _, _, leaves, _ = self._ir()
        return tuple(self._materialize(leaves, self._dtype, self._device))

    # ---- reductions --------------------------------------------------------------------------------
    @classmethod
    def _genred(cls, formula, formula2, op, axis, opt_arg, init):
        """The front end's Genred of a reduction of IR nodes, with the compile options
        `init` (sorted pairs); one per IR and options."""
        return _cached_genred(cls.genred_class, formula, formula2, op, axis, opt_arg, init)

    @classmethod
    def _solver(cls, formula, unknown, axis, init):
        """The front end's KernelSolve of an IR formula linear in the Var node `unknown`."""
        return _cached_solver(cls.kernel_solve_class, formula, unknown, axis, init)

    def _reduce(self, op, axis, dim, other=None, opt_arg=None, call=True, what=None, **kwargs):
        what = what or op
        if axis is None:
            axis = dim
        nb = self.nbatchdims
        if axis is None:
            raise ValueError(f"{what}: give the reduction axis, axis=/dim={nb} (over i) or {nb + 1} (over j)")
        if not is_int(axis) or axis - nb not in (0, 1):
            raise ValueError(f"{what}: axis (or dim) must be {nb} (reduce over i) or {nb + 1} (reduce over j)"
                             f"{' with ' + str(nb) + ' batch dimension(s)' if nb else ''}, got {axis!r}")
        meta = self._meta()
        if other is not None:
            other = self._lazy(other, what)
            meta = self._join([other], what)
        if opt_arg is not None and not isinstance(opt_arg, bool):
            try:  # K as a NumPy integer or a 0-d tensor, as Genred takes it
                opt_arg = operator.index(opt_arg)
            except TypeError:
                pass  # the reduction's own check names what was given
        init, call_kwargs = _split_kwargs(kwargs)
        _defaults(self, call_kwargs)
        other_sym = other._sym if other is not None else None
        formula, formula2, leaves, symbolic = self._ir(other_sym)
        genred = type(self)._genred(formula, formula2, op, int(axis - nb), opt_arg, init)
        red = LazyReduction(genred, formula, formula2, op, int(axis - nb), opt_arg, call_kwargs, leaves,
                            len(symbolic), meta, self)
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

    def logsumexp(self, axis=None, dim=None, weight=None, other=None, **kwargs):
        """log Σ exp(self) (self scalar), or log Σ exp(self) * weight with `weight=` (or
        `other=`, the name pykeops's `reduction` gives it)."""
        weight = _one_weight(weight, other, "logsumexp")
        return self._reduce("LogSumExp", axis, dim, other=weight, what="logsumexp", **kwargs)

    def logsumexp_reduction(self, **kwargs):
        return self.logsumexp(**kwargs)

    def sumsoftmaxweight(self, weight=None, axis=None, dim=None, other=None, **kwargs):
        """Σ exp(self) weight / Σ exp(self) (the weight also as `other=`)."""
        weight = _one_weight(weight, other, "sumsoftmaxweight")
        if weight is None:
            raise TypeError("sumsoftmaxweight: give the weight (weight= or other=)")
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
        if isinstance(v, (ReductionMethods, LazyReduction)) or not self._arrays.is_array(v):
            raise TypeError(f"K @ v: v must be a {self._arrays.name} array, got {type(v).__name__}")
        if len(v.shape) == 0:
            raise ValueError("K @ v: v must have at least one dimension")
        shape = tuple(v.shape)
        newdims = (1, shape[0], 1) if len(shape) == 1 else shape[:-2] + (1,) + shape[-2:]
        kv = self * self.lt_constructor(v.reshape(newdims))
        kv = kv._reduce("Sum", kv.nbatchdims + 1, None, what="@", **kwargs)
        if isinstance(kv, LazyReduction):
            return kv
        return kv.reshape(-1) if len(shape) == 1 else kv

    # `__matmul__` called by name: torch.compile's Dynamo turns `K @ v` with a tensor v into
    # torch's own matmul, so these are the spelling of K @ v that compiles
    def matvec(self, v):
        """K @ v, in the dtype of K (for scipy.sparse.linalg.aslinearoperator)."""
        return self.__matmul__(self._cast(v))

    def rmatvec(self, v):
        return self.T.__matmul__(self._cast(v))

    def matmat(self, v):
        return self.__matmul__(self._cast(v))

    def rmatmat(self, v):
        return self.T.__matmul__(self._cast(v))

    def _cast(self, v):
        if self._dtype is not None and isinstance(v, np.ndarray) and str(v.dtype) != self._dtype:
            return v.astype(self._dtype)
        return v

    def t(self):
        """The transposed symbolic matrix: i- and j-variables exchanged, shape (..., N, M, D)."""
        ni, nj, batch, dtype, device = self._meta()
        ranges = None if self.ranges is None else tuple(self.ranges[3:]) + tuple(self.ranges[:3])  # halves swapped
        return self._wrap(swap_ij(self._sym), (nj, ni, batch, dtype, device), ranges)

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
        if isinstance(other, ReductionMethods):
            if other._sym.kind != "data" or other._sym.cat not in (0, 1):
                raise ValueError("solve(b): b must be an array, or a LazyTensor made of one (M, D) array")
            b_lazy = other
        else:
            if not self._arrays.is_array(other):
                raise TypeError(f"solve(b): b must be a {self._arrays.name} array, got {type(other).__name__}")
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
        symbolic = symbolic_leaves(self._sym)
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
        formula, _, leaves, symbolic = system._ir()
        init, call_kwargs = _split_kwargs(kwargs)
        _defaults(system, call_kwargs)
        solver = type(self)._solver(formula, var._sym.ir, axis, init)
        red = LazySolve(solver, var._sym.value, axis, b_lazy._sym.data, leaves, symbolic, meta,
                        dict(call_kwargs, alpha=alpha, eps=eps, maxiter=maxiter, x0=x0, verbose=verbose), self)
        if call and len(symbolic) == 1 and meta[3] is not None:
            return red()
        return red

def _one_weight(weight, other, what):
    """The weight of a reduction, given as `weight=` or as `other=` (not both)."""
    if weight is not None and other is not None:
        raise TypeError(f"{what}: give the weight once, as weight= or as other=, not both")
    return other if weight is None else weight


def _defaults(lazy, call_kwargs):
    """The call options a LazyTensor carries: its `ranges` and its `backend`."""
    if lazy.ranges is not None:
        call_kwargs.setdefault("ranges", lazy.ranges)
    if lazy.backend is not None:
        call_kwargs.setdefault("backend", lazy.backend)


def _split_kwargs(kwargs):
    """(compile options as a hashable tuple, call options) of a reduction's keyword arguments."""
    init, call = {}, {}
    for key, value in kwargs.items():
        if key in _INIT_KWARGS:
            if key not in _IGNORED_INIT:
                init[key] = tuple(value) if isinstance(value, list) else value
        else:
            call[key] = value
    if init.pop("use_double_acc", False):
        init["dtype_acc"] = "float64"
    return tuple(sorted(init.items())), call


def _labels(*formulas):
    """{'vK': Var} for the arguments of the formulas: names for messages and printed IR."""
    return {f"v{v.attrs[0]}": v for v in variables(*formulas)}


@functools.lru_cache(maxsize=512)
def _cached_genred(genred_class, formula, formula2, op, axis, opt_arg, init):
    """One Genred per IR formula (nodes hash and compare structurally) and options."""
    return genred_class.from_ir(formula, formula2, op, axis, opt_arg, _labels(formula, formula2), **dict(init))


def genred_spec(formula, formula2, op, axis, opt_arg, init):
    """The `spec` of the reduction `_cached_genred` builds from these arguments, without
    building it (CompiledReduction.spec_of)."""
    return CompiledReduction.spec_of(formula, formula2, _labels(formula, formula2), op, axis, opt_arg, **dict(init))


@functools.lru_cache(maxsize=128)
def _cached_solver(kernel_solve_class, formula, unknown, axis, init):
    return kernel_solve_class.from_ir(formula, unknown, axis, _labels(formula), **dict(init))


def solver_genred_spec(formula, axis, init):
    """The spec of the Sum reduction `_cached_solver`'s KernelSolve runs."""
    return genred_spec(formula, None, "Sum", axis, None, init)


def _identity(x):
    return x


class LazyReduction:
    """A reduction of a LazyTensor that still has symbolic variables (or no dtype yet):
    call it with one array per symbolic variable, in the order of their indices."""

    def __init__(self, genred, formula, formula2, op, axis, opt_arg, call_kwargs, leaves, n_symbolic, meta, source):
        self.formula, self.formula2 = formula, formula2  # IR nodes
        self.reduction_op, self.axis, self.opt_arg = op, axis, opt_arg
        self.kwargs = call_kwargs
        self._leaves = leaves
        self._n_symbolic = n_symbolic
        self._meta = meta
        self.ndim = source.ndim
        self._source = source
        self.callfun = genred
        self.post = _identity  # complex LazyTensors: real pairs back to complex arrays

    @property
    def dtype(self):
        return self._meta[3]

    def __call__(self, *args, **kwargs):
        if len(args) != self._n_symbolic:
            raise ValueError(f"this reduction takes {self._n_symbolic} array(s) for its symbolic variables, "
                             f"got {len(args)}")
        arrays = self._source._arrays
        dtype, device = self._meta[3], self._meta[4]
        if dtype is None and args:
            if not arrays.is_array(args[0]):
                raise TypeError(f"expected {arrays.name} arrays, got {type(args[0]).__name__}")
            dtype, device = arrays.dtype(args[0]), arrays.device(args[0])
        batch = self._meta[2]
        data = self._source._materialize(self._leaves, dtype, device, len(batch) if batch else 0)
        return self.post(self.callfun(*args, *data, **dict(self.kwargs, **kwargs)))

    def __str__(self):
        text = f"KeOps LazyTensor\n    formula: {formula_text(self.formula)}\n    shape: {self._source.shape}\n" \
               f"    reduction: {self.reduction_op} (axis={self.axis})"
        if self.formula2 is not None:
            text += f"\n        formula2: {formula_text(self.formula2)}"
        if self.opt_arg is not None:
            text += f"\n        opt_arg: {self.opt_arg}"
        return text

    __repr__ = __str__


class LazySolve:
    """`K.solve(b)` with symbolic variables left: call with their arrays, by index
    (the unknown's slot is filled with b)."""

    def __init__(self, solver, varind, axis, b, leaves, symbolic, meta, kwargs, source):
        self.callfun, self.varind, self.axis, self._b, self._leaves = solver, varind, axis, b, leaves
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
