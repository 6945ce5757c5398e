"""Register-blocked contractions over components, for a whole tile of rows.

`SqDist(x,y)` and `(x|y)` of a wide i variable x and a wide j variable y, lowered
row by row (`wide.py`), run one loop over the D components per row of the register
tile: every row reloads the j vector of every component, a load per FMA, and the
kernel is load-bound.  Here one loop over components serves the tile, as a BLAS
micro-kernel does: the j vector of component c is loaded once, each row broadcasts
its x[r, c] and accumulates into its own partial sums (independent chains in
flight, combined pairwise as `wide.fold` combines its partial sums).  SqDist stays
exact, (x - y)^2 summed, with no |x|^2 + |y|^2 - 2<x,y> cancellation; `expanded`
gives the scalar products and |y|^2 that a K-min ranks candidates with (one FMA per
component instead of a subtraction and an FMA), its exact values made by `contract`.
The schedule chooses the nodes (`Schedule.contract`), the rows and the accumulators
(`contract_accumulators`: registers the sums may hold).
"""

from __future__ import annotations

from llvmlite import ir

from . import wide
from .emitter import I64, counted_loop

def _accumulate(em, dim, n_sums, term, y_at, prefetch, accumulators):
    """n_sums sums over the components c in [0, dim): acc = term(s, c, y, acc), y = y_at(c)
    loaded once per component for every sum; prefetch(c), if given, emitted once per component."""
    b = em.b
    unroll = max(1, min(wide.UNROLL, accumulators // n_sums))
    main = dim - dim % unroll
    zero = em.const(0.0)
    accs = [[em.slot(zero) for _ in range(unroll)] for _ in range(n_sums)]

    def step(c, u):
        y = y_at(c)
        if prefetch is not None:
            prefetch(c)
        for s in range(n_sums):
            em.store(accs[s][u], term(s, c, y, em.load(accs[s][u])))

    with counted_loop(b, ir.Constant(I64, 0), ir.Constant(I64, main), "mk", unroll) as c:
        for u in range(unroll):
            step(b.add(c, ir.Constant(I64, u)), u)
    for c in range(main, dim):
        step(ir.Constant(I64, c), c - main)
    out = []
    for row in accs:
        vals = [em.load(acc) for acc in row]
        while len(vals) > 1:
            vals = [em.add(vals[k], vals[k + 1]) if k + 1 < len(vals) else vals[k] for k in range(0, len(vals), 2)]
        out.append(vals[0])
    return out


def contract(em, node, x_at, y_at, n_rows, accumulators, prefetch=None):
    """One value per row: `node` (SqDist or Scalprod) of x_at(r, c), the splatted
    x[r, c], and y_at(c), the vector of y[c] over the lanes' j (c an i64 value)."""
    square = node.name == "SqDist"

    def term(r, c, y, acc):
        x = x_at(r, c)
        if square:
            d = em.sub(y, x)  # (y - x)^2, the same square: x, broadcast, can be the memory operand
            return em.fma(d, d, acc)
        return em.fma(x, y, acc)

    return _accumulate(em, node.args[0].dim, n_rows, term, y_at, prefetch, accumulators)


def expanded(em, dim, x_at, y_at, n_rows, norm, accumulators, prefetch=None):
    """<x_r, y> for every row, then |y|^2 if `norm`: the terms of |x|^2 + |y|^2 - 2<x,y>."""
    def term(r, c, y, acc):
        return em.fma(y if r == n_rows else x_at(r, c), y, acc)

    return _accumulate(em, dim, n_rows + norm, term, y_at, prefetch, accumulators)
