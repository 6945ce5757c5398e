"""The value-level interface operations lower through.

An `Emitter` wraps an llvmlite IRBuilder for one floating type, scalar or
vector (`<W x float>`: SIMD across j).  Operations and reductions only ever
call these methods, never the builder, so the same lowering code serves scalar
code, vector code and NVPTX.  Math functions come from `mathlib` (IR, vectorizable,
known accuracy) or from LLVM intrinsics, as `IR_MATH` says.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

from llvmlite import ir

from . import halfconv, mathlib

I64 = ir.IntType(64)


@contextmanager
def counted_loop(b, start, stop, name, step=1):
    """for (k = start; k < stop; k += step): yields the phi of k inside the body."""
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(I64, name=name)
    k.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", k, stop), body, done)
    b.position_at_end(body)
    yield k
    k.add_incoming(b.add(k, ir.Constant(I64, step)), b.block)
    b.branch(head)
    b.position_at_end(done)

# math functions as LLVM intrinsics (lowered to libm calls or inline code by the target)
_INTRINSICS = {
    "exp": "llvm.exp", "log": "llvm.log", "sin": "llvm.sin", "cos": "llvm.cos",
    "sqrt": "llvm.sqrt", "fabs": "llvm.fabs", "floor": "llvm.floor", "round": "llvm.round",
    "pow": "llvm.pow", "asin": "llvm.asin", "acos": "llvm.acos", "atan": "llvm.atan",
    "atan2": "llvm.atan2",
}

_CONTRACT = ("contract",)

_ORDERED = {"==": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


class Wide:
    """The components of a wide value (dimension above the emitter's `wide_threshold`),
    made on demand: `at(c)` emits component c (an i64 value) where the builder stands,
    inside a loop over components.  Keeping values in this form, rather than one SSA
    value per component, makes the code size (and compile time) independent of `dim`.
    `cheap`: a plain load (or its splat), not worth keeping in memory."""

    def __init__(self, dim, at, cheap=False):
        self.dim, self.at, self.cheap = dim, at, cheap


class SlotArray:
    """A reduction-state slot of `n` components in one stack array (wide states):
    `ptr` points to [n x type]; save/load/lane copies loop over it."""

    def __init__(self, ptr, n):
        self.ptr, self.n = ptr, n


class Emitter:
    # wide values (Wide, SlotArray) above this dimension; None: always unrolled
    wide_threshold = None
    # functions taken from mathlib rather than LLVM intrinsics (libm calls on the CPU,
    # scalarized in vector code); pow stays with libm for its float64 accuracy
    IR_MATH = frozenset({"exp", "exp_nonpositive", "exp_nonpositive_flush", "exp_nonpositive_times", "log", "sin", "cos", "atan", "atan2", "asin", "acos"})
    # the target CPU's features (LLVM names) that mathlib may use: set by the renderer from
    # its Target ("avx512f": 2^n by one vscalef), empty for generic code (tests, NVPTX)
    features = frozenset()
    # float64 -> float32 conversions rounded to odd (`halfconv.to_odd_float`): set in kernels of half
    # data, whose float32 results are rounded to half once more
    narrow_to_odd = False
    # the byte addresses (i64 values) of the SIMD loop's streams of j data at j = 0 (a callable, set by
    # the renderer; None where a strategy lays j out its own way): `unaliased_start` places buffers
    # written in step with the loop so that its loads never wait on their stores
    j_streams = None

    def __init__(self, builder: ir.IRBuilder, ftype: ir.Type, scheme="block_sum"):
        self.scheme = scheme  # the sum scheme reductions follow (direct_sum, block_sum, kahan_scheme)
        self.b = builder
        self.t = ftype
        self.scalar = ftype.element if isinstance(ftype, ir.VectorType) else ftype
        self.lanes = ftype.count if isinstance(ftype, ir.VectorType) else None
        self.bits = 32 if isinstance(self.scalar, ir.FloatType) else 64
        self.module = builder.module
        self.entry = builder.function.entry_basic_block if builder.block is not None else None
        self._index_starts = {}  # id of a lane_indices vector -> (the vector, its start)

    def _typed(self, scalar_type, value):
        if self.lanes is None:
            return ir.Constant(scalar_type, value)
        return ir.Constant(ir.VectorType(scalar_type, self.lanes), [ir.Constant(scalar_type, value)] * self.lanes)

    def with_lanes(self, lanes):
        """An emitter on the same builder for `lanes`-wide vectors (None: scalars)."""
        return self._sibling(self.scalar if lanes is None else ir.VectorType(self.scalar, lanes))

    def _sibling(self, ftype, builder=None):
        """An emitter for ftype with this one's settings, on its builder (or on `builder`: a new
        function's, its own entry block)."""
        other = type(self)(builder or self.b, ftype, self.scheme)
        if builder is None:
            other.entry = self.entry
        other.wide_threshold, other.features = self.wide_threshold, self.features
        other.narrow_to_odd, other.j_streams = self.narrow_to_odd, self.j_streams
        return other

    # ---- constants and arithmetic ----------------------------------------------
    def const(self, v):
        return self._typed(self.scalar, float(v))

    def fma(self, a, b, c):
        """a*b + c, fused where the target has FMA."""
        return self.b.call(self._intrinsic("llvm.fmuladd", 3), [a, b, c])

    def _intrinsic(self, name, n_args):
        """The declaration of an overloaded LLVM intrinsic on this emitter's type."""
        suffix = f"f{self.bits}" if self.lanes is None else f"v{self.lanes}f{self.bits}"
        full = f"{name}.{suffix}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(self.t, [self.t] * n_args), full)
        return fn

    def splat(self, x):
        """A scalar broadcast to every lane (itself for a scalar emitter)."""
        if self.lanes is None:
            return x
        vec = ir.VectorType(x.type, self.lanes)
        one = self.b.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        return self.b.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                     ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes))

    def any(self, mask):
        """One i1: is the condition true in some lane."""
        if self.lanes is None:
            return mask
        vt = ir.VectorType(ir.IntType(1), self.lanes)
        name = f"llvm.vector.reduce.or.v{self.lanes}i1"
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(ir.IntType(1), [vt]), name)
        return self.b.call(fn, [mask])

    def lane(self, vec, k):
        """Lane k (an i64 value) of a vector (of floats or of indices) as a scalar; of
        `lane_indices(start)`: start + k, so that code using single lanes needs no index vector."""
        start = self._index_starts.get(id(vec), (None, None))
        if start[0] is vec:
            return self.b.add(start[1], k)
        return self.b.extract_element(vec, k)

    def shift_up(self, vec, first=None):
        """The lanes of a vector moved up one, the last dropped and the scalar `first` in lane 0
        (one shuffle: a lane-crossing permute, or a shift of a mask register); first None: lane 0
        any value (the vector rotated by one lane: no scalar to move into a vector first)."""
        n = vec.type.count
        if first is None:
            return self.b.shuffle_vector(vec, ir.Constant(vec.type, ir.Undefined),
                                         ir.Constant(ir.VectorType(ir.IntType(32), n), [n - 1] + list(range(n - 1))))
        one = self.b.insert_element(ir.Constant(vec.type, ir.Undefined), first, ir.Constant(ir.IntType(32), 0))
        return self.b.shuffle_vector(vec, one, ir.Constant(ir.VectorType(ir.IntType(32), n), [n] + list(range(n - 1))))

    def splat_lane(self, vec, r):
        """Lane r (an integer) of a vector of any width, in every lane of this emitter's (one shuffle)."""
        return self.b.shuffle_vector(vec, ir.Constant(vec.type, ir.Undefined),
                                     ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [r] * self.lanes))

    def shift_down(self, vec):
        """The lanes of a vector moved down one (lane 0 dropped, the last undefined)."""
        n = vec.type.count
        return self.b.shuffle_vector(vec, ir.Constant(vec.type, ir.Undefined),
                                     ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(1, n)) + [n]))

    def compress(self, vec, mask):
        """The lanes of vec where the vector condition mask holds, in order, moved to the lowest
        lanes (the others zero): one vcompress with AVX-512."""
        et = vec.type.element
        if not isinstance(et, ir.IntType):  # compressed as integers of the same width: LLVM 22's
            # expansion of an FP compress where the target has no vcompress (AVX2, NEON) asserts
            # ("Cannot create FP integer constant") on the zero it fills with
            it = ir.VectorType(ir.IntType(32 if isinstance(et, ir.FloatType) else 64), vec.type.count)
            return self.b.bitcast(self.compress(self.b.bitcast(vec, it), mask), vec.type)
        name = f"llvm.experimental.vector.compress.v{vec.type.count}i{et.width}"
        fn = self.module.globals.get(name) or ir.Function(
            self.module, ir.FunctionType(vec.type, [vec.type, mask.type, vec.type]), name)
        return self.b.call(fn, [vec, mask, ir.Constant(vec.type, None)])

    def count(self, mask):
        """The lanes where a vector condition holds, as an i64."""
        bits_t = ir.IntType(self.lanes)
        name = f"llvm.ctpop.i{self.lanes}"
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(bits_t, [bits_t]), name)
        return self.b.zext(self.b.call(fn, [self.b.bitcast(mask, bits_t)]), I64)

    # a vector condition kept in memory as an i16 word, one bit a lane (W <= 16)
    mask_word_type = ir.IntType(16)

    def mask_word(self, mask):
        return self.b.zext(self.b.bitcast(mask, ir.IntType(self.lanes)), self.mask_word_type)

    def word_mask(self, word):
        return self.b.bitcast(self.b.trunc(word, ir.IntType(self.lanes)), ir.VectorType(ir.IntType(1), self.lanes))

    WORDS = 32  # mask words `nonzero_words` reads at once (one 512-bit vector)

    def nonzero_words(self, array, first, n):
        """The positions (i16 lanes, in order, lowest first) of the nonzero words among words
        [first, first + WORDS) below n (i64 values; first a multiple of WORDS) of an array of
        `mask_word`s aligned to 64 bytes, and their number (an i64)."""
        wt = ir.VectorType(self.mask_word_type, self.WORDS)
        ptr = self.b.bitcast(self.b.gep(array, [ir.Constant(ir.IntType(32), 0), first]), wt.as_pointer())
        words = self.b.load(ptr, align=64)
        found = self.with_lanes(self.WORDS)
        at = self.b.add(found.splat(self.b.trunc(first, self.mask_word_type)),
                        ir.Constant(wt, list(range(self.WORDS))))
        keep = self.b.and_(self.b.icmp_unsigned("!=", words, ir.Constant(wt, [0] * self.WORDS)),
                           self.b.icmp_unsigned("<", at, found.splat(self.b.trunc(n, self.mask_word_type))))
        return found.compress(at, keep), found.count(keep)

    def index_sum(self, i, k):
        """i + k for scalar i64 indices."""
        return self.b.add(i, k)

    def index_scale(self, i, k):
        """i * k for a scalar i64 index and an integer k."""
        return self.b.mul(i, ir.Constant(I64, k))

    def lane_offsets(self, start=None):
        """<0, 1, ..., W-1> as i32 lanes (`first_offset` reads one as a lane number), or from `start`
        (a small i64 value) on."""
        steps = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), list(range(self.lanes)))
        return steps if start is None else self.b.add(self.splat(self.b.trunc(start, ir.IntType(32))), steps)

    def offset_index(self, offset):
        """A scalar lane offset (of `lane_offsets`) as an i64 index."""
        return self.b.sext(offset, I64)

    def index_offsets(self, indices, base):
        """A vector of i64 indices as i32 offsets from the scalar index base (each within 2^31 of it)."""
        return self.b.trunc(self.b.sub(indices, self.splat(base)), self.lane_offsets().type)

    def offset_indices(self, offsets, base):
        """`index_offsets`' inverse: the i64 indices base + offsets."""
        return self.b.add(self.b.sext(offsets, self.index_const(0).type), self.splat(base))

    def store_scalars(self, ptr, vec):
        """A vector's lanes to consecutive scalars from ptr (a pointer to one: `at` of an `array` of
        them), aligned as one."""
        et = vec.type.element
        size = et.width // 8 if isinstance(et, ir.IntType) else 4 if isinstance(et, ir.FloatType) else 8
        self.b.store(vec, self.b.bitcast(ptr, vec.type.as_pointer()), align=size)

    def first(self, vec):
        """Lane 0 of a vector."""
        return self.b.extract_element(vec, ir.Constant(ir.IntType(32), 0))

    def first_offset(self, offsets):
        """Lane 0 of a vector of lane numbers (`lane_offsets`, `nonzero_words`) as an i64."""
        return self.b.zext(self.first(offsets), I64)

    def lane_indices(self, start):
        """<start, start+1, ..., start+W-1> as i64 lanes."""
        steps = ir.Constant(ir.VectorType(ir.IntType(64), self.lanes), list(range(self.lanes)))
        vec = self.b.add(self.splat(start), steps)
        self._index_starts[id(vec)] = (vec, start)
        return vec

    @contextmanager
    def set_lanes(self, mask):
        """for each lane where the vector condition `mask` holds, in increasing order: yields the
        lane (an i64 value); the lanes found from the mask's bits (lowest set bit, then cleared),
        with no branch on the others."""
        b = self.b
        bits_t = ir.IntType(self.lanes)
        name = f"llvm.cttz.i{self.lanes}"
        cttz = self.module.globals.get(name) or ir.Function(
            self.module, ir.FunctionType(bits_t, [bits_t, ir.IntType(1)]), name)
        first = b.bitcast(mask, bits_t)
        pre = b.block
        head, body, done = (b.append_basic_block(f"lanes.{part}") for part in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        bits = b.phi(bits_t, name="lanes")
        bits.add_incoming(first, pre)
        b.cbranch(b.icmp_unsigned("!=", bits, ir.Constant(bits_t, 0)), body, done)
        b.position_at_end(body)
        lane = b.zext(b.call(cttz, [bits, ir.Constant(ir.IntType(1), 1)]), I64)
        rest = b.and_(bits, b.sub(bits, ir.Constant(bits_t, 1)))  # the lowest set bit cleared
        yield lane
        bits.add_incoming(rest, b.block)
        b.branch(head)
        b.position_at_end(done)

    # ---- the integer view of floats (exponent manipulation in mathlib) ------------
    @property
    def itype(self):
        i = ir.IntType(self.bits)
        return i if self.lanes is None else ir.VectorType(i, self.lanes)

    def iconst(self, v):
        return self._typed(ir.IntType(self.bits), v)

    def as_int(self, x):
        return self.b.bitcast(x, self.itype)

    def as_float(self, i):
        return self.b.bitcast(i, self.t)

    def float_below(self, x):
        """The largest number of the type below x (x > -inf; -inf gives a NaN, as a NaN does):
        x <= float_below(v) is x < v, with one ordered compare."""
        bits = self.as_int(x)
        down = self.b.select(self.cmp(">", x, self.const(0)), self.b.sub(bits, self.iconst(1)),
                             self.b.add(bits, self.iconst(1)))
        smallest_negative = self.iconst(1 - (1 << (self.bits - 1)))  # -0 and +0: the negative subnormal
        return self.as_float(self.b.select(self.cmp("==", x, self.const(0)), smallest_negative, down))

    def to_int(self, x):
        """Truncation toward zero of an integral-valued float."""
        return self.b.fptosi(x, self.itype)

    def int_to_float(self, i):
        return self.b.sitofp(i, self.t)

    # `contract`: LLVM may fuse a multiply into the add or subtract that is its only use
    # (a*b + c as one FMA, rounded once: never less accurate), e.g. a term of a sum and its
    # accumulator across operations (Exp(...) * b into a Sum); nothing else is relaxed
    def add(self, a, b):
        return self.b.fadd(a, b, flags=_CONTRACT)

    def sub(self, a, b):
        return self.b.fsub(a, b, flags=_CONTRACT)

    def mul(self, a, b):
        return self.b.fmul(a, b, flags=_CONTRACT)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def neg(self, a):
        return self.b.fneg(a, flags=_CONTRACT)

    def negated(self, v):
        """x where v is -x (a negation made by `neg`), else None."""
        return v.operands[0] if isinstance(v, ir.Instruction) and v.opname == "fneg" else None

    def powi(self, x, n):
        """x**n for an integer n, by repeated squaring; 1/x**|n| for n < 0."""
        result, base, k = None, x, abs(n)
        while k:
            if k & 1:
                result = base if result is None else self.mul(result, base)
            k >>= 1
            if k:
                base = self.mul(base, base)
        if result is None:
            result = self.const(1)
        return self.div(self.const(1), result) if n < 0 else result

    # ---- comparisons and selection ---------------------------------------------
    def cmp(self, pred, a, b):
        """IEEE comparison: ordered (false with NaN) except '!=' (true with NaN)."""
        if pred == "!=":
            return self.b.fcmp_unordered("!=", a, b)
        return self.b.fcmp_ordered(_ORDERED[pred], a, b)

    def index_cmp(self, pred, a, b):
        """Signed comparison of i64 indices (j, or -1 for an empty slot)."""
        return self.b.icmp_signed(pred, a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond, a, b):
        return self.b.select(cond, a, b)

    def to_float(self, cond):
        return self.b.uitofp(cond, self.t)

    def and_(self, p, q):
        return self.b.and_(p, q)

    def or_(self, p, q):
        return self.b.or_(p, q)

    def not_(self, p):
        return self.b.not_(p)

    # ---- math ------------------------------------------------------------------
    def call(self, name, *args):
        if name in self.IR_MATH:
            return mathlib.call(self, name, *args)
        return self.intrinsic(name, *args)

    def intrinsic(self, name, *args):
        return self.b.call(self._intrinsic(_INTRINSICS[name], len(args)), list(args))

    # ---- memory and types (reductions keep their state in slots) ----------------
    def with_type(self, ftype):
        """An emitter sharing this builder for another floating type (accumulators)."""
        if self.lanes is not None and not isinstance(ftype, ir.VectorType):
            ftype = ir.VectorType(ftype, self.lanes)
        return self._sibling(ftype)

    def convert(self, v, to):
        """v (of this emitter's type) as a value of emitter `to`'s type."""
        if to.t == self.t:
            return v
        if to.bits > self.bits:
            return self.b.fpext(v, to.t)
        return halfconv.to_odd_float(self.b, v) if self.narrow_to_odd else self.b.fptrunc(v, to.t)

    def slot(self, init, ty=None):
        """A stack slot in the entry block (promoted to a register by mem2reg)."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            ptr = self.b.alloca(ty or self.t)
        self.b.store(init, ptr)
        return ptr

    def outlined(self, name, args, build):
        """Call name(args), a function of this module made on first use by build(em, params), em an
        emitter of this one's type on its body: cold code kept out of the loop that calls it, so
        that the loop's registers are not spent on it (never inlined; its own registers, the
        caller's vectors saved around the rare call).  name must say all that build depends on."""
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [a.type for a in args]), name)
            fn.linkage = "internal"
            fn.attributes.add("noinline")
            em = self._sibling(self.t, ir.IRBuilder(fn.append_basic_block("entry")))
            build(em, fn.args)
            em.b.ret_void()
        self.b.call(fn, args)

    def entry_slot(self, init, ty=None):
        """A slot set to init once, at the function's start (where `slot` sets it where the builder
        stands): state that its users return to init before they leave it."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            ptr = self.b.alloca(ty or self.t)
            self.b.store(init, ptr)
        return ptr

    def pinned(self, ptr):
        """ptr, a slot kept in memory rather than registers (an empty asm takes its address, so LLVM
        does not promote it): state read rarely, whose registers the hot loop needs more."""
        asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [ptr.type]), "", "r", side_effect=True)
        self.b.call(asm, [ptr])
        return ptr

    def array(self, ty, n):
        """A stack array of n values of type ty (entry block), indexed with `at`."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            return self.b.alloca(ir.ArrayType(ty, n))

    def vector_array(self, ty, n):
        """A stack array of n values of ty (`array`), aligned to 64 bytes: read and written whole as
        one vector of them (`load_vector`, `store_vector`)."""
        arr = self.array(ty, n)
        arr.align = 64
        return arr

    def _as_vector(self, array):
        at = array.type.pointee
        return self.b.bitcast(array, ir.VectorType(at.element, at.count).as_pointer())

    def load_vector(self, array, align=None):
        """All of a `vector_array` (or a pointer to one, its alignment given) as one vector."""
        return self.b.load(self._as_vector(array), align=align or array.align)

    def store_vector(self, array, v, align=None):
        self.b.store(v, self._as_vector(array), align=align or array.align)

    def at(self, array, k):
        return self.b.gep(array, [ir.Constant(ir.IntType(32), 0), k])

    def unaliased_room(self):
        """The vectors an array needs past what its user fills for `unaliased_start` to place it."""
        return ALIAS_PAGE * 8 // (self.lanes * self.bits)

    def unaliased_start(self, array, j, run=0, runs=1):
        """Where in `array` (of this emitter's vectors, `unaliased_room` more than its user fills) a
        run of vectors stored one per j vector of the SIMD loop, from j (an i64 value) on, starts (an
        i64 index): where no load of j data in the iterations after a store reads an address whose
        low 12 bits are the store's.  The core takes such a load for one of the stored bytes and
        holds it until the store is done (4K aliasing): the kernels' speed hung on where the arrays
        lay (bench/schedule_defaults.md).
        Run `run` of `runs` stored in step lies ALIAS_SPREAD bytes past the one before (runs on one
        offset, their stores in one cache set, are slower).  The runs and the streams advance one
        vector a step: their distances modulo the page, set at the start, are chosen clear of every
        stream (`_unaliased_target`).  0 where the streams are unknown."""
        if self.j_streams is None:
            return ir.Constant(I64, 0)
        b = self.b
        streams = self.j_streams()  # (made in the entry block)
        with b.goto_block(self.entry):
            target = _unaliased_target(b, streams, runs)
            base = b.ptrtoint(array, I64)
        at = b.add(b.add(target, ir.Constant(I64, run * ALIAS_SPREAD)), b.sub(b.mul(j, ir.Constant(I64, self.bits // 8)), base))
        return b.udiv(b.and_(at, ir.Constant(I64, ALIAS_PAGE - 1)), ir.Constant(I64, self.lanes * self.bits // 8))

    def place_runs(self, runs):
        """Each run (array, start slot, slot of the last j stored) of a tile started anew from the
        next j vector, where the loop goes on (`unaliased_start`, the runs apart)."""
        es = self.with_lanes(None)
        for r, (array, start, j) in enumerate(runs):
            es.store(start, self.unaliased_start(array, es.index_add(es.load(j), self.lanes), r, len(runs)))

    def loop(self, start, stop, name="k"):
        return counted_loop(self.b, start, stop, name)

    @contextmanager
    def loop_once(self, start, stop, name="k"):
        """for (k = start; ; ) { body; if (++k >= stop) break; }: the body at least once (for a body
        that does nothing past stop, where stop is seldom above start + 1: no branch to mispredict
        before the first pass, nor after it where stop is start + 1)."""
        b = self.b
        pre = b.block
        body, done = b.append_basic_block(f"{name}.body"), b.append_basic_block(f"{name}.done")
        b.branch(body)
        b.position_at_end(body)
        k = b.phi(I64, name=name)
        k.add_incoming(start, pre)
        yield k
        nxt = b.add(k, ir.Constant(I64, 1))
        k.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, stop), body, done)
        b.position_at_end(done)

    def if_then(self, cond, rare=False):
        """A block run only when the i1 `cond` holds: `with em.if_then(c): ...`; `rare`: seldom
        taken (branch weights: LLVM lays it out of line and puts its spill code there)."""
        return self.b.if_then(cond, likely=False if rare else None)

    def if_else(self, cond):
        """Two blocks, the one that the i1 `cond` picks run:
        `with em.if_else(c) as (then, otherwise): with then: ...; with otherwise: ...`."""
        return self.b.if_else(cond)

    def load(self, ptr):
        return self.b.load(ptr)

    def store(self, ptr, v):
        self.b.store(v, ptr)

    def index_const(self, v):
        return self._typed(ir.IntType(64), v)

    def index_add(self, i, k):
        """i + k for a scalar i64 index (a component of a wide state) and an integer k."""
        return self.b.add(i, ir.Constant(I64, k))

    def index_from(self, k, i):
        """k - i for an integer k and a scalar i64 index (loops that run backwards)."""
        return self.b.sub(ir.Constant(I64, k), i)

    def index_divmod(self, i, n):
        """(i // n, i % n) for a scalar non-negative i64 index and an integer n."""
        return self.b.udiv(i, ir.Constant(I64, n)), self.b.urem(i, ir.Constant(I64, n))

    # ---- wide values: loops over components ----------------------------------------
    def is_wide(self, dim):
        """Is a value or state of `dim` components kept wide (loops), not unrolled."""
        return self.wide_threshold is not None and dim > self.wide_threshold

    def wide(self, dim, at, cheap=False):
        return Wide(dim, at, cheap)

    def components(self, n, name="c"):
        """for c in [0, n): yields c (an i64 value)."""
        return counted_loop(self.b, ir.Constant(I64, 0), ir.Constant(I64, n), name)

    def slot_array(self, n, init, ty=None):
        """A wide slot of n components, each set to `init`."""
        arr = SlotArray(self.array(ty or self.t, n), n)
        with self.components(n) as c:
            self.store(self.at(arr.ptr, c), init)
        return arr

    def elem(self, arr, c):
        """The pointer to component c (an i64 value) of a SlotArray."""
        return self.at(arr.ptr, c)

    def kahan_add(self, total_ptr, comp_ptr, term):
        """total += term with compensated (Kahan) summation; comp keeps the lost low bits."""
        y = self.sub(term, self.load(comp_ptr))
        total = self.load(total_ptr)
        t = self.add(total, y)
        self.store(comp_ptr, self.sub(self.sub(t, total), y))
        self.store(total_ptr, t)


ALIAS_PAGE = 4096  # the address bits (12) a load is compared with the stores before it on (x86 cores)
ALIAS_REACH = 640  # bytes past a stream's position that a run's store must not fall in: the loads
# of the next 9 vectors of 64 bytes, a margin over how far the core runs ahead of its stores
ALIAS_SPREAD = 128  # bytes between the offsets of runs stored in step (measured: bench/schedule_defaults.md)


def _unaliased_target(b, streams, runs):
    """A byte address modulo ALIAS_PAGE (an i64 value) for the first run's store of the j vector at
    j = 0 such that every stream's loads of later j vectors stay clear of all `runs` runs: (target +
    ALIAS_SPREAD r - stream) modulo the page outside [-64, ALIAS_REACH) for every run r and stream.
    The candidates are just past each stream's window (where a clear stretch of the page begins, if
    there is one), the first clear one taken (the first stream's if none is: more streams than the
    page has room for)."""
    spread = ALIAS_SPREAD * (runs - 1) + 64  # target - stream in [-spread, ALIAS_REACH): some run too near
    page, width = ir.Constant(I64, ALIAS_PAGE - 1), ir.Constant(I64, ALIAS_REACH + spread)
    streams = list(streams)[:8]  # (as many as a page keeps apart)
    candidates = [b.add(s, ir.Constant(I64, ALIAS_REACH)) for s in streams]
    chosen = candidates[0]
    for t in reversed(candidates):
        clear = [b.icmp_unsigned(">=", b.and_(b.add(b.sub(t, s), ir.Constant(I64, spread)), page), width)
                 for s in streams]
        chosen = b.select(functools.reduce(b.and_, clear), t, chosen)
    return chosen
