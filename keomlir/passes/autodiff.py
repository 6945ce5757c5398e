"""Automatic differentiation: Grad, Diff, GradMatrix, Divergence and Laplacian
rewritten into plain IR.

Reverse mode walks the DAG from the output once, asking each operation for the
adjoints of its operands (`Op.vjp`, defined beside the operation).  The rules
reuse the forward nodes (the adjoint of Exp(a) is g*Exp(a), the same node), so
after CSE a gradient shares the forward computation.  The forward-mode and
matrix forms are built from reverse mode with unit cotangents, each by its
own operation (`expand` in ir/ops/derivative.py).  Innermost derivatives are
expanded first, so nesting gives higher orders.
"""

from __future__ import annotations

from ..ir.ops import make
from ..ir.ops.base import mk
from .manager import NodePass, register_pass


def _accumulate(adjoints, node, contribution):
    if contribution.dim != node.dim:  # an operand broadcast as a scalar
        contribution = mk("Sum", contribution)
    prev = adjoints.get(id(node))
    adjoints[id(node)] = contribution if prev is None else mk("Add", prev, contribution)


def grad(f, x, e):
    """Grad(f, x, e): Σ_k e_k ∂f_k/∂x, a node of dimension x.dim."""
    adjoints = {id(f): e}
    order = f.walk()
    for n in reversed(order):
        g = adjoints.get(id(n))
        if g is None or not n.args:
            continue
        for operand, contribution in zip(n.args, n.op.vjp(n, g)):
            if contribution is not None:
                _accumulate(adjoints, operand, contribution)
    total = None
    for n in order:
        if n == x and id(n) in adjoints:  # every copy of the variable
            total = adjoints[id(n)] if total is None else mk("Add", total, adjoints[id(n)])
    return total if total is not None else make("Zero", (), (x.dim,))


@register_pass
class Autodiff(NodePass):
    name = "autodiff"

    def rule(self, node):
        return node.op.expand(node, grad) if not node.op.lowers else None
