"""What every reduction kernel does, whatever the target: the part of a kernel
that the CPU renderer (`renderer.py`) and the NVPTX renderer (`nvptx.py`) share.

A kernel checks that every node lowers, makes each node's values once per row
(`Values`), emits the nodes that do not depend on j before the j loop, folds
F_ij (and G_ij) into the reduction's state once per j, writes finalized states
to row-major outputs and moves raw states through buffers of 8-byte cells.
The renderers add only what differs: where data comes from (SIMD vectors of j
and register tiles of rows on the CPU, shared-memory tiles and one thread per
row on the GPU), how rows and j are split, and the functions' signatures.
"""

from __future__ import annotations

import contextlib
import math

from llvmlite import ir

from ...ir.node import I, J
from ...ir.reductions import Scratch
from . import wide
from .emitter import SlotArray, Wide, counted_loop

I64 = ir.IntType(64)
FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}


def c64(v):
    return ir.Constant(I64, v)


def imin(b, x, y):
    """The smaller of two i64 values."""
    return b.select(b.icmp_signed("<", x, y), x, y)


def map_state(state, fn):
    """The same nested dict/list structure with every slot pointer replaced by fn(ptr)."""
    if state is None or isinstance(state, Scratch):  # scratch memory is no part of a state: dropped
        return None
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, list):
        return [map_state(v, fn) for v in state]
    return fn(state)


def state_slots(state):
    """The slots of a reduction state (pointers, or wide `SlotArray`s), in the fixed order of their cells."""
    slots = []
    map_state(state, slots.append)
    return slots


def n_cells(state):
    """The 8-byte cells a state takes in a buffer (a SlotArray takes one per component)."""
    return sum(s.n if isinstance(s, SlotArray) else 1 for s in state_slots(state))


def cell_index(k):
    return c64(k) if isinstance(k, int) else k


class Values:
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
                args = [self.memo[id(a)] for a in n.args]
                vals = wide.lower(self.em, n, args)  # loops over components, for wide nodes
                if vals is None:
                    vals = n.op.lower(self.em, [wide.as_list(self.em, a) for a in args], n.attrs)
                got = vals.dim if isinstance(vals, Wide) else len(vals)
                if got != n.dim:  # a lowering bug, caught at compile time
                    raise AssertionError(f"{n.name} lowered to {got} values, expected {n.dim}")
            self.memo[id(n)] = vals
        return self.memo[id(node)]

    def forget(self, keys):
        for k in keys:
            self.memo.pop(k, None)


@contextlib.contextmanager
def intervals(b, redranges, first, last):
    """The j intervals redranges[l] = (start, end), l in [first, last): a block's j set
    in the block-sparse kernels; yields (start, end) inside the loop over l."""
    with counted_loop(b, first, last, "range") as l:
        start = b.load(b.gep(redranges, [b.mul(l, c64(2))]))
        end = b.load(b.gep(redranges, [b.add(b.mul(l, c64(2)), c64(1))]))
        yield start, end


class KernelSkeleton:
    """A module of kernels for one program: the node classes, the state and the outputs.

    `t` is the arithmetic type, `acc_t` the accumulators'; `begin` starts a function
    and sets `fn`, `b`, `em`, `ea` (the emitters of both types) for the methods below."""

    emitter_class = None  # set by the renderer

    def __init__(self, program, t, acc_t, sum_scheme, module_name):
        for _, root in program.roots():
            for n in root.walk():
                if not n.op.lowers:
                    raise NotImplementedError(
                        f"{n.name} must be rewritten by the autodiff pass before code generation")
        self.program, self.red = program, program.red
        self.t, self.acc_t, self.sum_scheme = t, acc_t, sum_scheme
        self.module = ir.Module(name=module_name)
        self.roots = [r for _, r in program.roots()]
        nodes = [n for r in self.roots for n in r.walk()]
        self.j_nodes = {id(n) for n in nodes if n.cat & J}  # recomputed for every j
        self.row_nodes = {id(n) for n in nodes if n.cat & (I | J)}  # recomputed for every row
        self.dims = (program.formula.dim, None if program.formula2 is None else program.formula2.dim)
        self.outputs = self.red.outputs(*self.dims, program.opt_arg)  # [(shape, 'float' | 'index')]

    def begin(self, fn):
        """Start emitting `fn`'s body: its builder and emitters."""
        self.fn = fn
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.em = self.emitter_class(self.b, self.t, self.sum_scheme)
        self.ea = self.em.with_type(self.acc_t)

    # ---- nodes ---------------------------------------------------------------------
    def emit_nodes(self, values, keep):
        """Make the values of every node n with keep(n.cat) (hoisting out of inner loops)."""
        for r in self.roots:
            for n in r.walk():
                if keep(n.cat):
                    v = values.get(n)
                    if isinstance(v, Wide) and not v.cheap:  # computed once here, not in every inner loop
                        values.memo[id(n)] = wide.materialize(values.em, v)

    def emit_row_scope(self, values):
        """The nodes that do not depend on j: once per row, before the j loop."""
        self.emit_nodes(values, lambda cat: cat & J == 0)

    def update(self, rows, em, ea, states, j):
        """Fold F_j (and G_j) of every row (its `Values`) into its state; forget the j nodes."""
        for values, st in zip(rows, states):
            f = self._red_input(em, values.get(self.program.formula), self.dims[0])
            g = values.get(self.program.formula2) if self.program.formula2 is not None else None
            g = None if g is None else self._red_input(em, g, self.dims[1])
            self.red.update(em, ea, st, f, g, j)
        for values in rows:
            values.forget(self.j_nodes)

    def _red_input(self, em, f, dim):
        """F (or G) as the reduction takes it: wide (a Wide) for a reduction keeping a
        wide state (`wide_state`), else a list of components."""
        if getattr(self.red, "wide_state", False) and em.is_wide(dim):
            return wide.as_wide(em, f)
        return wide.as_list(em, f)

    # ---- states and outputs --------------------------------------------------------------
    def fresh_state(self, em=None, ea=None):
        em, ea = (self.em, self.ea) if em is None else (em, ea)
        return self.red.init(em, ea, self.dims, self.program.opt_arg)

    def to_cell(self, v):
        """A slot's value as stored in its 8-byte cell (the renderer's encoding)."""
        return v

    def from_cell(self, v, ty):
        return v

    def save_state(self, state, cell):
        """Every slot of `state` to its cell: cell(k, slot type) -> pointer to cell k."""
        b, k = self.b, 0
        for slot in state_slots(state):
            if isinstance(slot, SlotArray):
                with self.em.components(slot.n) as c:
                    ptr = self.em.elem(slot, c)
                    b.store(self.to_cell(b.load(ptr)), cell(b.add(c64(k), c), ptr.type.pointee))
                k += slot.n
                continue
            v = self.to_cell(b.load(slot))
            b.store(v, cell(k, slot.type.pointee))
            k += 1

    def load_state(self, state, cell):
        """The slots of `state` from their cells (as `save_state` wrote them)."""
        b, k = self.b, 0
        for slot in state_slots(state):
            if isinstance(slot, SlotArray):
                with self.em.components(slot.n) as c:
                    ptr = self.em.elem(slot, c)
                    ty = ptr.type.pointee
                    b.store(self.from_cell(b.load(cell(b.add(c64(k), c), ty)), ty), ptr)
                k += slot.n
                continue
            ty = slot.type.pointee
            b.store(self.from_cell(b.load(cell(k, ty)), ty), slot)
            k += 1

    def output_value(self, v, kind):
        """A finalized value as stored in an output of `kind` ('float' or 'index')."""
        return v

    def write_outputs(self, ptrs, row, state):
        """Finalize `state` into row `row` of the row-major outputs ptrs[k]."""
        b = self.b
        finalized = self.red.finalize(self.em, self.ea, state)
        for (shape, kind), ptr, vals in zip(self.outputs, ptrs, finalized):
            start = b.mul(row, c64(math.prod(shape)))
            if isinstance(vals, Wide):
                with self.em.components(vals.dim) as c:
                    b.store(self.output_value(vals.at(c), kind), b.gep(ptr, [b.add(start, c)]))
                continue
            for c, v in enumerate(vals):
                v = self.output_value(v, kind)
                b.store(v, b.gep(ptr, [b.add(start, c64(c))]))
