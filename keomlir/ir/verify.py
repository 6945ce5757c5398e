"""The IR verifier: every node's arity, dimension and index set are consistent."""

from __future__ import annotations

from .node import DimensionError, I, J
from .ops import OPS


class VerificationError(ValueError):
    pass


def verify_node(root):
    for n in root.walk():
        op = OPS.get(n.op.name)
        if op is not n.op:
            raise VerificationError(f"{n.op.name}: not a registered operation")
        kinds = op.kinds
        if len(n.args) != kinds.count("f"):
            raise VerificationError(f"{op.name}: expected {kinds.count('f')} operands, got {len(n.args)}")
        try:
            dim = op.infer_dim([a.dim for a in n.args], n.attrs)
        except DimensionError as e:
            raise VerificationError(str(e)) from None
        if dim != n.dim:
            raise VerificationError(f"{op.name}: recorded dimension {n.dim}, operands give {dim}")
        cat = 0
        for a in n.args:
            cat |= a.cat
        for a in n.attrs:
            if hasattr(a, "op"):
                cat |= a.cat
        if op.name == "Var":
            cat = {0: I, 1: J, 2: 0}[n.attrs[2]]
        if cat != n.cat:
            raise VerificationError(f"{op.name}: recorded index set {n.cat}, operands give {cat}")


def verify_program(program):
    for _, root in program.roots():
        verify_node(root)
    seen = {}
    for v in program.used_variables():
        pos = v.attrs[0]
        if pos in seen and seen[pos] != v.attrs:
            raise VerificationError(f"argument {pos} is used as Var{seen[pos]} and as Var{v.attrs}")
        seen[pos] = v.attrs
    red = program.red
    red.check(program.formula.dim, None if program.formula2 is None else program.formula2.dim, program.opt_arg)
