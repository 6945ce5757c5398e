"""The screened K-min: a K-min of F = SqDist(x, y) with x and y wide, most j rejected by the
expanded form |x|^2 + |y|^2 - 2<x,y> (one FMA per component: `microkernel.expanded`) with a
bound on its rounding error, exact values made only for the j that may enter the list
(`Reduction.update_screened`).  The tile's states wait in a stack buffer while j runs, so that
one loop over the rows updates them with one copy of the insertion code."""

from __future__ import annotations

import contextlib
import itertools

from llvmlite import ir

from .. import microkernel, wide
from ..emitter import counted_loop
from ..skeleton import I64, c64, map_state, n_cells
from .base import register
from .contraction import Contraction, x_at, y_at


@register
class Screened(Contraction):
    """A K-min of SqDist ranked by its expanded form."""

    name = like = "screened"

    def __init__(self, kernel):
        super().__init__(kernel)
        self.y_norms = None  # (stack buffer, first j) of the current cache block's |y|^2

    # ---- the hooks of the skeleton -----------------------------------------------------------
    def begin_cache_block(self, j0, j1, n):
        if self.k.lanes:
            self._fill_y_norms(j0, j1, n)

    def end_cache_blocks(self):
        self.y_norms = None

    def begin_tile(self, row_ids):
        self.x_norms = self._x_norms()
        self.counts = [self.k.em.slot(c64(0), I64) for _ in range(2)]  # row-vectors seen, passed

    def vector_states(self, row_ids, start_state):
        states = super().vector_states(row_ids, start_state)
        b = self.k.b
        with b.goto_block(self.k.em.entry):  # the states of the tile, updated in place (`_screened`)
            b.position_at_start(self.k.em.entry)
            size = len(row_ids) * n_cells(states[0]) * 8
            self.tile_buf = b.bitcast(b.alloca(ir.ArrayType(ir.IntType(8), size)), ir.IntType(8).as_pointer())
        return states

    @contextlib.contextmanager
    def tile_states(self, states):
        """The tile's states in its stack buffer while j runs: saved to it here, loaded back after
        (a K-min's `end_block`, which sees the stale slots meanwhile, does nothing)."""
        k = self.k
        for r, st in enumerate(states):
            k.save_state(st, k.cells_of(self.tile_buf, c64(r), n_cells(st)))
        yield
        for r, st in enumerate(states):
            k.load_state(st, k.cells_of(self.tile_buf, c64(r), n_cells(st)))

    def update(self, rows, em, ea, states, j):
        (self._screened if em.lanes is not None else self._exact_rows)(em, ea, states, j)

    # ---- the screen --------------------------------------------------------------------------
    def _tile_rows(self, n):
        """A loop over the n rows of the tile (yields the row's index in the tile), its bound in
        a form LLVM cannot constant-fold, so that it does not unroll it."""
        b = self.k.b
        return counted_loop(b, c64(0), b.add(c64(n), b.ashr(self.k.n_j, c64(63))), "row")

    def _tile_view(self, template, r):
        """Row r's state in the tile buffer, read and written in place (slots like template's)."""
        count = itertools.count()
        cell = self.k.cells_of(self.tile_buf, r, n_cells(template))
        return map_state(template, lambda slot: cell(next(count), slot.type.pointee))

    def _exact_rows(self, em, ea, states, j):
        """The scalar tail of j for a screened tile: F exact, row by row."""
        k = self.k
        with self._tile_rows(len(states)) as r:
            values = k.row_values(em, k.b.add(k.row_ids[0], r))
            k.red.update(em, ea, self._tile_view(states[0], r), wide.as_list(em, values.get(k.program.formula)),
                         None, j)

    def _bound(self, em):
        """(c, tiny): the expanded form d' = (1 - c)(|x|^2 + |y|^2) - 2<x,y> of SqDist, every term
        in this type with FMA, is below the exact d (and so below (1 + c) E + tiny, E the value
        `contract` sums, of relative error below D + 2 units) whatever the order of summation:
        the rounding errors of the D-term sums are at most D + 2 units of |x|^2 + |y|^2 and
        c = 4 (D + 4) units is twice that; tiny covers the absolute errors of subnormal terms.
        An overflow makes d' infinite or NaN, which never rejects."""
        dim = self.k.contractions[0].args[0].dim
        unit = 2.0 ** (-24 if em.bits == 32 else -53)
        return 4 * (dim + 4) * unit, 2.0 ** (-100 if em.bits == 32 else -1000)

    def _screened(self, em, ea, states, j):
        """The tile's K-min updates screened by the expanded form (`_bound`): a j vector
        whose every lane has d' >= (1 + c) K-th + tiny cannot enter; for the rare others the row's
        exact values, (x - y)^2 summed as the unscreened kernel sums them.  Where over half the
        row-vectors of this tile and j span have passed (after the schedule's `screen_trial`), the bound is too wide
        to reject anything (points far from the origin against their distances): the tile's exact
        values instead, as unscreened, tested as the screened ones (d' below the exact value)."""
        k = self.k
        b, node, accumulators = k.b, k.contractions[0], k.schedule.contract_accumulators
        xs, (ys, prefetch) = x_at(k, node, em), y_at(k, node, em)
        es = em.with_lanes(None)
        c, tiny = self._bound(em)
        seen, passed = self.counts
        n_seen = b.add(b.load(seen), c64(len(states)))
        b.store(n_seen, seen)
        useless = b.and_(b.icmp_signed(">", b.mul(b.load(passed), c64(2)), n_seen),
                         b.icmp_signed(">=", n_seen, c64(k.schedule.screen_trial)))
        ds = em.array(em.t, len(states))  # d' screened, or (useless) the exact values, by row
        with b.if_else(useless) as (exact_tile, screen):
            with exact_tile:  # counted as passed: useless stays so for the rest of the span
                b.store(b.add(b.load(passed), c64(len(states))), passed)
                for r, v in enumerate(microkernel.contract(em, node, xs, ys, len(states), accumulators, prefetch)):
                    em.store(em.at(ds, c64(r)), v)
            with screen:
                vals = microkernel.expanded(em, node.args[0].dim, xs, ys, len(states), self.y_norms is None,
                                            accumulators, prefetch)
                if self.y_norms is None:
                    ny = em.mul(vals[-1], em.const(1 - c))
                else:
                    buf, first = self.y_norms
                    ny = b.load(b.bitcast(b.gep(buf, [b.sub(k.j, first)]), em.t.as_pointer()), align=em.bits // 8)
                for r, dot in enumerate(vals[:len(states)]):
                    em.store(em.at(ds, c64(r)), em.fma(dot, em.const(-2.0), em.add(self.x_norms[r], ny)))
        x = min(node.args, key=lambda a: a.attrs[2])
        with self._tile_rows(len(states)) as r:
            d = em.load(em.at(ds, r))
            start = b.mul(b.add(k.row_ids[0], r), c64(x.dim))

            def may_beat(v):
                beaten = em.cmp(">=", d, em.splat(es.fma(v, es.const(1 + c), es.const(tiny))))
                return em.not_(em.and_(beaten, em.cmp("<", d, em.const(float("inf")))))

            def exact():
                b.store(b.add(b.load(passed), c64(1)), passed)
                value = em.slot(d)
                with b.if_then(b.not_(useless)):
                    row_x = lambda _, c: em.splat(k.load_data(b.gep(k.base(x.attrs[0]), [b.add(start, c)])))
                    em.store(value, microkernel.contract(em, node, row_x, ys, 1, accumulators)[0])
                return [em.load(value)]

            k.red.update_screened(em, ea, self._tile_view(states[0], r), may_beat, exact, j)

    def _fill_y_norms(self, j0, j1, n):
        """(1 - c) |y|^2 of the whole vectors of j in [j0, j1) (at most n j), into a stack buffer
        read by every tile of the chunk (`_screened`): not recomputed by each tile."""
        k = self.k
        b, em, lanes = k.b, k.em_v, k.lanes
        node = k.contractions[0]
        with b.goto_block(k.em.entry):
            b.position_at_start(k.em.entry)
            buf = b.bitcast(b.alloca(ir.ArrayType(k.t, n)), k.t.as_pointer())
        c, _ = self._bound(em)
        ys, prefetch = y_at(k, node, em)
        with counted_loop(b, j0, b.sub(j1, b.srem(b.sub(j1, j0), c64(lanes))), "jn", lanes) as jv:
            k.at_j(jv)
            ny = microkernel.expanded(em, node.args[0].dim, None, ys, 0, True, k.schedule.contract_accumulators,
                                      prefetch)[0]
            ptr = b.bitcast(b.gep(buf, [b.sub(jv, j0)]), em.t.as_pointer())
            b.store(em.mul(ny, em.const(1 - c)), ptr, align=em.bits // 8)
        self.y_norms = (buf, j0)

    def _x_norms(self):
        """(1 - c) |x|^2 of every row of the tile, splatted (the screen's row terms)."""
        k = self.k
        b, em = k.b, k.em
        x = min(k.contractions[0].args, key=lambda a: a.attrs[2])
        c, _ = self._bound(em)
        norms = []
        for i in k.row_ids:
            start = b.mul(i, c64(x.dim))
            at = b.gep(k.base(x.attrs[0]), [start])
            sq = wide.fold(em, x.dim, lambda comp, at=at: _square(em, k.load_data(b.gep(at, [comp]))), em.add)
            norms.append(k.em_v.splat(em.mul(sq, em.const(1 - c))))
        return norms


def _square(em, v):
    return em.mul(v, v)
