"""Program -> LLVM IR (llvmlite.ir): the loop nest of one reduction kernel.

    void keomlir_kernel(i64 i0, i64 i1, i64 j0, i64 j1, i64 n_j, T** args, i8** outs)
    void keomlir_partial(i64 i0, i64 i1, i64 j0, i64 j1, i64 n_j, T** args, i8* part)
    void keomlir_combine(i64 i0, i64 i1, i64 n_rows, i64 n_parts, i8* parts, i8** outs)
    i64  keomlir_state_cells()

The kernel reduces rows [i0, i1) over j in [j0, j1).  When there are few rows
and many j, threads run `partial` on parts of j, each writing its rows' raw
reduction states (8-byte cells) to its part buffer, and `combine` merges the
parts in order of j and finalizes: correct for every reduction, as `merge` is.

Layout: args[p] points to argument p: i-variables row-major (rows, dim),
j-variables transposed (dim, n_j) so that W consecutive j of one component are
one contiguous vector load, parameters a single row.  outs[k] is output k,
row-major with one row per i.

Schedule (`program.tiling`, chosen by the tiling pass): rows i are taken `rows`
at a time (register tiling: one load of j data serves every row); j runs in
vectors of `lanes` (SIMD across j) inside blocks (the unit of compensated
summation), then a scalar tail.
Per row, the lane states are merged into one scalar state (`Reduction.merge`),
the tail j are added to it, and it is finalized.  Nodes that do not depend on j
are emitted before the j loops (parameter-only nodes once per call).  Each
operation's `lower` makes the values; this module only places them.
"""

from __future__ import annotations

from llvmlite import ir

from ...ir.node import I, J
from ...ir.program import Tiling
from .emitter import Emitter, counted_loop

KERNEL_NAME = "keomlir_kernel"
PARTIAL_NAME = "keomlir_partial"
COMBINE_NAME = "keomlir_combine"
CELLS_NAME = "keomlir_state_cells"
I64 = ir.IntType(64)
FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}


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
    def __init__(self, program, dtype, acc_dtype, sum_scheme):
        for _, root in program.roots():
            for n in root.walk():
                if not n.op.lowers:
                    raise NotImplementedError(
                        f"{n.name} must be rewritten by the autodiff pass before code generation")
        self.program, self.red = program, program.red
        self.t, self.acc_t, self.sum_scheme = FLOAT_TYPES[dtype], FLOAT_TYPES[acc_dtype or dtype], sum_scheme
        tiling = program.tiling or Tiling()
        self.lanes = tiling.lanes(32 if dtype == "float32" else 64)
        self.rows, self.block = tiling.rows, tiling.block
        self.module = ir.Module(name="keomlir")
        self.roots = [r for _, r in program.roots()]
        nodes = [n for r in self.roots for n in r.walk()]
        self.j_nodes = {id(n) for n in nodes if n.cat & J}
        self.row_nodes = {id(n) for n in nodes if n.cat & (I | J)}
        self.dims = (program.formula.dim, None if program.formula2 is None else program.formula2.dim)
        self.j_loads = {}  # loads of j data in the current iteration, shared by the rows

    def _function(self, name, arg_types):
        """Start a function: builder and emitters for the data type and the accumulators."""
        self.fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), arg_types), name)
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.em = Emitter(self.b, self.t, self.sum_scheme)
        self.ea = self.em.with_type(self.acc_t)
        lanes = self.lanes
        self.em_v = self.em.with_lanes(lanes) if lanes else None
        self.ea_v = self.ea.with_lanes(lanes) if lanes else None
        self.bases = {}
        return self.fn.args

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

    def _out_rows(self, outs_ptr):
        rows = []
        for k, (shape, kind) in enumerate(self.red.outputs(*self.dims, self.program.opt_arg)):
            width = 1
            for s in shape:
                width *= s
            ty = I64 if kind == "index" else self.t
            raw = self.b.load(self.b.gep(outs_ptr, [c64(k)]))
            rows.append((self.b.bitcast(raw, ty.as_pointer()), width))
        return rows

    def _store_outputs(self, out_rows, row, state):
        b = self.b
        for (ptr, width), vals in zip(out_rows, self.red.finalize(self.em, self.ea, state)):
            start = b.mul(row, c64(width))
            for c, v in enumerate(vals):
                b.store(v, b.gep(ptr, [b.add(start, c64(c))]))

    # ---- entry points --------------------------------------------------------------
    def build(self, split_j=False):
        """The module: `keomlir_kernel`, or (split_j) `partial`, `combine` and `state_cells`."""
        ptr_t = self.t.as_pointer().as_pointer()
        i8p = ir.IntType(8).as_pointer()
        if not split_j:  # the whole reduction of rows [i0, i1) over j in [j0, j1), finalized into outs
            i0, i1, j0, j1, self.n_j, self.args_ptr, outs = self._function(
                KERNEL_NAME, [I64, I64, I64, I64, I64, ptr_t, i8p.as_pointer()])
            out_rows = self._out_rows(outs)
            self._reduce_rows(i0, i1, j0, j1, lambda row, st: self._store_outputs(out_rows, row, st))
            return self.module
        # the same over a part of j, states written (not finalized) to part[row]
        i0, i1, j0, j1, self.n_j, self.args_ptr, part = self._function(
            PARTIAL_NAME, [I64, I64, I64, I64, I64, ptr_t, i8p])
        self._reduce_rows(i0, i1, j0, j1, lambda row, st: self._save_state(part, row, st))
        self._combine()
        self._cells()
        return self.module

    def _reduce_rows(self, i0, i1, j0, j1, emit_result):
        b = self.b
        params = _Values(self.em, self.loader(None))
        for r in self.roots:
            for n in r.walk():
                if n.cat == 0:
                    params.get(n)  # once per call, shared below
        self.param_memo = params.memo
        rows = self.rows
        start = i0
        if rows > 1:  # full tiles of rows, then the remaining rows one by one
            tiled_end = b.sub(i1, b.srem(b.sub(i1, i0), c64(rows)))
            with counted_loop(b, i0, tiled_end, "i", rows) as i:
                self.rows_body([b.add(i, c64(r)) for r in range(rows)], j0, j1, emit_result)
            start = tiled_end
        with counted_loop(b, start, i1, "i1") as i:
            self.rows_body([i], j0, j1, emit_result)
        b.ret_void()

    # ---- partial states: j split across threads --------------------------------------
    def _state_slots(self, state):
        slots = []
        _map_state(state, slots.append)
        return slots

    def _cell(self, buf, row, n_cells, k, ty):
        b = self.b
        offset = b.mul(b.add(b.mul(row, c64(n_cells)), c64(k)), c64(8))
        return b.bitcast(b.gep(buf, [offset]), ty.as_pointer())

    def _save_state(self, buf, row, state):
        slots = self._state_slots(state)
        for k, slot in enumerate(slots):
            self.b.store(self.b.load(slot), self._cell(buf, row, len(slots), k, slot.type.pointee))

    def _fresh_state(self):
        return self.red.init(self.em, self.ea, self.dims, self.program.opt_arg)

    def _load_state(self, buf, row):
        state = self._fresh_state()
        slots = self._state_slots(state)
        for k, slot in enumerate(slots):
            self.b.store(self.b.load(self._cell(buf, row, len(slots), k, slot.type.pointee)), slot)
        return state

    def _combine(self):
        """combine(i0, i1, n_rows, n_parts, parts, outs): merge the parts in order of j, finalize."""
        i0, i1, n_rows, n_parts, parts, outs = self._function(
            COMBINE_NAME, [I64, I64, I64, I64, ir.IntType(8).as_pointer(), ir.IntType(8).as_pointer().as_pointer()])
        b = self.b
        out_rows = self._out_rows(outs)
        self.n_cells = n_cells = len(self._state_slots(self._fresh_state()))
        part_bytes = b.mul(n_rows, c64(8 * n_cells))
        with counted_loop(b, i0, i1, "i") as i:
            state = self._load_state(parts, i)
            with counted_loop(b, c64(1), n_parts, "part") as p:
                other = self._load_state(b.gep(parts, [b.mul(p, part_bytes)]), i)
                self.red.merge(self.em, self.ea, state, other)
            self._store_outputs(out_rows, i, state)
        b.ret_void()

    def _cells(self):
        """cells() -> i64: the 8-byte cells of one row's state in a part buffer."""
        fn = ir.Function(self.module, ir.FunctionType(I64, []), CELLS_NAME)
        ir.IRBuilder(fn.append_basic_block("entry")).ret(c64(self.n_cells))

    # ---- one tile of rows ------------------------------------------------------------
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

    def rows_body(self, row_ids, j0, j1, emit_result):
        b, red, k = self.b, self.red, self.program.opt_arg
        lanes, block = self.lanes, self.block
        scalar_rows = [self._row_values(self.em, i) for i in row_ids]
        for v in scalar_rows:
            self._emit_row_scope(v)
        vec_end = j0
        vec_states = None
        if lanes:
            vec_rows = [self._row_values(self.em_v, i) for i in row_ids]
            for v in vec_rows:
                self._emit_row_scope(v)
            vec_states = [red.init(self.em_v, self.ea_v, self.dims, k) for _ in row_ids]
            vec_end = b.sub(j1, b.srem(b.sub(j1, j0), c64(lanes)))
            with counted_loop(b, j0, vec_end, "jvb", block) as jb:
                room = b.sub(vec_end, jb)
                block_end = b.add(jb, b.select(b.icmp_signed("<", room, c64(block)), room, c64(block)))
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
        with counted_loop(b, vec_end, j1, "jtb", block) as jb:
            room = b.sub(j1, jb)
            block_end = b.add(jb, b.select(b.icmp_signed("<", room, c64(block)), room, c64(block)))
            with counted_loop(b, jb, block_end, "j") as j:
                self.j = j
                self._update(scalar_rows, self.em, self.ea, states, j)
            for st in states:
                red.end_block(self.em, self.ea, st)
        for row, st in zip(row_ids, states):
            emit_result(row, st)
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


def render(program, dtype, acc_dtype=None, sum_scheme="block_sum", split_j=False):
    """An llvmlite module holding the kernel of `program` for `dtype`, tiled as
    `program.tiling` says (or, split_j, the functions that reduce parts of j and
    combine them)."""
    return _Kernel(program, dtype, acc_dtype, sum_scheme).build(split_j)
