"""Formulas as exact, self-contained text and back: `dumps(*roots)` writes a DAG of
nodes (None roots allowed), `loads(text)` rebuilds equal nodes with `make`.

Unlike `to_formula` (the grammar's language, for people), this text is canonical and
round-trips exactly: one entry per distinct node, `Name:operands:attributes`, operands
and Var attributes as the index of an earlier entry.  It names a reduction by its
content (the torch custom operators pass it as their key), so a text is never stale:
whoever reads it rebuilds the same formula.  It is parsed, never evaluated.
"""

from __future__ import annotations

import operator

from .node import Node
from .ops import OPS, make

__all__ = ["dumps", "loads"]


def dumps(*roots):
    """`Name:operands:attributes` entries separated by `;`, then `=` and the root
    indices (`-` for None): the same nodes give the same text."""
    index, entries = {}, []

    def visit(root):
        for node in root.walk():
            if node in index:
                continue
            for a in node.attrs:  # a Var attribute (the x of Grad) is an entry of its own
                if isinstance(a, Node) and a not in index:
                    visit(a)
            index[node] = len(entries)
            attrs = []
            for kind, a in zip([k for k in node.op.kinds if k != "f"], node.attrs):
                if kind == "v":
                    attrs.append(f"%{index[a]}")
                elif kind == "n":
                    attrs.append("[" + ".".join(str(operator.index(v)) for v in a) + "]")
                else:
                    attrs.append(str(operator.index(a)))
            entries.append(f"{node.op.name}:{','.join(str(index[a]) for a in node.args)}:{','.join(attrs)}")

    for root in roots:
        if root is not None:
            visit(root)
    return ";".join(entries) + "=" + ",".join("-" if r is None else str(index[r]) for r in roots)


def loads(text):
    """The roots (nodes or None) of a `dumps` text; ValueError names what is malformed."""
    if not isinstance(text, str) or text.count("=") != 1:
        raise ValueError(f"not a keomlir formula text (expected 'entries=roots'): {text!r:.80}")
    body, tail = text.split("=")
    nodes = []
    for k, entry in enumerate(body.split(";") if body else []):
        parts = entry.split(":")
        if len(parts) != 3 or parts[0] not in OPS:
            raise ValueError(f"formula text entry {k} {entry!r}: expected 'Name:operands:attributes' "
                             "with a known operation")
        name, operands, attributes = parts
        args = [_ref(nodes, a, k) for a in operands.split(",")] if operands else []
        attrs = [_attr(nodes, a, k) for a in attributes.split(",")] if attributes else []
        nodes.append(make(name, args, attrs))
    return [None if r == "-" else _ref(nodes, r, "roots") for r in tail.split(",")]


def _ref(nodes, text, where):
    if not text.isdigit() or int(text) >= len(nodes):
        raise ValueError(f"formula text entry {where}: {text!r} is not the index of an earlier entry")
    return nodes[int(text)]


def _attr(nodes, text, where):
    if text.startswith("%"):
        return _ref(nodes, text[1:], where)
    if text.startswith("[") and text.endswith("]"):
        return tuple(_int(v, where) for v in text[1:-1].split(".")) if len(text) > 2 else ()
    return _int(text, where)


def _int(text, where):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"formula text entry {where}: {text!r} is not an integer") from None
