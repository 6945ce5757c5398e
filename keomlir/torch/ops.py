"""keomlir's torch calls as torch custom operators: `keomlir::genred` (a reduction) and
`keomlir::kernel_solve` (a conjugate gradient solve), with shape functions (`register_fake`)
and reverse-mode rules (`register_autograd`).

Every torch call runs through these operators, eager or compiled.  Under
`torch.compile`, Dynamo sees one opaque operator per call, with tensors, strings and
numbers as arguments, and never traces keomlir's Python (its NumPy buffers, raw
pointers and caches); AOTAutograd traces the backward rules, which call the operators
again, with fake tensors.  Eager calls and torch.func's transforms reach the same
operators through the autograd Functions of `derivatives.py` and `solve.py`, which
also carry the forward-mode (jvp) and vmap rules that custom operators cannot.

An operator names its reduction by content: the key is the reduction's `spec`
(`CompiledReduction.spec`, exact text from which an equal reduction is rebuilt), so
a key can never name another computation, and a compiled graph that outlives every
Genred of its reduction still runs (the registry rebuilds it).  The registry holds
weakly every live Genred and strongly only the last few it rebuilt or handed to a
trace: its size is bounded by what the program keeps alive.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import weakref
from typing import Optional

import numpy as np
import torch

from ..backends import registry
from ..ranges import ranges_arrays

PINNED = 128  # Genreds (or solvers) the registry keeps alive itself, the least recently pinned dropped first


class Pins:
    """The objects a registry keeps alive, as attributes `k<sha1 of spec>`: Dynamo reads
    them with guards (a trace reaches a Genred it did not see built as
    `getattr(registry.pins, name)`), so an entry dropped later fails the guard and
    the function is traced again, never run with a missing object."""


class Registry:
    """spec -> the Genred (or KernelSolve) it names: every live one (weakly), else one
    rebuilt by `build(spec)` (set by the front end); the last PINNED rebuilt or traced
    ones are kept alive in `pins`."""

    def __init__(self, what):
        self.what, self.build = what, None
        self.pins = Pins()
        self._alive = weakref.WeakValueDictionary()
        self._pinned = collections.OrderedDict()  # attribute names of `pins`, least recently pinned first
        self._lock = threading.RLock()

    def add(self, obj, spec):
        self._alive.setdefault(spec, obj)

    def lookup(self, spec):
        found = self._alive.get(spec)
        if found is not None:
            return found
        with self._lock:
            found = self._alive.get(spec)
            if found is None:
                if not isinstance(spec, str):
                    raise TypeError(f"keomlir::{self.what}: the key must be a spec string, got {type(spec).__name__}")
                found = self.build(spec)
                self._alive[spec] = found
                self.pin(found, spec)
            return found

    def pin(self, obj, spec):
        """Keep `obj` (named by `spec`) alive among the PINNED last; returns its attribute name in `pins`."""
        name = "k" + hashlib.sha1(spec.encode()).hexdigest()
        with self._lock:
            if not hasattr(self.pins, name):  # an equal one already pinned stays (a trace may have read it)
                setattr(self.pins, name, obj)
            self._pinned[name] = None
            self._pinned.move_to_end(name)
            while len(self._pinned) > PINNED:
                delattr(self.pins, self._pinned.popitem(last=False)[0])
        return name

    def __len__(self):
        return len(self._alive)


GENREDS = Registry("genred")
SOLVERS = Registry("kernel_solve")


def ranges_tensors(ranges):
    """A `ranges` 6-tuple as a list of six tensors (the operators take `[]` for None).
    Tensors pass unchanged; anything else becomes int64 tensors (errors name the entry)."""
    if ranges is None:
        return None
    if isinstance(ranges, (tuple, list)) and len(ranges) == 6 and all(isinstance(r, torch.Tensor) for r in ranges):
        return list(ranges)
    return [torch.from_numpy(a) for a in ranges_arrays(ranges)]


# ---- keomlir::genred -------------------------------------------------------------------------------
@torch.library.custom_op("keomlir::genred", mutates_args=())
def genred(spec: str, args: list[torch.Tensor], backend: str, device_id: int,
           ranges: list[torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of the reduction `spec` on `args` (ranges: [] or a 6-tuple's tensors)."""
    return run_genred(GENREDS.lookup(spec).reduction, args, backend, device_id, ranges or None)


def run_genred(red, args, backend, device_id, ranges):
    """The outputs of the CompiledReduction `red` on tensors: the operator's body, which eager
    calls (GenredFunction) run directly, without the dispatcher and the registry lookup."""
    if args and args[0].device.type == "cuda":  # the GPU backend, on the tensors in place
        return list(registry.get("GPU").run(red.launch(args, ranges), args, device_id))
    if args and args[0].dtype == torch.bfloat16:  # (NumPy has no bfloat16: its bits, as int16 arrays)
        arrays = [a.detach().contiguous().view(torch.int16).numpy() for a in args]
        outs = red.run_numpy(arrays, backend, device_id, ranges, launch=red.launch(args, ranges))
        return [torch.from_numpy(o) if o.dtype == np.int64 else
                torch.from_numpy(o.view(np.int16)).view(torch.bfloat16) for o in outs]
    arrays = [a.detach().contiguous().numpy() for a in args]
    return [torch.from_numpy(o) for o in red.run_numpy(arrays, backend, device_id, ranges)]


@genred.register_fake
def _genred_fake(spec, args, backend, device_id, ranges):
    """Outputs of the right shapes and dtypes, after the checks of a call (same messages)."""
    red = GENREDS.lookup(spec).reduction
    _, n_i, _ = red.check_arrays(args)
    like = args[0] if args else torch.empty((), dtype=torch.float64)
    return [like.new_empty(shape, dtype=torch.int64 if kind == "index" else like.dtype)
            for shape, kind in red.output_shapes(n_i)]


def _genred_setup(ctx, inputs, output):
    spec, args, backend, device_id, ranges = inputs
    ctx.spec, ctx.backend, ctx.n_args, ctx.n_out = spec, backend, len(args), len(output)
    ctx.save_for_backward(*args, *output, *ranges)


def _genred_backward(ctx, grads):
    saved = ctx.saved_tensors
    n, n_out = ctx.n_args, ctx.n_out
    args, results, ranges = saved[:n], saved[n:n + n_out], saved[n + n_out:]
    found = GENREDS.lookup(ctx.spec).derivatives.reverse(args, results, grads, ctx.needs_input_grad[1], ctx.backend,
                                                         list(ranges) or None)
    return None, list(found), None, None, [None] * len(ranges)


genred.register_autograd(_genred_backward, setup_context=_genred_setup)


# ---- keomlir::kernel_solve -----------------------------------------------------------------------------
@torch.library.custom_op("keomlir::kernel_solve", mutates_args=())
def kernel_solve(spec: str, args: list[torch.Tensor], alpha: torch.Tensor, backend: str, device_id: int, eps: float,
                 maxiter: Optional[int], x0: Optional[torch.Tensor], verbose: bool,
                 ranges: list[torch.Tensor]) -> torch.Tensor:
    """The solution a of (alpha Id + K) a = b of the solver `spec` (b in its unknown's slot)."""
    solver = SOLVERS.lookup(spec)
    opts = (backend, device_id, eps, maxiter, x0, verbose, ranges or None)
    return solver.solve_tensors([a.detach() for a in args], float(alpha), opts)


@kernel_solve.register_fake
def _kernel_solve_fake(spec, args, alpha, backend, device_id, eps, maxiter, x0, verbose, ranges):
    return torch.empty_like(args[SOLVERS.lookup(spec).core.varinvpos])


def _solve_setup(ctx, inputs, output):
    spec, args, alpha, backend, device_id, eps, maxiter, x0, verbose, ranges = inputs
    ctx.spec, ctx.n_args = spec, len(args)
    ctx.opts = (backend, device_id, eps, maxiter, None, verbose)
    ctx.save_for_backward(*args, output, alpha, *ranges)


def _solve_backward(ctx, grad):
    saved = ctx.saved_tensors
    n = ctx.n_args
    args, a, alpha, ranges = saved[:n], saved[n], saved[n + 1], saved[n + 2:]
    opts = ctx.opts + (list(ranges) or None,)
    grads, g_alpha = SOLVERS.lookup(ctx.spec).reverse(args, a, alpha, grad, opts, ctx.needs_input_grad[1],
                                                      ctx.needs_input_grad[2])
    return None, grads, g_alpha, None, None, None, None, None, None, [None] * len(ranges)


kernel_solve.register_autograd(_solve_backward, setup_context=_solve_setup)
