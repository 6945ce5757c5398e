"""Program -> LLVM IR (llvmlite.ir): the loop nest of one reduction kernel.

    void keomlir_kernel(i64 i_begin, i64 i_end, i64 n_j, T** args, i8** outs)

Layout: args[p] points to argument p: i-variables row-major (rows, dim),
j-variables transposed (dim, n_j) so that W consecutive j of one component are
one contiguous vector load, parameters a single row.  outs[k] is output k,
row-major with one row per i.

Schedule (`Schedule`): rows i are taken `rows` at a time (register tiling: one
load of j data serves every row); j runs in vectors of `lanes` (SIMD across j)
inside blocks of BLOCK (the unit of compensated summation), then a scalar tail.
Per row, the lane states are merged into one scalar state (`Reduction.merge`),
the tail j are added to it, and it is finalized.  Nodes that do not depend on j
are emitted before the j loops (parameter-only nodes once per call).  Each
operation's `lower` makes the values; this module only places them.
"""

from __future__ import annotations

import dataclasses
from llvmlite import ir

from ...ir.node import I, J
from .emitter import Emitter, counted_loop

KERNEL_NAME = "keomlir_kernel"
BLOCK = 512  # j per block: a multiple of every vector width
I64 = ir.IntType(64)
FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}


@dataclasses.dataclass(frozen=True)
class Schedule:
    lanes: int | None = None  # SIMD width across j (None: scalar code)
    rows: int = 1  # i rows sharing each load of j data


def c64(v):
    return ir.Constant(I64, v)


class _Values:
    """Component values of nodes for one row and one emitter, made on first use."""

    def __init__(self, em, load_var):
        self.em = em
        self.load_var = load_var
        self.memo = {}

    def get(self, node):
        found = self.memo.get(id(node))
        if found is not None:
            return found
        for n in node.walk():
            if id(n) in self.memo:
                continue
            if n.name == "Var":
                vals = self.load_var(n, self.em)
            else:
                vals = n.op.lower(self.em, [self.memo[id(a)] for a in n.args], n.attrs)
                if len(vals) != n.dim:  # a lowering bug, caught at compile time
                    raise AssertionError(f"{n.name} lowered to {len(vals)} values, expected {n.dim}")
            self.memo[id(n)] = vals
        return self.memo[id(node)]

    def forget(self, keys):
        for k in keys:
            self.memo.pop(k, None)


def _map_state(state, fn):
    """The same nested dict/list structure with every slot pointer replaced by fn(ptr)."""
    if state is None:
        return None
    if isinstance(state, dict):
        return {k: _map_state(v, fn) for k, v in state.items()}
    if isinstance(state, list):
        return [_map_state(v, fn) for v in state]
    return fn(state)


class _Kernel:
    def __init__(self, program, dtype, acc_dtype, sum_scheme, schedule):
        for _, root in program.roots():
            for n in root.walk():
                if not n.op.lowers:
                    raise NotImplementedError(
                        f"{n.name} must be rewritten by the autodiff pass before code generation")
        self.program, self.red, self.schedule = program, program.red, schedule
        t = FLOAT_TYPES[dtype]
        self.module = ir.Module(name="keomlir")
        fn_type = ir.FunctionType(ir.VoidType(), [I64, I64, I64, t.as_pointer().as_pointer(),
                                                  ir.IntType(8).as_pointer().as_pointer()])
        self.fn = ir.Function(self.module, fn_type, KERNEL_NAME)
        self.i_begin, self.i_end, self.n_j, self.args_ptr, self.outs_ptr = self.fn.args
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.em = Emitter(self.b, t)
        self.ea = self.em.with_type(FLOAT_TYPES[acc_dtype or dtype])
        self.em_v = self.em.with_lanes(schedule.lanes) if schedule.lanes else None
        self.ea_v = self.ea.with_lanes(schedule.lanes) if schedule.lanes else None
        for e in (self.em, self.ea, self.em_v, self.ea_v):
            if e is not None:
                e.scheme = sum_scheme
        self.roots = [r for _, r in program.roots()]
        nodes = [n for r in self.roots for n in r.walk()]
        self.j_nodes = {id(n) for n in nodes if n.cat & J}
        self.row_nodes = {id(n) for n in nodes if n.cat & (I | J)}
        self.dims = (program.formula.dim, None if program.formula2 is None else program.formula2.dim)
        self.bases = {}
        self.j_loads = {}  # loads of j data in the current iteration, shared by the rows

    # ---- data access -------------------------------------------------------------
    def base(self, pos):
        if pos not in self.bases:
            with self.b.goto_block(self.em.entry):
                self.bases[pos] = self.b.load(self.b.gep(self.args_ptr, [c64(pos)]))
        return self.bases[pos]

    def loader(self, row):
        """load_var for one row: i and parameter data splatted, j data by vector."""
        b = self.b

        def load_var(n, em):
            pos, dim, cat = n.attrs
            if cat == 1:
                key = (n.attrs, em.lanes)
                if key not in self.j_loads:
                    self.j_loads[key] = [self._load_j(pos, c, em) for c in range(dim)]
                return self.j_loads[key]
            start = b.mul(row, c64(dim)) if cat == 0 else c64(0)
            return [em.splat(b.load(b.gep(self.base(pos), [b.add(start, c64(c))]))) for c in range(dim)]

        return load_var

    def _load_j(self, pos, c, em):
        b = self.b
        ptr = b.gep(self.base(pos), [b.add(b.mul(c64(c), self.n_j), self.j)])
        if em.lanes is None:
            return b.load(ptr)
        return b.load(b.bitcast(ptr, em.t.as_pointer()), align=em.bits // 8)

    # ---- the kernel --------------------------------------------------------------
    def build(self):
        b = self.b
        params = _Values(self.em, self.loader(None))
        for r in self.roots:
            for n in r.walk():
                if n.cat == 0:
                    params.get(n)  # once per call, shared below
        self.param_memo = params.memo
        self.out_rows = []
        for k, (shape, kind) in enumerate(self.red.outputs(*self.dims, self.program.opt_arg)):
            width = 1
            for s in shape:
                width *= s
            ty = I64 if kind == "index" else self.em.t
            raw = b.load(b.gep(self.outs_ptr, [c64(k)]))
            self.out_rows.append((b.bitcast(raw, ty.as_pointer()), width))

        rows = self.schedule.rows
        if rows > 1:  # full tiles of rows, then the remaining rows one by one
            count = b.sub(self.i_end, self.i_begin)
            tiled_end = b.sub(self.i_end, b.srem(count, c64(rows)))
            with counted_loop(b, self.i_begin, tiled_end, "i", rows) as i:
                self.rows_body([b.add(i, c64(r)) for r in range(rows)])
            start = tiled_end
        else:
            start = self.i_begin
        with counted_loop(b, start, self.i_end, "i1") as i:
            self.rows_body([i])
        b.ret_void()
        return self.module

    def _row_values(self, em, row):
        v = _Values(em, self.loader(row))
        if em.lanes is None:
            v.memo.update(self.param_memo)
        else:
            v.memo.update({k: [em.splat(x) for x in vals] for k, vals in self.param_memo.items()})
        return v

    def _emit_row_scope(self, values):
        for r in self.roots:
            for n in r.walk():
                if n.cat & J == 0:
                    values.get(n)

    def _update(self, rows, em, ea, states, j):
        for values, st in zip(rows, states):
            f = values.get(self.program.formula)
            g = values.get(self.program.formula2) if self.program.formula2 is not None else None
            self.red.update(em, ea, st, f, g, j)
        for values in rows:
            values.forget(self.j_nodes)
        self.j_loads.clear()

    def rows_body(self, row_ids):
        b, red, k = self.b, self.red, self.program.opt_arg
        lanes = self.schedule.lanes
        scalar_rows = [self._row_values(self.em, i) for i in row_ids]
        for v in scalar_rows:
            self._emit_row_scope(v)
        n_vec = c64(0)
        vec_states = None
        if lanes:
            vec_rows = [self._row_values(self.em_v, i) for i in row_ids]
            for v in vec_rows:
                self._emit_row_scope(v)
            vec_states = [red.init(self.em_v, self.ea_v, self.dims, k) for _ in row_ids]
            n_vec = b.sub(self.n_j, b.srem(self.n_j, c64(lanes)))
            with counted_loop(b, c64(0), n_vec, "jb", BLOCK) as jb:
                room = b.sub(n_vec, jb)
                block_end = b.add(jb, b.select(b.icmp_signed("<", room, c64(BLOCK)), room, c64(BLOCK)))
                with counted_loop(b, jb, block_end, "jv", lanes) as jv:
                    self.j = jv
                    self._update(vec_rows, self.em_v, self.ea_v, vec_states, self.em_v.lane_indices(jv))
                for st in vec_states:
                    red.end_block(self.em_v, self.ea_v, st)
            for v in vec_rows:
                v.forget(self.row_nodes)
        states = []
        for r, _ in enumerate(row_ids):
            if vec_states is None:
                states.append(red.init(self.em, self.ea, self.dims, k))
                continue
            if red.lanes_share_state:  # already one scalar state
                states.append(vec_states[r])
                continue
            merged = self._lane_state(vec_states[r], c64(0))
            # a loop, not W copies: the bound is W (n_j >= 0) in a form LLVM cannot
            # constant-fold, so it does not unroll the merge W times (compile time)
            lane_end = b.add(c64(lanes), b.ashr(self.n_j, c64(63)))
            with counted_loop(b, c64(1), lane_end, "lane") as lane:
                red.merge(self.em, self.ea, merged, self._lane_state(vec_states[r], lane))
            states.append(merged)
        # the scalar j: all of them without SIMD, the tail with it (blocked as above)
        with counted_loop(b, n_vec, self.n_j, "jt", BLOCK) as jb:
            room = b.sub(self.n_j, jb)
            block_end = b.add(jb, b.select(b.icmp_signed("<", room, c64(BLOCK)), room, c64(BLOCK)))
            with counted_loop(b, jb, block_end, "j") as j:
                self.j = j
                self._update(scalar_rows, self.em, self.ea, states, j)
            for st in states:
                red.end_block(self.em, self.ea, st)
        for row, st in zip(row_ids, states):
            for (ptr, width), vals in zip(self.out_rows, red.finalize(self.em, self.ea, st)):
                start = b.mul(row, c64(width))
                for c, v in enumerate(vals):
                    b.store(v, b.gep(ptr, [b.add(start, c64(c))]))
        for v in scalar_rows:
            v.forget(self.row_nodes)

    def _lane_state(self, vec_state, lane):
        """A scalar state holding lane `lane` (an i64 value) of a vector state."""
        b = self.b

        def one(ptr):
            value = b.extract_element(b.load(ptr), lane)
            with b.goto_block(self.em.entry):
                b.position_at_start(self.em.entry)
                slot = b.alloca(value.type)
            b.store(value, slot)
            return slot

        return _map_state(vec_state, one)


def render(program, dtype, acc_dtype=None, sum_scheme="block_sum", schedule=Schedule()):
    """An llvmlite module holding the kernel of `program` for `dtype`."""
    return _Kernel(program, dtype, acc_dtype, sum_scheme, schedule).build()
