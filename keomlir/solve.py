"""KernelSolve: `(alpha Id + K) a = b` by conjugate gradient, K a keomlir Sum reduction.

`KernelSolve(formula, aliases, varinvalias, axis)` reads `formula` as a linear map of
the variable `varinvalias` (the unknown a, indexed by the reduced index):
`(K a)_i = Sum_j formula(x_i, y_j, a_j, ...)` for axis=1.  Each conjugate gradient
step is one call of that reduction through the framework's `Genred`, so a solve runs
the same compiled kernels as everything else.  The recurrences run in float64 whatever
the dtype of the data (the kernel runs in the data's dtype), so float32 systems still
reach small residuals.

Several right-hand sides (b of shape (n, D)) are solved at once: when the formula is
`scalar kernel * a` the D columns are independent systems and each column gets its
own step sizes (block-diagonal CG, one kernel call per iteration for all columns);
otherwise the whole (n, D) array is one unknown vector.

`KernelSolve` here is written once over an array adapter (keomlir/arrays.py); a front
end subclasses it with its `genred_class` (and, for torch, a differentiable solve:
keomlir/torch/solve.py).  `KernelSolve.from_ir` takes an IR formula and its unknown's
Var node (LazyTensor.solve), so nothing is printed or parsed again.
"""

from __future__ import annotations

import json

import numpy as np

from .backends.launch import HALF
from .arrays import NUMPY, adapter_for
from .calls import as_columns, batch_plan, run_batched
from .grammar import parse_formula
from .ir import make, to_formula
from .passes import DEFAULT_PIPELINE

__all__ = ["ConvergenceError", "KernelSolve", "conjugate_gradient", "solve_arrays"]


class ConvergenceError(ValueError, RuntimeError):
    """The conjugate gradient did not reach its tolerance within its iteration limit."""


class NotPositiveDefiniteError(ValueError):
    """The conjugate gradient met a direction p with <p, (alpha Id + K) p> <= 0."""


def cg_setup(n, size, eps, maxiter, columns, what):
    """The checked iteration limit, the inner product and the squared residual threshold
    of a conjugate gradient on an (n, D) unknown of `size` entries (per column when
    `columns`): what every conjugate gradient here (NumPy, torch, Dask) shares."""
    if maxiter is None:
        maxiter = max(100, 10 * n)
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 0:
        raise ValueError(f"{what}: maxiter must be a non-negative integer, got {maxiter!r}")
    if not isinstance(eps, (int, float, np.floating)) or isinstance(eps, bool) or not eps > 0:
        raise ValueError(f"{what}: eps must be a positive number, got {eps!r}")
    if columns:
        def dot(u, v):
            return (u * v).sum(0)

        return maxiter, dot, n * float(eps) ** 2

    def dot(u, v):
        return (u * v).sum().reshape(1)

    return maxiter, dot, size * float(eps) ** 2


def conjugate_gradient(linop, b, x0=None, eps=1e-6, maxiter=None, columns=True, verbose=False, what="solve"):
    """Solve linop(a) = b for a symmetric positive definite linop, b of shape (n, D)
    (float64 NumPy array or torch tensor).  Stops when the root mean square of the
    residual is below `eps` (per column when `columns`, else over the whole array).
    Raises ConvergenceError after `maxiter` iterations (default 10 n, at least 100)."""
    where = adapter_for(b).where
    n = b.shape[0]
    maxiter, dot, delta = cg_setup(n, adapter_for(b).size(b), eps, maxiter, columns, what)

    if x0 is not None:
        a = 1.0 * x0
        r = b - linop(a)
    else:
        a = 0.0 * b
        r = 1.0 * b
    rr = dot(r, r)
    active = rr > delta
    status = {"status": "Converged", "niter": 0, "x0_provided": x0 is not None}
    if not bool(active.any()):
        if verbose:
            print(dict(status, residual=float(rr.max()) ** 0.5 / max(n, 1) ** 0.5))
        return a
    p = 1.0 * r
    for k in range(maxiter):
        Mp = linop(p)
        pMp = dot(p, Mp)
        bad = active & ~(pMp > 0)
        if bool(bad.any()):
            raise NotPositiveDefiniteError(
                f"{what}: the operator alpha*Id + K is not positive definite (a search direction p has "
                f"<p, (alpha Id + K) p> = {float(pMp[bad][0]):.3e} <= 0 at iteration {k}); conjugate gradient "
                "needs a symmetric positive definite system: check the kernel, or increase alpha")
        step = where(active, rr / where(active, pMp, 1.0 + 0.0 * pMp), 0.0 * pMp)
        a = a + step * p
        r = r - step * Mp
        rr_new = dot(r, r)
        active = active & (rr_new > delta)
        if not bool(active.any()):
            if verbose:
                print(dict(status, niter=k + 1, residual=(float(rr_new.max()) / n) ** 0.5))
            return a
        beta = where(active, rr_new / where(active, rr, 1.0 + 0.0 * rr), 0.0 * rr)
        p = r + beta * p
        rr = rr_new
    residual = (float(rr.max()) / (n if columns else n * (b.shape[1] if len(b.shape) > 1 else 1))) ** 0.5
    if verbose:
        print(dict(status, status="Not converged", niter=maxiter, residual=residual))
    raise ConvergenceError(
        f"{what}: conjugate gradient did not converge in maxiter={maxiter} iterations: the residual "
        f"(root mean square) is {residual:.3e}, above eps={eps:g}; raise maxiter, loosen eps, or increase "
        "alpha (a better conditioned system)")


def _separable(formula, pos):
    """formula == scalar * Var(pos) with the scalar free of Var(pos): the columns of
    the unknown are independent systems with the same matrix."""
    if formula.name != "Mult":
        return False

    def uses(node):
        for n in node.walk():
            if n.name == "Var" and n.attrs[0] == pos:
                return True
            if any(getattr(a, "name", None) == "Var" and a.attrs[0] == pos for a in n.attrs):
                return True
        return False

    for var, other in ((formula.args[0], formula.args[1]), (formula.args[1], formula.args[0])):
        if var.name == "Var" and var.attrs[0] == pos and other.dim == 1 and not uses(other):
            return True
    return False


class _SolveCore:
    """The Sum reduction of `formula` (a Genred of the front end) and where its unknown sits."""

    def __init__(self, genred, unknown, axis, formula_text, unknown_text):
        """`unknown` is the Var node of a; the texts (quoted) name the formula and a in messages."""
        red = genred.reduction
        what = f"varinvalias {unknown_text}"
        pos, dim, cat = unknown.attrs
        if pos >= len(red.arguments) or red.arguments[pos] != unknown.attrs:
            raise ValueError(f"{what}: the unknown Var({pos},{dim},{cat}) does not appear in the formula")
        reduced = 1 if axis == 1 else 0
        if cat != reduced:
            word = "j (Vj)" if reduced == 1 else "i (Vi)"
            raise ValueError(f"{what}: with axis={axis} the unknown is summed over and must be indexed by {word}, "
                             f"got {'a parameter' if cat == 2 else 'the other index'}")
        dim_f = red.formula.dim
        if dim_f != dim:
            raise ValueError(f"KernelSolve: the formula has dimension {dim_f} but the unknown {unknown_text} has "
                             f"dimension {dim}: (alpha Id + K) a = b needs them equal")
        self.genred, self.axis = genred, axis
        self.varinvpos, self.varinvdim = pos, dim
        self.separable = _separable(red.formula, pos)
        self.label = f"KernelSolve({formula_text}, unknown {unknown_text})"
        # the solver as text, from which KernelSolve.from_spec rebuilds an equal one
        self.spec = json.dumps(["KernelSolve", red.spec, list(unknown.attrs), axis, formula_text, unknown_text])

    def check_square(self, shapes):
        """After `check_arrays` (the rows of each index agree): as many output rows as unknown rows."""
        red = self.genred.reduction
        rows = {0: [], 1: []}  # compared, not hashed: torch.compile's symbolic sizes do not hash
        for (pos, dim, cat), shape in zip(red.kernel_arguments, shapes):
            if cat in (0, 1) and len(shape) == 2:
                rows[cat].append(shape[0])
        if rows[0] and rows[1] and rows[0][0] != rows[1][0]:
            raise ValueError(f"{self.label}: the system must be square, but the output has {rows[0][0]} rows and "
                             f"the unknown {rows[1][0]} rows")


def _unknown_of(red, varinvalias):
    """The Var node named by `varinvalias`: an alias of the reduction (parsed once, by
    the Genred) or a variable written `Var(k,d,cat)`."""
    if not isinstance(varinvalias, str):
        raise TypeError(f"varinvalias must be a string (an alias name such as 'b', or 'Var(k,d,cat)'), "
                        f"got {type(varinvalias).__name__}")
    try:
        node = parse_formula(varinvalias, red.names, "varinvalias")
    except (SyntaxError, ValueError):
        node = None
    if node is None or node.name != "Var":
        raise ValueError(f"varinvalias {varinvalias!r} is neither an alias ({', '.join(red.names) or 'none'}) "
                         "nor a variable Var(k,d,cat)")
    return node


def check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    return float(alpha)


def solve_arrays(core, xp, args, alpha, opts):
    """The solution a of (alpha Id + K) a = b, b the unknown's slot of `args` (arrays of
    adapter `xp`); the conjugate gradient runs in float64, the kernel in b's dtype, but for half
    data (float16, bfloat16) in float32: the iterations' p rounded to half would stall the
    gradient near half's precision.  The solution is returned in b's dtype."""
    backend, device_id, eps, maxiter, x0, verbose, ranges = opts
    pos = core.varinvpos
    dtype = out_dtype = xp.dtype(args[pos])
    if dtype in HALF:  # (the data converted once, exactly)
        dtype = "float32"
        args = [xp.astype(a, dtype) for a in args]
    alpha = float(alpha)

    def linop(p):
        full = list(args)
        full[pos] = xp.astype(p, dtype)
        out = core.genred(*full, backend=backend, device_id=device_id, ranges=ranges)
        return xp.astype(out, "float64") + alpha * p

    b = xp.astype(args[pos], "float64")
    if x0 is not None:
        x0 = xp.astype(xp.as_array(x0, b), "float64")
        if x0.shape != b.shape:
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
    a = conjugate_gradient(linop, b, x0, eps, maxiter, core.separable, verbose, core.label)
    return xp.astype(a, out_dtype)


class KernelSolve:
    """KernelSolve over one front end's arrays (call-compatible with pykeops's): a front
    end subclasses it with its `genred_class` and array adapter `arrays`.

    >>> Kinv = KernelSolve("Exp(-g*SqDist(x,y)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"],
    ...                    "b", axis=1)
    >>> a = Kinv(x, x, b, g, alpha=0.01)       # (alpha Id + K_xx) a = b
    """

    genred_class = None  # the front end's Genred
    arrays = NUMPY

    def __init__(self, formula, aliases, varinvalias, axis=0, dtype=None, opt_arg=None, dtype_acc="auto",
                 use_double_acc=False, sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=None,
                 use_fast_math=True, cuda_type=None, passes=DEFAULT_PIPELINE):
        # pykeops.numpy.KernelSolve's keywords in its order (cuda_type: pykeops.torch's);
        # dtype, opt_arg, cuda_type and the CUDA compile hints are accepted and ignored, as by Genred
        genred = self.genred_class(formula, aliases, reduction_op="Sum", axis=axis, dtype_acc=dtype_acc,
                                   use_double_acc=use_double_acc, sum_scheme=sum_scheme, passes=passes)
        unknown = _unknown_of(genred.reduction, varinvalias)
        self.core = _SolveCore(genred, unknown, axis, repr(formula), repr(varinvalias))

    @classmethod
    def from_ir(cls, formula, unknown, axis, names=None, **options):
        """The solver of the IR formula F, linear in the Var node `unknown`; `names`
        ({alias: Var}) and the compile options as in Genred.from_ir."""
        return cls.from_genred(cls.genred_class.from_ir(formula, None, "Sum", axis, None, names, **options),
                               unknown, axis)

    @classmethod
    def from_genred(cls, genred, unknown, axis):
        """The solver of a Sum `genred` of the front end, linear in the Var node `unknown`."""
        self = cls.__new__(cls)
        self.core = _SolveCore(genred, unknown, axis, repr(to_formula(genred.reduction.formula)),
                               repr(to_formula(unknown)))
        return self

    @classmethod
    def from_spec(cls, spec):
        """The solver of a `spec` text (`core.spec`: its Genred's spec, unknown, axis, labels)."""
        try:
            kind, genred_spec, attrs, axis, formula_text, unknown_text = json.loads(spec)
        except (TypeError, ValueError):
            kind = None
        if kind != "KernelSolve":
            raise ValueError(f"not a keomlir KernelSolve spec: {spec!r:.80}")
        self = cls.__new__(cls)
        genred = cls.genred_class.from_spec(genred_spec)
        self.core = _SolveCore(genred, make("Var", (), tuple(attrs)), axis, formula_text, unknown_text)
        return self

    @property
    def program(self):
        return self.core.genred.program

    def _alpha(self, alpha):
        return check_alpha(alpha)

    def _solve(self, args, alpha, opts):
        return solve_arrays(self.core, self.arrays, args, alpha, opts)

    def __call__(self, *args, backend="auto", device_id=-1, alpha=1e-10, eps=1e-6, ranges=None, maxiter=None,
                 x0=None, verbose=False):
        core, xp = self.core, self.arrays
        red = core.genred.reduction
        if len(args) != len(red.arguments):
            red.check_arrays(list(args))  # raises: the wrong number of arguments
        for k, a in enumerate(args):
            if not xp.is_array(a):
                raise TypeError(f"{red.arg_label(k)}: expected {xp.array_word}, got {type(a).__name__}")
        alpha = self._alpha(alpha)
        args = as_columns(red, args)
        shapes = [tuple(a.shape) for a in args]
        plan = batch_plan(red, shapes)
        if plan is not None:
            if x0 is not None or ranges is not None:
                raise ValueError("x0 and ranges are not supported with batch dimensions")
            return run_batched(plan, args, lambda el: self(*el, backend=backend, device_id=device_id, alpha=alpha,
                                                           eps=eps, maxiter=maxiter, verbose=verbose), xp.stack)
        red.check_arrays(list(args))
        core.check_square(shapes)
        return self._solve(args, alpha, (backend, device_id, eps, maxiter, x0, verbose, ranges))
