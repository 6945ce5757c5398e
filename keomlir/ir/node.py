"""IR nodes: an immutable DAG of operations, each a vector of a fixed dimension.

A node knows its operation, its operands, its integer attributes, its output
dimension and the indices it depends on (`cat`, a bit set of I and J).  Nodes
compare structurally, which is what common-subexpression elimination and the
kernel cache key rely on.
"""

from __future__ import annotations

# nodes and Sum states wider than this are lowered as loops over components (CPU and GPU)
# (backends/llvm/wide.py): unrolled, a 512-wide variable took seconds of LLVM time and
# spilled every register (the schedule's default `wide_threshold`)
WIDE_THRESHOLD = 16

I, J = 1, 2  # index bits of Node.cat


class DimensionError(ValueError):
    """An operation got operands whose dimensions or arities do not fit."""


class Node:
    __slots__ = ("op", "args", "attrs", "dim", "cat", "_hash")

    def __init__(self, op, args, attrs, dim, cat):
        self.op = op
        self.args = tuple(args)
        self.attrs = tuple(attrs)
        self.dim = dim
        self.cat = cat
        self._hash = hash((op.name, self.attrs, self.args))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if self is other:
            return True
        return (
            isinstance(other, Node)
            and self._hash == other._hash
            and self.op is other.op
            and self.attrs == other.attrs
            and self.args == other.args
        )

    def __repr__(self):
        return f"<Node {to_formula(self)} dim={self.dim}>"

    @property
    def name(self):
        return self.op.name

    def walk(self):
        """Every distinct node of the DAG below and including self, operands first."""
        seen, order, stack = set(), [], [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for a in reversed(node.args):
                if id(a) not in seen:
                    stack.append((a, False))
        return order


def index_name(cat):
    return {0: "-", I: "i", J: "j", I | J: "ij"}[cat]


def to_formula(node, names=None):
    """Nested formula text, in the language the grammar reads back."""
    memo = {}
    for n in node.walk():
        memo[id(n)] = n.op.format(n, [memo[id(a)] for a in n.args], names or {})
    return memo[id(node)]


def variables(*roots):
    """The Var nodes used by the given formulas, sorted by position."""
    found = {}
    for r in roots:
        if r is None:
            continue
        for n in r.walk():
            if n.op.name == "Var":
                found[n.attrs] = n
    return [found[k] for k in sorted(found)]


def ssa_nodes(roots):
    """{SSA name ('%3'): node} of one or more formulas sharing a DAG, numbered as `print_ssa` prints
    them (the names a schedule gives the nodes it chooses)."""
    found, seen = {}, set()
    for _, root in roots:
        if root is None:
            continue
        for n in root.walk():
            if id(n) not in seen:
                seen.add(id(n))
                found[f"%{len(found)}"] = n
    return found


def print_ssa(roots, names=None):
    """Stable SSA text of one or more formulas sharing a DAG: one line a node."""
    lines, ids = [], {}
    for label, root in roots:
        if root is None:
            continue
        for n in root.walk():
            if id(n) in ids:
                continue
            ids[id(n)] = f"%{len(ids)}"
            operands = ", ".join(ids[id(a)] for a in n.args)
            attrs = n.op.format_attrs(n, names or {})
            body = n.op.name + (f"[{attrs}]" if attrs else "") + (f"({operands})" if operands else "")
            lines.append(f"  {ids[id(n)]:>4} = {body:<40} : dim {n.dim}, {index_name(n.cat)}")
        lines.append(f"  {label} = {ids[id(root)]}")
    return "\n".join(lines)
