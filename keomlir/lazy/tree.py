"""A LazyTensor's expression tree, and the IR it compiles to.

The tree mirrors the IR but its leaves are what a LazyTensor holds before any
reduction: arrays, Python-number parameters, symbolic variables `Var(ind, dim,
cat)` and integer constants.  Arrays have no argument position until a reduction
numbers them (`Numbering`), which yields the IR nodes handed to `Genred.from_ir`.
Each tree node also carries an IR node built with placeholder positions, so the
IR's own dimension rule checks every operation as it is written.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..ir.ops import Op, make

INFIX = {"Add": "+", "Subtract": "-", "Mult": "*", "Divide": "/", "Scalprod": "|"}


def is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x):
    return isinstance(x, (numbers.Real, np.floating, np.integer)) and not isinstance(x, bool)


class Sym:
    """One node of a LazyTensor's tree.  kind: 'data' (an array: cat 0 i, 1 j, 2
    parameter), 'symb' (Var(ind, dim, cat) given at call time), 'int' (IntCst),
    'float' (a parameter made of Python numbers, an array once the dtype is known) or
    'op'.  `ir` is the matching IR node, whose dimension rule checked the operands."""

    __slots__ = ("kind", "name", "args", "attrs", "data", "cat", "value", "ir")

    def __init__(self, kind, ir, name=None, args=(), attrs=(), data=None, cat=None, value=None):
        self.kind, self.ir, self.name, self.args, self.attrs = kind, ir, name, tuple(args), tuple(attrs)
        self.data, self.cat, self.value = data, cat, value

    @property
    def dim(self):
        return self.ir.dim


def _placeholder_var(dim, cat):
    return make("Var", (), (0, dim, cat))


def leaf_data(array, dim, cat):
    return Sym("data", _placeholder_var(dim, cat), data=array, cat=cat)


def leaf_symb(ind, dim, cat):
    return Sym("symb", make("Var", (), (ind, dim, cat)), cat=cat, value=ind)


def leaf_int(n):
    return Sym("int", make("IntCst", (), (n,)), value=n)


def leaf_float(values):
    return Sym("float", _placeholder_var(len(values), 2), cat=2, value=tuple(float(v) for v in values))


def op_node(name, operands, attrs=()):
    """An operation node; attrs in signature order (ints, index tuples, variable leaves)."""
    ir_attrs = [a.ir if isinstance(a, Sym) else a for a in attrs]
    ir = make(name, [o.ir for o in operands], ir_attrs)  # the IR's dimension rule
    return Sym("op", ir, name=name, args=operands, attrs=attrs)


def swap_ij(sym, memo=None):
    """The tree with i- and j-variables exchanged (transposition)."""
    memo = {} if memo is None else memo
    found = memo.get(id(sym))
    if found is not None:
        return found
    if sym.kind == "data" and sym.cat in (0, 1):
        res = leaf_data(sym.data, sym.dim, 1 - sym.cat)
    elif sym.kind == "symb" and sym.cat in (0, 1):
        res = leaf_symb(sym.value, sym.dim, 1 - sym.cat)
    elif sym.kind == "op":
        args = [swap_ij(a, memo) for a in sym.args]
        attrs = [swap_ij(a, memo) if isinstance(a, Sym) else a for a in sym.attrs]
        res = op_node(sym.name, args, attrs)
    else:
        res = sym
    memo[id(sym)] = res
    return res


def same_variable(a, b):
    """Do two leaves stand for the same variable (one array, or one symbolic index)."""
    if a.kind == "data" and b.kind == "data":
        return a.data is b.data and a.cat == b.cat
    return a.kind == b.kind == "symb" and a.value == b.value


def substitute(sym, variable, replacement, memo=None):
    """The tree with every leaf standing for `variable` replaced by the tree `replacement`
    (in operands: a derivative's variable attribute stays)."""
    memo = {} if memo is None else memo
    found = memo.get(id(sym))
    if found is not None:
        return found
    if sym.kind in ("data", "symb") and same_variable(sym, variable):
        res = replacement
    elif sym.kind == "op":
        res = op_node(sym.name, [substitute(a, variable, replacement, memo) for a in sym.args], sym.attrs)
    else:
        res = sym
    memo[id(sym)] = res
    return res


def _walk(sym, seen):
    if id(sym) in seen:
        return
    seen.add(id(sym))
    yield sym
    for a in sym.args + sym.attrs:
        if isinstance(a, Sym):
            yield from _walk(a, seen)


def symbolic_leaves(*syms):
    """{index: leaf} of the symbolic variables of the trees (one dimension and category per index)."""
    found = {}
    seen = set()
    for s in syms:
        if s is None:
            continue
        for node in _walk(s, seen):
            if node.kind == "symb":
                key = node.value
                prev = found.get(key)
                if prev is not None and (prev.dim, prev.cat) != (node.dim, node.cat):
                    raise ValueError(f"symbolic variable {key} is used as Var({key},{prev.dim},{prev.cat}) "
                                     f"and as Var({key},{node.dim},{node.cat})")
                found[key] = node
    return found


class Numbering:
    """The IR of one or two trees sharing one argument numbering: symbolic variables
    keep their index, arrays and Python-number parameters are numbered after them, in
    order of first appearance (the same array, or the same numbers, once)."""

    def __init__(self, first_position):
        self.next = first_position
        self.positions = {}
        self.leaves = []  # ('data', array, cat) or ('float', values, 2), by position
        self._memo = {}

    def _position(self, sym):
        key = (id(sym.data), sym.cat) if sym.kind == "data" else ("float", sym.value)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = self.next
            self.next += 1
            self.leaves.append((sym.kind, sym.data if sym.kind == "data" else sym.value, sym.cat))
        return pos

    def ir(self, sym):
        """The IR node of `sym`, its arrays and numbers made numbered Vars."""
        found = self._memo.get(id(sym))
        if found is not None:
            return found
        if sym.kind in ("data", "float"):
            res = make("Var", (), (self._position(sym), sym.dim, sym.cat))
        elif sym.kind in ("symb", "int"):
            res = sym.ir
        else:
            attrs = [self.ir(a) if isinstance(a, Sym) else a for a in sym.attrs]
            res = make(sym.name, [self.ir(a) for a in sym.args], attrs)
        self._memo[id(sym)] = res
        return res


def formula_text(node):
    """pykeops-style text of an IR formula, for printing only: `(a + b)` infix for the
    arithmetic operators and `|`, `Name(operands, attributes)` elsewhere."""
    memo = {}
    for n in node.walk():
        operands = [memo[id(a)] for a in n.args]
        if n.name == "Var":
            text = "Var({},{},{})".format(*n.attrs)
        elif n.name in INFIX:
            text = f"({operands[0]} {INFIX[n.name]} {operands[1]})"
        else:
            text = Op.format(n.op, n, operands, {})  # the generic call form
        memo[id(n)] = text
    return memo[id(node)]
