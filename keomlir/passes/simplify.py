"""Constant folding and algebraic simplification.

The rules live with the operations (`Op.simplify`); this pass applies them
bottom-up until nothing changes.  Only rewrites exact in IEEE arithmetic are
made (x*1 -> x, but not 0*x -> 0, which is NaN for infinite x); one is exact only
where no product overflows or leaves the normal range: a power of two moved between
the factors of a product (onto the factor without j, computed once a row)."""

from __future__ import annotations

from .manager import NodePass, register_pass


@register_pass
class Simplify(NodePass):
    name = "simplify"

    def rule(self, node):
        return node.op.simplify(node)
