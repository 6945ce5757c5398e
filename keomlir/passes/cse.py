"""Common-subexpression elimination by hash-consing: structurally equal
nodes become one node, so each value is computed once per (i, j)."""

from __future__ import annotations

from ..ir.ops import make
from .manager import Pass, register_pass


def share(root, table):
    memo = {}
    for n in root.walk():
        args = [memo[id(a)] for a in n.args]
        candidate = n if all(a is b for a, b in zip(args, n.args)) else make(n.name, args, n.attrs)
        memo[id(n)] = table.setdefault(candidate, candidate)
    return memo[id(root)]


@register_pass
class CSE(Pass):
    name = "cse"

    def run(self, program):
        table = {}
        f = share(program.formula, table)
        f2 = None if program.formula2 is None else share(program.formula2, table)
        return program.with_formulas(f, f2)
