"""The contraction micro-kernel: the schedule's wide contractions (`contract`: SqDist or a
scalar product of a wide i and a wide j variable) made for the whole tile of rows by one
register-blocked loop over components (`microkernel.contract`), each j vector loaded once
for every row; the rest of the formula as in the plain loop nest."""

from __future__ import annotations

from llvmlite import ir

from .. import microkernel
from ..skeleton import c64
from .lanes import Lanes
from .base import register


def x_at(k, node, em):
    """x_at(r, c): component c of row r of the tile's i variable of `node`, splatted."""
    b = k.b
    x = min(node.args, key=lambda a: a.attrs[2])
    starts = [b.mul(i, c64(x.dim)) for i in k.row_ids]
    return lambda r, c: em.splat(k.load_data(b.gep(k.base(x.attrs[0]), [b.add(starts[r], c)])))


def y_at(k, node, em):
    """y_at(c) (component c of the j variable of `node` at the current j vector) and prefetch(c)."""
    b = k.b
    y = max(node.args, key=lambda a: a.attrs[2])

    def prefetch(c):  # the j data of the vector after next: D strided streams defeat the hardware's prefetcher
        ahead = b.add(b.add(b.mul(c, k.n_j), k.j), c64(2 * k.lanes))
        addr = b.bitcast(b.gep(k.base(y.attrs[0]), [ahead]), ir.IntType(8).as_pointer())
        b.call(_prefetch(k.module), [addr, *(ir.Constant(ir.IntType(32), v) for v in (0, 3, 1))])

    return (lambda c: k.load_j(y.attrs[0], c, em)), prefetch


def _prefetch(module):
    """llvm.prefetch(address, read, keep in every cache level, data): a hint, never a fault."""
    fn = module.globals.get("llvm.prefetch.p0")
    if fn is None:
        i32 = ir.IntType(32)
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
                         "llvm.prefetch.p0")
    return fn


def contract_rows(k, rows, em):
    """The kernel's contractions for the vector rows (`k.row_ids`), each as one micro-kernel,
    their values given to each row's `Values`."""
    for node in k.contractions:
        xs, (ys, prefetch) = x_at(k, node, em), y_at(k, node, em)
        vals = microkernel.contract(em, node, xs, ys, len(rows), k.schedule.contract_accumulators, prefetch)
        for values, v in zip(rows, vals):
            values.memo[id(node)] = [v]


@register
class Contraction(Lanes):
    """Wide contractions of a tile of rows as one micro-kernel."""

    name = like = "contraction"

    def update(self, rows, em, ea, states, j):
        if em.lanes is not None:
            contract_rows(self.k, rows, em)
        self.k.update(rows, em, ea, states, j)
