"""Register-blocked contractions over components, for a whole tile of rows.

`SqDist(x,y)` and `(x|y)` of a wide i variable x and a wide j variable y, lowered
row by row (`wide.py`), run one loop over the D components per row of the register
tile: every row reloads the j vector of every component, a load per FMA, and the
kernel is load-bound.  Here one loop over components serves the tile, as a BLAS
micro-kernel does: the j vector of component c is loaded once, each row broadcasts
its x[r, c] and accumulates into its own partial sums (independent chains in
flight, combined pairwise as `wide.fold` combines its partial sums).  SqDist stays
exact, (x - y)^2 summed, with no |x|^2 + |y|^2 - 2<x,y> cancellation.  The tiling
pass chooses the nodes (`passes.tiling.wide_contractions`) and the rows.
"""

from __future__ import annotations

from llvmlite import ir

from . import wide
from .emitter import I64, counted_loop

REGISTERS = 16  # accumulators of a tile (of the 32 vector registers of AVX-512)


def contract(em, node, x_at, y_at, n_rows, prefetch=None):
    """One value per row: `node` (SqDist or Scalprod) of x_at(r, c), the splatted
    x[r, c], and y_at(c), the vector of y[c] over the lanes' j (c an i64 value);
    prefetch(c), if given, is emitted once per component."""
    b = em.b
    unroll = max(1, min(wide.UNROLL, REGISTERS // n_rows))
    dim, square = node.args[0].dim, node.name == "SqDist"
    main = dim - dim % unroll
    zero = em.const(0.0)
    accs = [[em.slot(zero) for _ in range(unroll)] for _ in range(n_rows)]

    def step(c, u):
        y = y_at(c)
        if prefetch is not None:
            prefetch(c)
        for r in range(n_rows):
            x = x_at(r, c)
            acc = accs[r][u]
            if square:
                d = em.sub(x, y)
                em.store(acc, em.fma(d, d, em.load(acc)))
            else:
                em.store(acc, em.fma(x, y, em.load(acc)))

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
