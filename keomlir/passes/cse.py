"""Common-subexpression elimination by hash-consing: structurally equal
nodes become one node, so each value is computed once per (i, j)."""

from __future__ import annotations

from ..ir.ops import make
from .manager import Pass, register_pass


def share(root, table, merges=None):
    """`root` with each node replaced by the equal one in `table` (added if new); `merges(node,
    found)` may refuse a merge (the node is then kept)."""
    memo = {}
    for n in root.walk():
        args = [memo[id(a)] for a in n.args]
        candidate = n if all(a is b for a, b in zip(args, n.args)) else make(n.name, args, n.attrs)
        found = table.setdefault(candidate, candidate)
        if found is not candidate and merges is not None and not merges(candidate, found):
            found = candidate
        memo[id(n)] = found
    return memo[id(root)]


@register_pass
class CSE(Pass):
    name = "cse"

    def merges(self, node, found):
        if not self.applies(f"merge {node.name}", node, found):
            return False
        self.count("CSE merges")
        return True

    def run(self, program):
        table = {}
        f = share(program.formula, table, self.merges)
        f2 = None if program.formula2 is None else share(program.formula2, table, self.merges)
        return program.with_formulas(f, f2)
