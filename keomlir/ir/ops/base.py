"""What an operation is: one object carrying its signature, dimension rule,
dense NumPy semantics (the oracle), LLVM lowering and simplification rules.

Adding an operation is one `Op` subclass (or one call to a family helper) in
the module of its family; `register` makes it known to the parser, the
verifier, the reference interpreter and the code generator at once.

Signatures are strings of argument kinds, in the order the formula language
writes them: ``f`` a formula operand, ``i`` an integer, ``n`` an index list
``Ind(...)``, ``v`` a variable (the x of Grad).  Formula operands become
``node.args``; everything else becomes ``node.attrs`` in order.  A signature
ending with ``?`` has an optional last argument.
"""

from __future__ import annotations

import numpy as np

from ..node import DimensionError, Node, I, J

OPS: dict[str, "Op"] = {}


def register(op_cls):
    op = op_cls()
    if op.name in OPS:
        raise RuntimeError(f"operation {op.name} registered twice")
    OPS[op.name] = op
    return op_cls


class Op:
    name: str = ""
    signature: str = "f"
    lowers = True  # False: must be rewritten by a pass (Grad) before code generation

    # ---- shape -------------------------------------------------------------
    def infer_dim(self, dims, attrs):
        """Output dimension from operand dimensions; raise DimensionError."""
        raise NotImplementedError

    # ---- semantics ---------------------------------------------------------
    def reference(self, xs, attrs):
        """Dense float64 NumPy evaluation; xs are arrays of shape (..., d)."""
        raise NotImplementedError(f"{self.name} has no reference semantics")

    def lower(self, em, xs, attrs):
        """LLVM lowering: xs are lists of component values, return a list."""
        raise NotImplementedError(f"{self.name} has no code generation yet")

    def simplify(self, node):
        """A cheaper equivalent of `node`, or None.  Operands are already simplified."""
        return None

    def vjp(self, node, g):
        """Reverse-mode rule: for the adjoint g of `node` (dimension node.dim), the
        adjoint contribution of each operand (a node, or None for zero).  A
        contribution of dimension node.dim to a scalar operand is summed by the pass."""
        raise NotImplementedError(f"{self.name} has no derivative rule yet")

    # ---- text --------------------------------------------------------------
    @property
    def kinds(self):
        return self.signature.rstrip("?")

    def split_call(self, call_args):
        """Formula operands and attributes, from arguments in signature order."""
        args, attrs = [], []
        for kind, a in zip(self.kinds, call_args):
            (args if kind == "f" else attrs).append(a)
        return args, attrs

    def format(self, node, operand_texts, names):
        parts, fa, aa = [], iter(operand_texts), iter(node.attrs)
        for kind in self.kinds[: len(node.args) + len(node.attrs)]:
            parts.append(next(fa) if kind == "f" else format_attr(kind, next(aa), names))
        return f"{self.name}({', '.join(parts)})"

    def format_attrs(self, node, names):
        kinds = [k for k in self.kinds if k != "f"]
        return ", ".join(format_attr(k, a, names) for k, a in zip(kinds, node.attrs))


def format_attr(kind, value, names):
    if kind == "n":
        return "Ind(" + ",".join(str(v) for v in value) + ")"
    if kind == "v":
        return names.get(value.attrs, None) or _var_text(value)
    return str(value)


def _var_text(var):
    pos, dim, cat = var.attrs
    return f"Var({pos},{dim},{cat})"


def make(name, args=(), attrs=()):
    """Build a node, checking arity and dimensions (errors name the operation)."""
    op = OPS.get(name)
    if op is None:
        raise ValueError(f"unknown operation '{name}'")
    args, attrs = tuple(args), tuple(attrs)
    n_f = op.kinds.count("f")
    n_total = len(op.kinds)
    optional = op.signature.endswith("?")
    if len(args) + len(attrs) not in ((n_total, n_total - 1) if optional else (n_total,)):
        raise DimensionError(
            f"{name} expects {n_total}{' or ' + str(n_total - 1) if optional else ''} arguments, "
            f"got {len(args) + len(attrs)}"
        )
    if len(args) != n_f:
        raise DimensionError(f"{name} expects {n_f} formula operands, got {len(args)}")
    dim = op.infer_dim([a.dim for a in args], attrs)
    if not isinstance(dim, int) or dim < 1:
        raise DimensionError(f"{name}: output dimension must be a positive integer, got {dim}")
    cat = 0
    for a in args:
        cat |= a.cat
    for k, a in zip([k for k in op.kinds if k != "f"], attrs):
        if k == "v":
            cat |= a.cat
    if name == "Var":
        cat = {0: I, 1: J, 2: 0}[attrs[2]]
    return Node(op, args, attrs, dim, cat)


# ---- helpers shared by the families ------------------------------------------


def mk(name, *args, attrs=()):
    """Shorthand for derivative and simplification rules: mk("Mult", a, b)."""
    return make(name, args, attrs)


def cst(n):
    return make("IntCst", (), (n,))


def no_derivative(node, g, *operands):
    """The rule of piecewise-constant operations: zero almost everywhere."""
    return [None] * len(node.args)


def broadcast_dim(name, dims):
    """Element-wise rule: equal dimensions, or scalars broadcasting."""
    big = {d for d in dims if d != 1}
    if len(big) > 1:
        raise DimensionError(
            f"{name}: operand dimensions {', '.join(map(str, dims))} are incompatible "
            "(element-wise operands need equal dimensions, or dimension 1)"
        )
    return big.pop() if big else 1


def require_dim(name, which, dim, expected):
    if dim != expected:
        raise DimensionError(f"{name}: operand {which} must have dimension {expected}, got {dim}")


def spread(xs, dim):
    """Operand component lists broadcast to `dim` components."""
    return [x * dim if len(x) == 1 else x for x in xs]


def is_const(node, value=None):
    """Node is IntCst (of `value`) or Zero (when value == 0)."""
    if node.name == "IntCst":
        return value is None or node.attrs[0] == value
    if node.name == "Zero":
        return value is None or value == 0
    return False


def as_float(x):
    return np.asarray(x, dtype=np.float64)
