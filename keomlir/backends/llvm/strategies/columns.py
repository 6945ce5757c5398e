"""The column micro-kernel of a Sum of s * b with b a wide j variable (K @ B).

With SIMD across j (the plain loop nest), the Sum state of a wide F keeps one vector of lanes per column:
every term is 2 loads and a store of L1 (measured 12.5 G column-FMA/s on one core,
slower than a dense matmul from 256 columns).  Run per block of columns
(`column_block` of the schedule), b comes row-major (n_j, block) instead, and the tile of rows
works as a GEMM micro-kernel: s of its rows over a block of j is made across the
lanes' j as usual and stored to a stack buffer; then for each j of the block, b's row
j is loaded as vectors across columns, once for a group of rows, and each row's
broadcast s[r, j] is multiplied into its accumulators, held in registers over the
block (47 G column-FMA/s, a dense float32 matmul 50).  The
accumulators are the slots of the row's scalar state that the reduction adds a term
to (`Reduction.term_slots`: one value a column, no lane states to merge), with a
compensated add per term where the reduction asks for one (the same error bound as
the generic path); its `end_block` does the rest.
"""

from __future__ import annotations

import dataclasses

from ....ir.program import replace_vars
from ..emitter import SlotArray, counted_loop
from ..skeleton import c64, imin
from .base import LoopNest, register
from .contraction import contract_rows


def narrowed(program, pos, block):
    """The program on `block` columns of argument pos: what the kernel of one block computes."""
    def narrow(p, dim, cat):
        return (p, block if p == pos else dim, cat)

    return dataclasses.replace(
        program, formula=replace_vars(program.formula, narrow), arguments=tuple(narrow(*a) for a in program.arguments),
        names=tuple((narrow(*a), name) for a, name in program.names))



@register
class Columns(LoopNest):
    """K @ B by blocks of B's columns."""

    name = like = "columns"
    one_state = True

    def __init__(self, kernel):
        super().__init__(kernel)
        self.pos = kernel.schedule.column_arg  # b, row-major
        f = kernel.program.formula
        self.s = next(a for a in f.args if a.dim == 1)
        self.width = next(a for a in f.args if a is not self.s).dim

    @staticmethod
    def program(program, schedule):
        """The program on one block of b's columns (the same kernel for every width of b)."""
        return narrowed(program, schedule.column_arg, schedule.column_block)

    def load_j(self, pos, c, em):
        """b at the current j, row-major: read by the scalar tail only."""
        if pos != self.pos:
            return None
        b = self.k.b
        return self.k.load_data(b.gep(self.k.base(pos), [b.add(b.mul(self.k.j, c64(self.width)), c)]))

    def vector_part(self, vec_rows, states, j0, j1):
        """The whole vectors of j in [j0, j1) into the rows' scalar states, in blocks of
        j (the unit of compensated summation); returns where the tail starts.  Each block
        runs in two loops: s of every row and j into a stack buffer (vector code with
        its own constants), then the multiply-adds broadcasting s from that buffer (the
        registers left to the accumulators)."""
        k = self.k
        b, lanes, block, em_v = k.b, k.lanes, k.block, k.em_v
        per_row = block // lanes  # vectors of s a row per block
        s_vecs = em_v.array(em_v.t, per_row * len(vec_rows))  # s[r, j - block start]
        s_buf = b.bitcast(s_vecs, em_v.scalar.as_pointer())
        vec_end = b.sub(j1, b.srem(b.sub(j1, j0), c64(lanes)))
        with counted_loop(b, j0, vec_end, "jcb", block) as jb:
            block_end = b.add(jb, imin(b, b.sub(vec_end, jb), c64(block)))
            with counted_loop(b, jb, block_end, "jc", lanes) as jv:
                k.at_j(jv)
                contract_rows(k, vec_rows, em_v)
                at = b.udiv(b.sub(jv, jb), c64(lanes))
                for r, values in enumerate(vec_rows):
                    b.store(values.get(self.s)[0], em_v.at(s_vecs, b.add(at, c64(r * per_row))))
                    values.forget(k.j_nodes)
            self._accumulate(states, s_buf, jb, block_end)
            for st in states:
                k.red.end_block(k.em, k.ea, st)
        return vec_end

    def _accumulate(self, states, s_buf, jb, block_end):
        """The block's j for every row, in register tiles of `column_vectors` column vectors
        (a loop over them: code of one size for every block width, then the remainder) for
        as many rows as the `column_accumulators` registers allow."""
        k = self.k
        kahan = k.red.term_slots(k.em, states[0])[1] is not None  # a compensated add per term
        n_vectors = self.width // k.lanes
        vectors = k.schedule.column_vectors
        width = min(n_vectors, vectors)
        group = max(1, k.schedule.column_accumulators // (vectors * (2 if kahan else 1)))
        full = n_vectors - n_vectors % width
        for g in range(0, len(states), group):
            rows = range(g, min(g + group, len(states)))
            tile = [states[r] for r in rows]
            with counted_loop(k.b, c64(0), c64(full), "cv", width) as v0:
                self._tile(tile, rows, v0, width, s_buf, jb, block_end, kahan)
            if full < n_vectors:
                self._tile(tile, rows, c64(full), n_vectors - full, s_buf, jb, block_end, kahan)

    def _tile(self, states, rows, v0, width, s_buf, jb, block_end, kahan):
        """Rows `rows` (their `states`), column vectors [v0, v0 + width) (v0 an i64 value),
        over the j of [jb, block_end), their s in s_buf."""
        k = self.k
        b, lanes, em_v, ea_v = k.b, k.lanes, k.em_v, k.ea_v
        vectors = [b.add(v0, c64(v)) for v in range(width)]

        def columns(slot):  # the tile's column vectors of a scalar slot array
            assert isinstance(slot, SlotArray) and slot.n == self.width
            base = b.bitcast(slot.ptr, ea_v.t.as_pointer())
            return [b.gep(base, [v]) for v in vectors]

        terms = [k.red.term_slots(k.em, st) for st in states]  # (acc, comp) of each row
        targets = [columns(acc) for acc, _ in terms] + ([columns(comp) for _, comp in terms] if kahan else [])
        align = ea_v.bits // 8  # slot arrays are aligned as their scalars
        slots = [[ea_v.slot(b.load(p, align=align)) for p in row] for row in targets]  # registers over the loop
        b_base = k.base(self.pos)
        with counted_loop(b, jb, block_end, "jm", lanes) as jv:
            acc = [[b.load(p) for p in row] for row in slots]  # the rows' totals, then their compensations
            for jj in range(lanes):
                row = b.mul(b.add(jv, c64(jj)), c64(self.width))
                bv = [k.load_data(b.gep(b_base, [b.add(row, b.mul(v, c64(lanes)))]), lanes) for v in vectors]
                for t, r in enumerate(rows):
                    s = em_v.splat(b.load(b.gep(s_buf, [b.add(b.sub(jv, jb), c64(r * k.block + jj))])))
                    for v in range(len(vectors)):
                        if kahan:  # total += s*b with the lost low bits kept in comp
                            c = acc[len(rows) + t]
                            y = ea_v.sub(em_v.convert(em_v.mul(s, bv[v]), ea_v), c[v])
                            total = ea_v.add(acc[t][v], y)
                            c[v] = ea_v.sub(ea_v.sub(total, acc[t][v]), y)
                            acc[t][v] = total
                        else:
                            acc[t][v] = ea_v.fma(em_v.convert(s, ea_v), em_v.convert(bv[v], ea_v), acc[t][v])
            for row, vals in zip(slots, acc):
                for p, v in zip(row, vals):
                    b.store(v, p)
        for row, targets_row in zip(slots, targets):
            for p, target in zip(row, targets_row):
                b.store(b.load(p), target, align=align)
