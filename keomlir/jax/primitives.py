"""keomlir's reductions and conjugate gradient solves as JAX primitives: `keomlir_genred`
(the outputs of a reduction) and `keomlir_kernel_solve` (the solution of
(alpha Id + K) a = b).

A primitive's arguments are the arrays of one plain call (2-d variables, parameters,
no batch dimensions: the front end has turned those into a block-sparse call); its
parameters are the front end's Genred (or KernelSolve), the backend and the static
block-sparse `ranges`.  Every call, eager or traced, lowers to an XLA FFI custom call
(`keomlir.backends.xla_ffi`).  A dense call on the host CPU calls a generated handler that
calls the kernel with no Python in between (the kernel is compiled when JAX lowers the
program), its rows split over XLA's thread pool as the CPU runtime would split them over
its threads; any other call (block-sparse, j split over threads, another backend, a solve)
calls a Python handler that runs keomlir's runtime on the buffers.  Derivatives (forward
mode, transposition) and `vmap` are the rules of `rules.py`.
"""

from __future__ import annotations

import functools
import itertools
import threading

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import mlir

from .. import tune
from ..arrays import NUMPY
from ..backends import xla_ffi
from ..compile import backends_for, check_backend
from ..ranges import ranges_arrays
from ..solve import solve_arrays

genred_p = Primitive("keomlir_genred")
genred_p.multiple_results = True
solve_p = Primitive("keomlir_kernel_solve")

COLUMN_MAJOR = (0, 1)  # an operand's layout (minor to major, as `ffi_lowering` takes it): the (dim, rows) kernels read


class Ranges:
    """A block-sparse `ranges` 6-tuple as a primitive's parameter: int64 NumPy arrays, known
    when JAX traces the call, hashed and compared by value."""

    __slots__ = ("arrays", "_key")

    def __init__(self, arrays):
        self.arrays = tuple(arrays)
        self._key = tuple((a.shape, a.tobytes()) for a in self.arrays)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Ranges) and self._key == other._key

    def __repr__(self):
        return f"Ranges({len(self.arrays[0])} blocks of i, {len(self.arrays[3])} blocks of j)"


def static_ranges(ranges):
    """The `ranges` argument of a call as a primitive parameter (None stays None): its
    arrays must be known when JAX traces the call, not computed from traced values."""
    if ranges is None or isinstance(ranges, Ranges):
        return ranges
    if isinstance(ranges, (tuple, list)) and any(isinstance(r, jax.core.Tracer) for r in ranges):
        raise ValueError("ranges: the block-sparse ranges of a keomlir call are static (they decide which kernel "
                         "runs and are checked before it does): give NumPy arrays, or jax.Arrays computed outside "
                         "jax.jit, not values traced by it")
    return Ranges(ranges_arrays([np.asarray(r) if isinstance(r, jax.Array) else r for r in ranges]
                                if isinstance(ranges, (tuple, list)) else ranges))


def _arrays(ranges):
    return None if ranges is None else ranges.arrays


def index_dtype():
    """The dtype of index outputs: int64, int32 without jax_enable_x64."""
    return jax.dtypes.canonicalize_dtype(np.int64)


# ---- keomlir_genred -----------------------------------------------------------------------------------------
@genred_p.def_abstract_eval
def _genred_abstract(*avals, genred, backend, ranges):
    """The outputs' shapes and dtypes, after the checks of a call (keomlir.numpy's messages)."""
    launch = genred.reduction.launch(avals, _arrays(ranges))
    dtype = avals[0].dtype if avals else jax.dtypes.canonicalize_dtype(np.float64)
    return [jax.core.ShapedArray(shape, index_dtype() if kind == "index" else dtype) for shape, kind in launch.outputs]


@genred_p.def_impl
def _genred_impl(*args, genred, backend, ranges):
    """Outside a trace: the call as a jitted program of this primitive alone (compiled once per
    Genred, options and shapes), which costs less than handing the arrays to NumPy and back."""
    run = genred.derivatives.once(("eager", backend, ranges), lambda: jax.jit(functools.partial(
        genred_p.bind, genred=genred, backend=backend, ranges=ranges)))
    return run(*args)


def _generated_handler(red, launch, backend):
    """The address of the generated FFI handler of `launch` (`CpuBackend.xla_handler`): a dense
    call that runs on the host CPU; else None."""
    host = backends_for(check_backend(backend), launch)[0]
    if getattr(host, "xla_handler", None) is None:
        return None
    if red.autotune:  # as CompiledReduction.run_numpy: tuned before the kernel is chosen
        tune.ensure(launch, red.autotune)
    return host.xla_handler(launch)


_targets = {}  # key -> (FFI target name, what keeps its handler alive)
_targets_lock = threading.Lock()
_names = itertools.count()


def _target(key, make_handler):
    """The name of the FFI target of `key`, registered with XLA on first use (`make_handler()`
    returns (the handler's address, the object that must outlive it))."""
    with _targets_lock:
        found = _targets.get(key)
        if found is None:
            address, keep = make_handler()
            name = f"keomlir_{key[0]}_{next(_names)}"
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(address), platform="cpu")
            found = _targets[key] = (name, keep)
    return found[0]


def _python_target(key, run):
    def make():
        handler = xla_ffi.python_handler(run)
        return xla_ffi.ctypes_address(handler), handler

    return _target(key, make)


def _genred_lowering(ctx, *operands, genred, backend, ranges):
    red = genred.reduction
    launch = red.launch(ctx.avals_in, _arrays(ranges))
    address = _generated_handler(red, launch, backend)
    if address is not None:  # (the backend keeps it, and its kernel, alive)
        name = _target(("direct", address), lambda: (address, None))
        layouts = [COLUMN_MAJOR if cat == 1 else None for cat in launch.arg_cats]
    else:
        def run(inputs, outputs):
            for out, value in zip(outputs, red.run_numpy(inputs, backend, ranges=_arrays(ranges))):
                out[...] = value

        name, layouts = _python_target(("call", genred, backend, ranges), run), None
    # kernels write int64 indices: without jax_enable_x64 the custom call returns them so, then converted
    wide = [aval.update(dtype=np.dtype(np.int64)) if aval.dtype.kind == "i" else aval for aval in ctx.avals_out]
    results = jax.ffi.ffi_lowering(name, operand_layouts=layouts)(ctx.replace(avals_out=wide), *operands)
    return [_narrow(ctx, r, w, aval) for r, w, aval in zip(results, wide, ctx.avals_out)]


def _narrow(ctx, value, wide, aval):
    """`value` (of aval `wide`) converted to `aval`'s dtype, if they differ."""
    if wide.dtype == aval.dtype:
        return value
    convert = mlir.lower_fun(lambda x: x.astype(aval.dtype), multiple_results=False)
    return convert(ctx.replace(avals_in=[wide], avals_out=[aval]), value)[0]


# ---- keomlir_kernel_solve -----------------------------------------------------------------------------------
# inputs: the arguments of the solver's reduction (b in the unknown's slot), alpha (a 0-d array), then x0 if given
@solve_p.def_abstract_eval
def _solve_abstract(*avals, solver, backend, eps, maxiter, verbose, ranges, has_x0):
    return avals[solver.core.varinvpos]


def _solve_numpy(arrays, solver, backend, eps, maxiter, verbose, ranges, has_x0):
    """The conjugate gradient on NumPy arrays (keomlir.numpy's KernelSolve of the same reduction)."""
    n = len(solver.core.genred.reduction.arguments)
    args, alpha = arrays[:n], float(arrays[n])
    x0 = arrays[n + 1] if has_x0 else None
    opts = (backend, -1, eps, maxiter, x0, verbose, _arrays(ranges))
    return solve_arrays(solver.numpy_core, NUMPY, args, alpha, opts)


@solve_p.def_impl
def _solve_impl(*args, **params):
    return jax.numpy.asarray(_solve_numpy([np.asarray(a) for a in args], **params))


def _solve_lowering(ctx, *operands, **params):
    def run(inputs, outputs):
        outputs[0][...] = _solve_numpy(inputs, **params)

    name = _python_target(("solve",) + tuple(sorted(params.items(), key=lambda kv: kv[0])), run)
    return jax.ffi.ffi_lowering(name)(ctx, *operands)


def _not_on_this_platform(ctx, *operands, **params):
    raise NotImplementedError("keomlir.jax runs on the CPU: its kernels cannot run inside a program compiled for a "
                              "GPU yet (the GPU backend has not run on hardware); jit the function for the CPU "
                              "(jax.jit(f, backend='cpu') or jax.default_device(jax.devices('cpu')[0]))")


for _prim, _rule in ((genred_p, _genred_lowering), (solve_p, _solve_lowering)):
    mlir.register_lowering(_prim, _rule, platform="cpu")
    for _platform in ("cuda", "rocm"):
        mlir.register_lowering(_prim, _not_on_this_platform, platform=_platform)
