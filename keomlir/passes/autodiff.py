"""Automatic differentiation: Grad, Diff, GradMatrix, Divergence and Laplacian
rewritten into plain IR.

Reverse mode walks the DAG from the output once, asking each operation for the
adjoints of its operands (`Op.vjp`, defined beside the operation).  The rules
reuse the forward nodes (the adjoint of Exp(a) is g*Exp(a), the same node), so
after CSE a gradient shares the forward computation.  The forward-mode and
matrix forms are built from reverse mode with unit cotangents.  Innermost
derivatives are expanded first, so nesting gives higher orders.
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


def _unit(k, dim):
    return mk("ElemT", make("IntCst", (), (1,)), attrs=(dim, k)) if dim > 1 else make("IntCst", (), (1,))


def _concat(parts):
    out = parts[0]
    for p in parts[1:]:
        out = mk("Concat", out, p)
    return out


def diff(f, x, e):
    """Diff(f, x, e): the differential of f in x applied to e, row by row of the Jacobian."""
    return _concat([mk("Scalprod", grad(f, x, _unit(k, f.dim)), e) for k in range(f.dim)])


def grad_matrix(f, x):
    return _concat([grad(f, x, _unit(k, f.dim)) for k in range(f.dim)])


def divergence(f, x):
    parts = [mk("Elem", grad(f, x, _unit(k, f.dim)), attrs=(k,)) for k in range(f.dim)]
    out = parts[0]
    for p in parts[1:]:
        out = mk("Add", out, p)
    return out


def expand(node):
    """The plain-IR form of a derivative node (whose operands are already plain)."""
    name = node.name
    if name == "Grad":
        return grad(node.args[0], node.attrs[0], node.args[1])
    if name == "Diff":
        return diff(node.args[0], node.attrs[0], node.args[1])
    if name == "GradMatrix":
        return grad_matrix(node.args[0], node.attrs[0])
    if name == "Divergence":
        return divergence(node.args[0], node.attrs[0])
    if name == "Laplacian":
        x = node.attrs[0]
        return divergence(grad(node.args[0], x, make("IntCst", (), (1,))), x)
    return None


@register_pass
class Autodiff(NodePass):
    name = "autodiff"

    def rule(self, node):
        return expand(node) if not node.op.lowers else None
