"""Floating-point operations of a program, counted from its own lowering.

Each node of the optimized program is lowered, one scalar lane, through the emitter
the CPU renderer uses (so Exp and Log cost what `mathlib`'s range reduction and
polynomial cost, not one), into a scratch function whose instructions are counted:
an add, subtract, multiply, divide or a float intrinsic (sqrt, floor, ...) is one
operation, a fused multiply-add two; comparisons, selects, sign flips, conversions and
integer work are free; a call into libm (pow) counts one.  Nodes that depend on j
(and the reduction's update) run once per pair; those of i alone once per row.
"""

from __future__ import annotations

import dataclasses

from llvmlite import ir

from ...ir.node import J
from . import halfconv, mathlib
from .emitter import Emitter
from .skeleton import FLOAT_TYPES, Values

ARITHMETIC = {"fadd", "fsub", "fmul", "fdiv", "frem"}
FUSED = ("llvm.fmuladd.", "llvm.fma.")


@dataclasses.dataclass(frozen=True)
class Flops:
    """Operations per pair (i, j) and per row i of one program."""

    pair: int
    row: int

    def total(self, m, n):
        return self.pair * m * n + self.row * m


def _instructions(fn):
    return [ins for block in fn.blocks for ins in block.instructions]


def _cost(ins):
    if ins.opname in ARITHMETIC:
        return 1
    if ins.opname == "call":
        name = getattr(ins.callee, "name", "")
        if name.startswith(FUSED):
            return 2
        return 1
    return 0


def count(program, dtype="float32", target=None):
    """The `Flops` of `program`'s kernel in `dtype`, lowered as for `target` (a Target: its
    features choose mathlib's sequences; None: generic code)."""
    t = FLOAT_TYPES[halfconv.arithmetic(dtype)]
    roots = [r for _, r in program.roots()]
    variables = program.used_variables()
    fn_type = ir.FunctionType(ir.VoidType(), [t] * sum(v.dim for v in variables))
    fn = ir.Function(ir.Module(name="flops"), fn_type, "count")
    params, offset = {}, 0
    for v in variables:
        params[v.attrs] = list(fn.args[offset:offset + v.dim])
        offset += v.dim
    em = Emitter(ir.IRBuilder(fn.append_basic_block("entry")), t)
    if target is not None:
        em.features = mathlib.target_features(target)
    ea = em.with_type(t)
    values = Values(em, lambda node, _: params[node.attrs])
    for root in roots:  # first what a row computes once, then what each pair does
        for n in root.walk():
            if not n.cat & J:
                values.get(n)
    row = sum(map(_cost, _instructions(fn)))
    red = program.red
    dims = (program.formula.dim, None if program.formula2 is None else program.formula2.dim)
    state = red.init(em, ea, dims, program.opt_arg)
    before = sum(map(_cost, _instructions(fn)))
    vals = [values.get(r) for r in roots]
    red.update(em, ea, state, vals[0], vals[1] if len(vals) > 1 else None, ir.Constant(ir.IntType(64), 0))
    return Flops(sum(map(_cost, _instructions(fn))) - before, row)
