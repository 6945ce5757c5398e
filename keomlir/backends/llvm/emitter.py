"""The value-level interface operations lower through.

An `Emitter` wraps an llvmlite IRBuilder for one floating type.  Operations
only ever call these methods, never the builder, so the same lowering code
serves scalar code now and vector types (SIMD across j) or NVPTX later.
"""

from __future__ import annotations

from llvmlite import ir

# math functions as LLVM intrinsics (lowered to libm calls or inline code by the target)
_INTRINSICS = {
    "exp": "llvm.exp", "log": "llvm.log", "sin": "llvm.sin", "cos": "llvm.cos",
    "sqrt": "llvm.sqrt", "fabs": "llvm.fabs", "floor": "llvm.floor", "round": "llvm.round",
    "pow": "llvm.pow", "asin": "llvm.asin", "acos": "llvm.acos", "atan": "llvm.atan",
    "atan2": "llvm.atan2",
}

_ORDERED = {"==": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


class Emitter:
    def __init__(self, builder: ir.IRBuilder, ftype: ir.Type):
        self.b = builder
        self.t = ftype
        self.module = builder.module
        self.entry = builder.function.entry_basic_block if builder.block is not None else None

    # ---- constants and arithmetic ----------------------------------------------
    def const(self, v):
        return ir.Constant(self.t, float(v))

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def neg(self, a):
        return self.b.fneg(a)

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
        fnty = ir.FunctionType(self.t, [self.t] * len(args))
        fn = self.module.declare_intrinsic(_INTRINSICS[name], [self.t], fnty)
        return self.b.call(fn, list(args))

    # ---- memory and types (reductions keep their state in slots) ----------------
    def with_type(self, ftype):
        """An emitter sharing this builder for another floating type (accumulators)."""
        other = Emitter(self.b, ftype)
        other.entry = self.entry
        return other

    def convert(self, v, to):
        """v (of this emitter's type) as a value of emitter `to`'s type."""
        if to.t == self.t:
            return v
        widen = isinstance(to.t, ir.DoubleType)
        return self.b.fpext(v, to.t) if widen else self.b.fptrunc(v, to.t)

    def slot(self, init, ty=None):
        """A stack slot in the entry block (promoted to a register by mem2reg)."""
        with self.b.goto_block(self.entry):
            self.b.position_at_start(self.entry)
            ptr = self.b.alloca(ty or self.t)
        self.b.store(init, ptr)
        return ptr

    def load(self, ptr):
        return self.b.load(ptr)

    def store(self, ptr, v):
        self.b.store(v, ptr)

    def index_const(self, v):
        return ir.Constant(ir.IntType(64), v)

    def kahan_add(self, total_ptr, comp_ptr, term):
        """total += term with compensated (Kahan) summation; comp keeps the lost low bits."""
        y = self.sub(term, self.load(comp_ptr))
        total = self.load(total_ptr)
        t = self.add(total, y)
        self.store(comp_ptr, self.sub(self.sub(t, total), y))
        self.store(total_ptr, t)
