"""The reference backend: a dense float64 NumPy interpreter of the IR.

It builds the whole M x N x d array of F, so it is for small problems only:
it is the test oracle and a debugging aid (`backend="reference"`)."""

from __future__ import annotations

import numpy as np

from .base import Backend, register
from .launch import float_values, rounded


def evaluate_formula(root, arrays):
    """F as an array broadcastable to (M, N, dim); arrays[p] are float64 2-d."""
    memo = {}
    with np.errstate(all="ignore"):
        for n in root.walk():
            if n.name == "Var":
                pos, dim, cat = n.attrs
                a = np.asarray(arrays[pos], dtype=np.float64).reshape(-1, dim)
                memo[id(n)] = {0: a[:, None, :], 1: a[None, :, :], 2: a[:1][None, :, :]}[cat]
            else:
                xs = [memo[id(a)] for a in n.args]
                out = np.asarray(n.op.reference(xs, n.attrs), dtype=np.float64)
                if out.ndim == 1:
                    out = out.reshape(1, 1, -1)
                memo[id(n)] = out
    return memo[id(root)]


def run(launch, arrays):
    """The outputs of a Launch, computed in float64 and returned in the launch's dtype."""
    outs = evaluate(launch.program, [float_values(a, launch.dtype) for a in arrays], launch.n_i, launch.n_j,
                    launch.ranges)
    return [rounded(o, launch.dtype) if o.dtype.kind == "f" else o for o in outs]


def evaluate(program, arrays, n_i, n_j, ranges=None):
    """The reduction outputs (float64 values, int64 indices), one row per i; with
    `ranges` (the kernel's half of a block-sparse 6-tuple), each row over its own j."""
    f = np.broadcast_to(evaluate_formula(program.formula, arrays), (n_i, n_j, program.formula.dim))
    g = None
    if program.formula2 is not None:
        g = np.broadcast_to(evaluate_formula(program.formula2, arrays), (n_i, n_j, program.formula2.dim))
    red, k = program.red, program.opt_arg
    with np.errstate(all="ignore"):
        if ranges is None:
            return red.reference(f, g, k)
        outs = red.reference(f[:, :0], None if g is None else g[:, :0], k)  # rows of no block: empty
        kinds = [kind for _, kind in red.outputs(program.formula.dim, None if g is None else g.shape[2], k)]
        ranges_i, slices_i, redranges_j = ranges
        for block, (start, end) in enumerate(ranges_i):
            first = slices_i[block - 1] if block else 0
            js = np.concatenate([np.arange(a, b) for a, b in redranges_j[first:slices_i[block]]] + [[]]).astype(int)
            part = red.reference(f[start:end, js], None if g is None else g[start:end, js], k)
            for out, value, kind in zip(outs, part, kinds):
                out[start:end] = np.append(js, -1)[value] if kind == "index" else value  # -1 stays -1
        return outs


class ReferenceBackend(Backend):
    """Dense float64 NumPy: the oracle (nothing compiled, no schedule)."""

    name = "reference"

    def run(self, launch, arrays, device_id=-1):
        return run(launch, arrays)


BACKEND = register(ReferenceBackend())
