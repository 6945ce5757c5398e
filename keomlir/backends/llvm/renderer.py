"""Program -> LLVM IR (llvmlite.ir): the loop nest of one reduction kernel.

    void keomlir_kernel(i64 i0, i64 i1, i64 j0, i64 j1, i64 n_j, T** args, i8** outs)
    void keomlir_partial(i64 i0, i64 i1, i64 j0, i64 j1, i64 n_j, T** args, i8* part)
    void keomlir_resume(i64 i0, i64 i1, i64 j0, i64 j1, i64 n_j, T** args, i8* part)
    void keomlir_combine(i64 i0, i64 i1, i64 n_rows, i64 n_parts, i8* parts, i8** outs)
    void keomlir_merge(i64 i0, i64 i1, i64 n_parts, i8** parts, i8* out)
    i64  keomlir_state_cells()
    void keomlir_ranges(i64 k0, i64 k1, i64* ranges_i, i64* slices_i, i64* redranges_j,
                        i64 n_j, T** args, i8** outs)

The kernel reduces rows [i0, i1) over j in [j0, j1).  When there are few rows
and many j, threads run `partial` on parts of j, each writing its rows' raw
reduction states (8-byte cells) to its part buffer, and `combine` merges the
parts in order of j and finalizes: correct for every reduction, as `merge` is.
`resume` continues the states already in its part buffer over more j (a K-min
list resumed, not restarted), and `merge` folds states of consecutive parts of j
without finalizing them: what a distributed reduction (keomlir.dask) chains and
merges in a tree.
`ranges` is the block-sparse kernel (pykeops's `ranges`): for each block k in
[k0, k1), rows [ranges_i[k,0], ranges_i[k,1]) reduce over the union of the j
intervals redranges_j[l] for l in [slices_i[k-1], slices_i[k]) (slices_i[-1] = 0);
the front end has checked every index against the array sizes.

Layout: args[p] points to argument p: i-variables row-major (rows, dim),
j-variables transposed (dim, n_j) so that W consecutive j of one component are
one contiguous vector load (but b of the columns strategy: row-major, see
strategies/columns.py), parameters a single row.  outs[k] is output k,
row-major with one row per i.

Schedule (a `keomlir.schedule.Schedule`, every decision made there): rows i are taken `rows`
at a time (register tiling: one load of j data serves every row); j runs in
vectors of `lanes` (SIMD across j) inside blocks (the unit of compensated
summation), then a scalar tail; with a `cache_block`, j in blocks that every tile
of a chunk of rows reads while they stay in cache.
Per row, the lane states are merged into one scalar state (`Reduction.merge`),
the tail j are added to it, and it is finalized.  This module is the skeleton;
the schedule's `strategy` names the loop nest (`strategies/`: plain lanes, the
contraction micro-kernel, the screened K-min, the column micro-kernel) that fills
in the SIMD loop, the updates and the data layout.  Nodes that do not depend on j
are emitted before the j loops (parameter-only nodes once per call).  Each
operation's `lower` makes the values; this module only places them.
"""

from __future__ import annotations

from llvmlite import ir

from ...ir.node import ssa_nodes
from ...schedule import host, schedule as make_schedule
from . import halfconv, mathlib, wide
from .emitter import Emitter, SlotArray, counted_loop
from .strategies import loop_nest
from .strategies.base import LoopNest
from .skeleton import (FLOAT_TYPES, I64, KernelSkeleton, Values, c64, cell_index, imin, intervals, map_state,
                       n_cells)

KERNEL_NAME = "keomlir_kernel"
PARTIAL_NAME = "keomlir_partial"
RESUME_NAME = "keomlir_resume"
COMBINE_NAME = "keomlir_combine"
MERGE_NAME = "keomlir_merge"
CELLS_NAME = "keomlir_state_cells"
ROW_BLOCK_NAME = "keomlir_row_block"
J_BLOCK_NAME = "keomlir_j_block"
RANGES_NAME = "keomlir_ranges"
VARIANTS = ("kernel", "split_j", "ranges")


class _Kernel(KernelSkeleton):
    emitter_class = Emitter

    def __init__(self, program, dtype, acc_dtype, sum_scheme, schedule):
        program = kernel_program(program, schedule)
        arith = halfconv.arithmetic(dtype)  # half data is computed in float32
        super().__init__(program, FLOAT_TYPES[arith], FLOAT_TYPES[acc_dtype or arith], sum_scheme, "keomlir")
        self.dtype, self.t_data = dtype, halfconv.STORAGE[dtype]  # the arrays' and outputs' type
        self.data_bytes = {"float64": 8, "float32": 4}.get(dtype, 2)
        self.schedule = s = schedule
        self.lanes = s.lanes
        self.rows, self.block, self.cache_bytes = s.rows, s.sum_block, s.cache_block
        nodes = ssa_nodes(program.roots())
        self.row_block, self.j_block = self.rows, 64  # (cache blocking sets its own: `_blocked_tiles`)
        self.contractions = [nodes[name] for name in s.contract]
        self.j_loads = {}  # loads of j data at the current j (`at_j`), shared by the rows
        self.nest = loop_nest(s.strategy)(self)  # the strategy's loop nest (strategies/)
        # the states of the vector part are each row's scalar state (no lane states to merge)
        self.one_state = self.red.lanes_share_state or self.nest.one_state

    def _function(self, name, arg_types):
        """Start a function: builder and emitters for the data type and the accumulators
        (and their SIMD versions)."""
        self.begin(ir.Function(self.module, ir.FunctionType(ir.VoidType(), arg_types), name))
        self.em.wide_threshold = self.ea.wide_threshold = self.schedule.wide_threshold
        self.em.features = self.ea.features = mathlib.target_features(self.schedule.target)
        # float64 sums of half data reach float32 rounded to odd: then rounded once to half (halfconv)
        self.em.narrow_to_odd = self.ea.narrow_to_odd = self.dtype in halfconv.HALF
        lanes = self.lanes
        self.bases = {}
        if type(self.nest).load_j is LoopNest.load_j and self.t_data == self.t:  # (j data read as it lies)
            self.em.j_streams = self.ea.j_streams = self._j_streams
        self.em_v = self.em.with_lanes(lanes) if lanes else None
        self.ea_v = self.ea.with_lanes(lanes) if lanes else None
        return self.fn.args

    def _j_streams(self):
        """The byte addresses of component c of each j variable at j = 0 (`load_j`'s default layout:
        base + (c n_j + j) elements), in the entry block."""
        b = self.b
        j_vars = [(self.base(pos), dim) for pos, (_, dim, cat) in enumerate(self.program.arguments) if cat == 1]
        with b.goto_block(self.em.entry):  # (not around `base`: a builder leaves a nested goto_block at its block's end)
            return [b.add(b.ptrtoint(base, I64), b.mul(c64(c * self.data_bytes), self.n_j))
                    for base, dim in j_vars for c in range(dim)]

    # ---- data access -------------------------------------------------------------
    def base(self, pos):
        """The pointer to argument `pos`'s data: of the data type for j variables; of float32 for
        the i variables and parameters of half data, which the runtime converts (`cpu.Arguments`):
        read for every j, they would be converted again for every j."""
        if pos not in self.bases:
            with self.b.goto_block(self.em.entry):
                ptr = self.b.load(self.b.gep(self.args_ptr, [c64(pos)]))
                if self.t_data != self.t and self.program.arguments[pos][2] != 1:
                    ptr = self.b.bitcast(ptr, self.t.as_pointer())
                self.bases[pos] = ptr
        return self.bases[pos]

    def loader(self, row):
        """load_var for one row: i and parameter data splatted, j data by vector."""
        b = self.b

        def load_var(n, em):
            pos, dim, cat = n.attrs
            if em.is_wide(dim):
                return self._wide_var(n, em, row)
            if cat == 1:
                key = (n.attrs, em.lanes)
                if key not in self.j_loads:
                    self.j_loads[key] = [self.load_j(pos, c64(c), em) for c in range(dim)]
                return self.j_loads[key]
            start = b.mul(row, c64(dim)) if cat == 0 else c64(0)
            return [em.splat(self.load_data(b.gep(self.base(pos), [b.add(start, c64(c))]))) for c in range(dim)]

        return load_var

    def _wide_var(self, n, em, row):
        """A wide variable, loaded component by component inside the consumer's loop."""
        b = self.b
        pos, dim, cat = n.attrs
        if cat == 1:
            def at(c):
                return self.load_j(pos, c, em)
        else:
            start = b.mul(row, c64(dim)) if cat == 0 else c64(0)

            def at(c):
                return em.splat(self.load_data(b.gep(self.base(pos), [b.add(start, c)])))
        return em.wide(dim, at, cheap=True)

    def load_j(self, pos, c, em):
        """Component c (an i64 value) of j variable `pos` at the current j (a vector of them):
        transposed data, or as the strategy lays it out."""
        found = self.nest.load_j(pos, c, em)
        if found is not None:
            return found
        b = self.b
        return self.load_data(b.gep(self.base(pos), [b.add(b.mul(c, self.n_j), self.j)]), em.lanes)

    def load_data(self, ptr, lanes=None):
        """The argument data at `ptr` (a pointer into an argument, `base`) in the arithmetic type:
        one value, or a vector of `lanes` consecutive ones (half data converted: `halfconv`)."""
        b = self.b
        ty = ptr.type.pointee  # (the data type, or float32: see `base`)
        if lanes is None:
            value = b.load(ptr)
        else:
            value = b.load(b.bitcast(ptr, ir.VectorType(ty, lanes).as_pointer()),
                           align=self.data_bytes if ty == self.t_data else self.em.bits // 8)
        return halfconv.extend(b, value, self.dtype, self.schedule.target) if ty == self.t_data else value

    def output_value(self, v, kind):
        """A finalized value as the outputs store it (half outputs rounded to nearest even)."""
        return v if kind == "index" else halfconv.narrow(self.b, v, self.dtype, self.schedule.target)

    def at_j(self, j):
        """Make j (an i64 value, or a vector of them) the current j: loads of j data are
        shared by the rows until the next."""
        self.j = j
        self.j_loads.clear()

    def _out_rows(self, outs_ptr):
        """The typed pointers of the outputs, from the i8** argument."""
        rows = []
        for k, (_, kind) in enumerate(self.outputs):
            ty = I64 if kind == "index" else self.t_data
            raw = self.b.load(self.b.gep(outs_ptr, [c64(k)]))
            rows.append(self.b.bitcast(raw, ty.as_pointer()))
        return rows

    # ---- entry points --------------------------------------------------------------
    def build(self, variant="kernel"):
        """The module of one variant: `keomlir_kernel`; `partial`, `resume`, `combine`,
        `merge` and `state_cells` (split_j); or the block-sparse `keomlir_ranges`."""
        ptr_t = self.t_data.as_pointer().as_pointer()
        i8p = ir.IntType(8).as_pointer()
        if variant == "kernel":  # the whole reduction of rows [i0, i1) over j in [j0, j1), finalized into outs
            i0, i1, j0, j1, self.n_j, self.args_ptr, outs = self._function(
                KERNEL_NAME, [I64, I64, I64, I64, I64, ptr_t, i8p.as_pointer()])
            out_rows = self._out_rows(outs)
            self._hoist_params()
            self._tiles(i0, i1, j0, j1, lambda row, st: self.write_outputs(out_rows, row, st))
            self.b.ret_void()
            self._blocks()
        elif variant == "split_j":  # the same over a part of j, states written (not finalized) to part[row]
            i0, i1, j0, j1, self.n_j, self.args_ptr, part = self._function(
                PARTIAL_NAME, [I64, I64, I64, I64, I64, ptr_t, i8p])
            self._hoist_params()
            self._tiles(i0, i1, j0, j1, lambda row, st: self._save_state(part, row, st))
            self.b.ret_void()
            self._resume(ptr_t, i8p)
            self._combine()
            self._merge(i8p)
            self._cells()
            self._blocks()
        elif variant == "ranges":
            self._ranges(ptr_t, i8p)
        else:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        return self.module

    def _hoist_params(self):
        """Parameter-only nodes, emitted once per call and shared by every row."""
        params = Values(self.em, self.loader(None))
        self.emit_nodes(params, lambda cat: cat == 0)
        self.param_memo = params.memo

    def _row_tiles(self, i0, i1, j_span, emit_result, start_state=None):
        """Rows [i0, i1) in full tiles of `rows`, then one by one, each reduced over j_span
        (from start_state(row) rather than a fresh state, if given: see `rows_body`)."""
        b, rows = self.b, self.rows
        start = i0
        if rows > 1:
            tiled_end = b.sub(i1, b.srem(b.sub(i1, i0), c64(rows)))
            with counted_loop(b, i0, tiled_end, "i", rows) as i:
                self.rows_body([b.add(i, c64(r)) for r in range(rows)], j_span, emit_result, start_state)
            start = tiled_end
        with counted_loop(b, start, i1, "i1") as i:
            self.rows_body([i], j_span, emit_result, start_state)

    def _tiles(self, i0, i1, j0, j1, emit_result, initial=None):
        """Rows [i0, i1) reduced over [j0, j1), from fresh states or, if given, from
        initial(row)'s: as `_row_tiles`, or cache-blocked as the schedule says (`_blocked_tiles`)."""
        if self.cache_bytes:
            self._blocked_tiles(i0, i1, j0, j1, emit_result, initial)
        elif initial is None:
            self._row_tiles(i0, i1, (j0, j1), emit_result)
        else:
            self._row_tiles(i0, i1, (j0, j1), *self._continuing(initial, emit_result))

    def _continuing(self, kept, save):
        """(emit_result, start_state) for rows continuing from the states kept(row) returns:
        a reduction whose lanes share one state (K-min) resumes from it (restarted, its list
        would insert anew), others merge their new state into it in order of j; save(row,
        state) receives the continued state."""
        if self.red.lanes_share_state and self.lanes:
            return save, kept

        def merge_into(row, st):
            state = kept(row)
            self.red.merge(self.em, self.ea, state, st)
            save(row, state)

        return merge_into, None

    def _blocked_tiles(self, i0, i1, j0, j1, emit_result, initial=None):
        """Chunks of rows, each reduced over j in blocks whose j data (about the schedule's
        `cache_bytes`) stays in cache while every tile of the chunk reads it: streamed
        from memory once per tile, the j data of a wide contraction is what the kernel
        waits for.  The chunk's states (fresh, or initial(row)'s) wait in a stack buffer
        between blocks, each block continuing them in order of j (`_continuing`)."""
        b = self.b
        cells = n_cells(self.fresh_state())
        s = self.schedule
        chunk = self.rows * max(1, min(s.chunk_rows, s.chunk_bytes // (8 * cells)) // self.rows)
        j_bytes = sum(dim for _, dim, cat in self.program.arguments if cat == 1) * self.data_bytes
        jblock = max(64, self.cache_bytes // j_bytes // 64 * 64)
        self.row_block, self.j_block = chunk, jblock
        with b.goto_block(self.em.entry):
            b.position_at_start(self.em.entry)
            buf = b.bitcast(b.alloca(ir.ArrayType(ir.IntType(8), chunk * cells * 8)), ir.IntType(8).as_pointer())
        with counted_loop(b, i0, i1, "ic", chunk) as ic:
            ie = imin(b, b.add(ic, c64(chunk)), i1)
            with counted_loop(b, ic, ie, "ir") as row:
                self._save_state(buf, b.sub(row, ic), self.fresh_state() if initial is None else initial(row))
            emit, start = self._continuing(lambda row: self._load_state(buf, b.sub(row, ic)),
                                           lambda row, st: self._save_state(buf, b.sub(row, ic), st))
            with counted_loop(b, j0, j1, "jc", jblock) as jc:
                je = imin(b, b.add(jc, c64(jblock)), j1)
                self.nest.begin_cache_block(jc, je, jblock)
                self._row_tiles(ic, ie, (jc, je), emit, start)
            self.nest.end_cache_blocks()
            with counted_loop(b, ic, ie, "ie") as row:
                emit_result(row, self._load_state(buf, b.sub(row, ic)))

    def _ranges(self, ptr_t, i8p):
        """ranges(k0, k1, ranges_i, slices_i, redranges_j, n_j, args, outs): blocks [k0, k1)."""
        i64p = I64.as_pointer()
        k0, k1, ranges_i, slices_i, redranges, self.n_j, self.args_ptr, outs = self._function(
            RANGES_NAME, [I64, I64, i64p, i64p, i64p, I64, ptr_t, i8p.as_pointer()])
        b = self.b
        out_rows = self._out_rows(outs)
        self._hoist_params()
        with counted_loop(b, k0, k1, "block") as k:
            i0 = b.load(b.gep(ranges_i, [b.mul(k, c64(2))]))
            i1 = b.load(b.gep(ranges_i, [b.add(b.mul(k, c64(2)), c64(1))]))
            first = b.icmp_signed("==", k, c64(0))
            s0 = b.select(first, c64(0), b.load(b.gep(slices_i, [b.select(first, k, b.sub(k, c64(1)))])))
            s1 = b.load(b.gep(slices_i, [k]))
            self._row_tiles(i0, i1, lambda: intervals(b, redranges, s0, s1),
                            lambda row, st: self.write_outputs(out_rows, row, st))
        b.ret_void()

    # ---- partial states: j split across threads --------------------------------------
    # A part buffer holds each row's state in consecutive cells, row-major (rows, n_cells).

    def cells_of(self, buf, row, n_cells):
        """cell(k, ty) for `save_state`/`load_state`: cell k of `row`, typed as the slot."""
        b = self.b

        def cell(k, ty):
            offset = b.mul(b.add(b.mul(row, c64(n_cells)), cell_index(k)), c64(8))
            return b.bitcast(b.gep(buf, [offset]), ty.as_pointer())

        return cell

    def _save_state(self, buf, row, state):
        self.save_state(state, self.cells_of(buf, row, n_cells(state)))

    def _load_state(self, buf, row):
        """A fresh scalar state holding row `row` of a part buffer."""
        state = self.fresh_state()
        self.load_state(state, self.cells_of(buf, row, n_cells(state)))
        return state

    def _resume(self, ptr_t, i8p):
        """resume(i0, i1, j0, j1, n_j, args, part): `partial`, each row continuing from the
        state already in part[row] (written by `partial`, `resume` or `merge`)."""
        i0, i1, j0, j1, self.n_j, self.args_ptr, part = self._function(
            RESUME_NAME, [I64, I64, I64, I64, I64, ptr_t, i8p])
        self._hoist_params()
        self._tiles(i0, i1, j0, j1, lambda row, st: self._save_state(part, row, st),
                    lambda row: self._load_state(part, row))
        self.b.ret_void()

    def _merge(self, i8p):
        """merge(i0, i1, n_parts, parts, out): rows [i0, i1) of the part buffers parts[0],
        parts[1]... (consecutive parts of j, in order) merged and written unfinalized to
        out (which may be parts[0]): a finalized Kahan sum or LogSumExp cannot merge again."""
        i0, i1, n_parts, parts, out = self._function(MERGE_NAME, [I64, I64, I64, i8p.as_pointer(), i8p])
        b = self.b
        with counted_loop(b, i0, i1, "i") as i:
            state = self._load_state(b.load(parts), i)
            with counted_loop(b, c64(1), n_parts, "part") as p:
                self.red.merge(self.em, self.ea, state, self._load_state(b.load(b.gep(parts, [p])), i))
            self._save_state(out, i, state)
        b.ret_void()

    def _combine(self):
        """combine(i0, i1, n_rows, n_parts, parts, outs): merge the parts in order of j, finalize."""
        i0, i1, n_rows, n_parts, parts, outs = self._function(
            COMBINE_NAME, [I64, I64, I64, I64, ir.IntType(8).as_pointer(), ir.IntType(8).as_pointer().as_pointer()])
        b = self.b
        out_rows = self._out_rows(outs)
        self.n_cells = cells = n_cells(self.fresh_state())
        part_bytes = b.mul(n_rows, c64(8 * cells))
        with counted_loop(b, i0, i1, "i") as i:
            state = self._load_state(parts, i)
            with counted_loop(b, c64(1), n_parts, "part") as p:
                other = self._load_state(b.gep(parts, [b.mul(p, part_bytes)]), i)
                self.red.merge(self.em, self.ea, state, other)
            self.write_outputs(out_rows, i, state)
        b.ret_void()

    def _cells(self):
        """cells() -> i64: the 8-byte cells of one row's state in a part buffer."""
        fn = ir.Function(self.module, ir.FunctionType(I64, []), CELLS_NAME)
        ir.IRBuilder(fn.append_basic_block("entry")).ret(c64(self.n_cells))

    def _blocks(self):
        """row_block() and j_block() -> i64: the rows and the j that a call's ranges are best
        multiples of (a tile of rows or a cache-blocked chunk; a cache block of j), for the
        runtime that cuts a long reduction into calls."""
        for name, value in ((ROW_BLOCK_NAME, self.row_block), (J_BLOCK_NAME, self.j_block)):
            fn = ir.Function(self.module, ir.FunctionType(I64, []), name)
            ir.IRBuilder(fn.append_basic_block("entry")).ret(c64(value))

    # ---- one tile of rows ------------------------------------------------------------
    def row_values(self, em, row):
        v = Values(em, self.loader(row))
        if em.lanes is None:
            v.memo.update(self.param_memo)
        else:
            v.memo.update({k: wide.splat(em, vals) if isinstance(vals, wide.Wide) else [em.splat(x) for x in vals]
                           for k, vals in self.param_memo.items()})
        return v

    def rows_body(self, row_ids, j_span, emit_result, start_state=None):
        """Reduce the rows `row_ids` over j_span: one interval (j0, j1), or a
        function returning the `intervals` of a block-sparse block.  start_state(row):
        the state to resume from, for a reduction whose lanes share one state (SIMD)."""
        red, k = self.red, self.program.opt_arg
        self.row_ids = row_ids
        scalar_rows = [self.row_values(self.em, i) for i in row_ids]
        for v in scalar_rows:
            self.emit_row_scope(v)
        vec_rows, vec_states = [], None
        if self.lanes:
            vec_rows = [self.row_values(self.em_v, i) for i in row_ids]
            self.nest.begin_tile(row_ids)
            for v in vec_rows:
                self.emit_row_scope(v)
            vec_states = self.nest.vector_states(row_ids, start_state)
        if isinstance(j_span, tuple):  # one interval: SIMD, lanes merged, then the tail added
            j0, j1 = j_span
            vec_end = self.nest.vector_part(vec_rows, vec_states, j0, j1) if self.lanes else j0
            states = self._merged_lanes(vec_states, len(row_ids))
            self._scalar_part(scalar_rows, states, vec_end, j1)
        else:  # many intervals: each one's SIMD part and tail, in order; lanes and tails merged last
            tails = (vec_states if vec_states is not None and self.one_state
                     else [red.init(self.em, self.ea, self.dims, k) for _ in row_ids])
            with j_span() as (j0, j1):
                vec_end = self.nest.vector_part(vec_rows, vec_states, j0, j1) if self.lanes else j0
                self._scalar_part(scalar_rows, tails, vec_end, j1)
            states = tails
            if vec_states is not None and not self.one_state:
                states = self._merged_lanes(vec_states, len(row_ids))
                for st, tail in zip(states, tails):
                    red.merge(self.em, self.ea, st, tail)
        for v in vec_rows:
            v.forget(self.row_nodes)
        for row, st in zip(row_ids, states):
            emit_result(row, st)
        for v in scalar_rows:
            v.forget(self.row_nodes)

    def _merged_lanes(self, vec_states, n_rows):
        """One scalar state per row: the lane states merged (fresh states without SIMD)."""
        b, red, lanes = self.b, self.red, self.lanes
        if vec_states is None:
            return [red.init(self.em, self.ea, self.dims, self.program.opt_arg) for _ in range(n_rows)]
        if self.one_state:  # already one scalar state
            return vec_states
        states = []
        for vec_state in vec_states:
            merged = self._lane_state(vec_state, c64(0))
            # a loop, not W copies: the bound is W (n_j >= 0) in a form LLVM cannot
            # constant-fold, so it does not unroll the merge W times (compile time)
            lane_end = b.add(c64(lanes), b.ashr(self.n_j, c64(63)))
            with counted_loop(b, c64(1), lane_end, "lane") as lane:
                red.merge(self.em, self.ea, merged, self._lane_state(vec_state, lane))
            states.append(merged)
        return states

    def _scalar_part(self, scalar_rows, states, j0, j1):
        """The j of [j0, j1) one at a time (all of them without SIMD, else the tail), in blocks."""
        b, block = self.b, self.block
        with self.nest.tile_states(states), counted_loop(b, j0, j1, "jtb", block) as jb:
            room = b.sub(j1, jb)
            block_end = b.add(jb, imin(b, room, c64(block)))
            with counted_loop(b, jb, block_end, "j") as j:
                self.at_j(j)
                self.nest.update(scalar_rows, self.em, self.ea, states, j)
            for st in states:
                self.red.end_block(self.em, self.ea, st)

    def _lane_state(self, vec_state, lane):
        """A scalar state holding lane `lane` (an i64 value) of a vector state."""
        b = self.b

        def one(ptr):
            if isinstance(ptr, SlotArray):  # a wide slot: its lane, component by component
                em = self.em
                scalar = SlotArray(em.array(ptr.ptr.type.pointee.element.element, ptr.n), ptr.n)
                with em.components(ptr.n) as c:
                    em.store(em.elem(scalar, c), b.extract_element(em.load(em.elem(ptr, c)), lane))
                return scalar
            value = b.extract_element(b.load(ptr), lane)
            with b.goto_block(self.em.entry):
                b.position_at_start(self.em.entry)
                slot = b.alloca(value.type)
            b.store(value, slot)
            return slot

        return map_state(vec_state, one)


def kernel_program(program, schedule):
    """What one kernel computes: `program` as the schedule's strategy runs it (the columns
    strategy: on one block of b's columns, the same kernel for every width of b; cache keys
    name this)."""
    return loop_nest(schedule.strategy).program(program, schedule)


def render(program, dtype, acc_dtype=None, sum_scheme="block_sum", variant="kernel", schedule=None):
    """An llvmlite module holding the kernel of `program` for `dtype`, run as `schedule`
    says (default: the host's): the plain kernel, the functions that reduce parts of j
    and combine them (split_j), or the block-sparse kernel (ranges)."""
    schedule = schedule or make_schedule(program, host(), dtype=dtype)
    return _Kernel(program, dtype, acc_dtype, sum_scheme, schedule).build(variant)
