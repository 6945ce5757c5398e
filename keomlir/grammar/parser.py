"""Formula text -> keomlir IR.

Lark parses the text with `formula.lark` (LALR, never `eval`); a small tree
walker then resolves names against the aliases and the operation registry and
builds IR nodes, so dimension errors point at the offending text.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import lark

from keomlir.ir.node import DimensionError
from keomlir.ir.ops import OPS, make

GRAMMAR_FILE = pathlib.Path(__file__).with_name("formula.lark")
CATEGORIES = {"Vi": 0, "Vj": 1, "Pm": 2}


class FormulaSyntaxError(SyntaxError):
    """A syntax error located by line and column, shown with a caret under the fault."""

    def __init__(self, message, text, line, column, what="formula"):
        source = text.splitlines()[line - 1] if text.splitlines() else ""
        self.message = message
        self.detail = f"{what} line {line}, column {column}: {message}\n    {source}\n    {_caret(source, column)}"
        super().__init__(self.detail, (what, line, column, source))

    def __str__(self):
        return self.detail


def _caret(source, column):
    """A caret under `column` of `source`, keeping its tabs so it lines up."""
    return "".join(c if c == "\t" else " " for c in source[:column - 1]) + "^"


class FormulaError(ValueError):
    """A well-formed formula that means nothing: unknown name, bad dimensions."""


@functools.lru_cache(maxsize=None)
def _lark():
    return lark.Lark(
        GRAMMAR_FILE.read_text(),
        start=["formula", "alias"],
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _parse_tree(text, start, what):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    try:
        return _lark().parse(text, start=start)
    except lark.UnexpectedCharacters as e:
        raise FormulaSyntaxError(f"unexpected character {text[e.pos_in_stream]!r}", text, e.line, e.column, what) from None
    except lark.UnexpectedToken as e:
        if e.token.type == "$END":
            lines = text.splitlines() or [""]
            raise FormulaSyntaxError("unexpected end of text", text, len(lines), len(lines[-1]) + 1, what) from None
        raise FormulaSyntaxError(f"unexpected {e.token.value!r}", text, e.line, e.column, what) from None
    except lark.LarkError as e:  # pragma: no cover - any other parser failure is still a syntax error
        raise FormulaSyntaxError(str(e), text, 1, 1, what) from None


class _Int:
    """An integer literal: a formula (IntCst) or an integer argument, by context."""

    def __init__(self, value, meta):
        self.value, self.meta = value, meta


class _Ind:
    def __init__(self, values, meta):
        self.values, self.meta = values, meta


def parse_alias(text, index):
    """`x = Vi(3)` -> (name, Var node); position defaults to `index`."""
    tree = _parse_tree(text, "alias", "alias")
    name, kind, args = tree.children
    args = args.children if args is not None else []
    values = []
    for a in args:
        v = _literal_int(a)
        if v is None:
            raise FormulaSyntaxError("alias arguments must be integers", text, a.meta.line, a.meta.column, "alias")
        values.append(v)
    kind_name = str(kind)
    if kind_name in CATEGORIES and len(values) in (1, 2):
        pos, dim = (index, values[0]) if len(values) == 1 else values
        cat = CATEGORIES[kind_name]
    elif kind_name == "Var" and len(values) == 3:
        pos, dim, cat = values
    else:
        raise FormulaSyntaxError(
            f"expected Vi(dim), Vj(dim), Pm(dim), Vi(pos, dim)... or Var(pos, dim, cat), got {kind_name} "
            f"with {len(values)} argument(s)", text, kind.line, kind.column, "alias")
    try:
        return str(name), make("Var", (), (pos, dim, cat))
    except DimensionError as e:
        raise FormulaError(f"alias {text!r}: {e}") from None


def _literal_int(tree):
    if isinstance(tree, lark.Tree):
        if tree.data == "int":
            return int(tree.children[0])
        if tree.data == "neg":
            inner = _literal_int(tree.children[0])
            return None if inner is None else -inner
    return None


def parse_formula(text, aliases, what="formula"):
    """Parse `text` with `aliases` (name -> Var node) into an IR node; errors
    name `what` (the argument the text came from)."""
    tree = _parse_tree(text, "formula", what)
    # the tree walk recurses once per nesting level (a sum of n terms nests n deep):
    # leave room for as many levels as the text has characters
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(text) + 1000))
    try:
        return _Builder(text, aliases, what).formula(tree)
    finally:
        sys.setrecursionlimit(limit)


class _Builder:
    def __init__(self, text, aliases, what="formula"):
        self.text = text
        self.aliases = aliases
        self.what = what

    # ---- errors ------------------------------------------------------------------
    def fail(self, message, meta):
        line = getattr(meta, "line", 1)
        column = getattr(meta, "column", 1)
        source = self.text.splitlines()[line - 1] if self.text.splitlines() else ""
        raise FormulaError(
            f"{self.what} line {line}, column {column}: {message}\n    {source}\n    {_caret(source, column)}"
        )

    def node(self, name, args, attrs, meta):
        try:
            return make(name, args, attrs)
        except DimensionError as e:
            self.fail(str(e), meta)

    # ---- walking -----------------------------------------------------------------
    def formula(self, tree):
        v = self.visit(tree)
        return self.as_formula(v, tree)

    def as_formula(self, v, tree):
        if isinstance(v, _Int):
            return make("IntCst", (), (v.value,))
        if isinstance(v, _Ind):
            self.fail("an index list (Ind(...) or [...]) is only allowed as an index-list argument", v.meta)
        return v

    def visit(self, tree):
        if isinstance(tree, lark.Token):  # pragma: no cover - the grammar wraps tokens in rules
            self.fail(f"unexpected {tree!s}", tree)
        method = getattr(self, "r_" + tree.data)
        return method(tree, tree.meta)

    def r_int(self, tree, meta):
        return _Int(int(tree.children[0]), meta)

    def r_index_list(self, tree, meta):
        (args,) = tree.children
        return _Ind(tuple(self.int_arg(a, "an index list [...]") for a in (args.children if args else [])), meta)

    def r_decimal(self, tree, meta):
        tok = tree.children[0]
        raise FormulaSyntaxError(
            f"decimal literal {str(tok)!r}: the formula language has integer literals only "
            "(use IntInv(n), a ratio of integers, or a parameter Pm)", self.text, tok.line, tok.column, self.what)

    def r_name(self, tree, meta):
        name = str(tree.children[0])
        if name in self.aliases:
            return self.aliases[name]
        known = ", ".join(sorted(self.aliases)) or "none"
        if name in OPS:
            self.fail(f"operation {name} needs arguments: {name}(...)", meta)
        self.fail(f"unknown variable '{name}' (aliases: {known})", meta)

    def r_neg(self, tree, meta):
        v = self.visit(tree.children[0])
        if isinstance(v, _Int):
            return _Int(-v.value, meta)
        return self.node("Minus", (v,), (), meta)

    def _binary(self, name, tree, meta):
        a, b = (self.formula(c) for c in tree.children)
        return self.node(name, (a, b), (), meta)

    def r_add(self, tree, meta):
        return self._binary("Add", tree, meta)

    def r_sub(self, tree, meta):
        return self._binary("Subtract", tree, meta)

    def r_mul(self, tree, meta):
        return self._binary("Mult", tree, meta)

    def r_div(self, tree, meta):
        return self._binary("Divide", tree, meta)

    def r_scalprod(self, tree, meta):
        return self._binary("Scalprod", tree, meta)

    def r_compare(self, tree, meta):
        a, op, b = tree.children
        name = {"==": "Equal", "!=": "NotEqual", "<": "LessThan", ">": "GreaterThan",
                "<=": "LessOrEqual", ">=": "GreaterOrEqual"}[str(op)]
        return self.node(name, (self.formula(a), self.formula(b)), (), meta)

    def r_pow(self, tree, meta):
        base = self.formula(tree.children[0])
        exponent = self.visit(tree.children[1])
        if isinstance(exponent, _Int):
            if exponent.value == 2:
                return self.node("Square", (base,), (), meta)
            return self.node("Pow", (base,), (exponent.value,), meta)
        return self.node("Powf", (base, self.as_formula(exponent, tree)), (), meta)

    def r_call(self, tree, meta):
        name_tok, args = tree.children
        name = str(name_tok)
        args = args.children if args is not None else []
        if name == "Ind":
            values = [self.int_arg(a, "Ind") for a in args]
            return _Ind(tuple(values), meta)
        if name in CATEGORIES or name == "Var":
            return self.inline_variable(name, args, meta)
        op = OPS.get(name)
        if op is None:
            self.fail(f"unknown operation '{name}'", name_tok)
        kinds = op.kinds
        optional = op.signature.endswith("?")
        if not (len(args) == len(kinds) or (optional and len(args) == len(kinds) - 1)):
            expected = f"{len(kinds) - 1} or {len(kinds)}" if optional else str(len(kinds))
            self.fail(f"{name} expects {expected} arguments, got {len(args)}", meta)
        call_args = [self.argument(name, kind, a) for kind, a in zip(kinds, args)]
        formulas, attrs = op.split_call(call_args)
        return self.node(name, formulas, attrs, meta)

    def argument(self, op_name, kind, tree):
        if kind == "f":
            return self.formula(tree)
        if kind == "i":
            return self.int_arg(tree, op_name)
        if kind == "n":
            v = self.visit(tree)
            if not isinstance(v, _Ind):
                self.fail(f"{op_name} expects an index list Ind(...) here", tree.meta)
            return v.values
        if kind == "v":
            v = self.visit(tree)
            if not (hasattr(v, "op") and v.name == "Var"):
                self.fail(f"{op_name} expects a variable here", tree.meta)
            return v
        raise AssertionError(kind)  # pragma: no cover

    def int_arg(self, tree, op_name):
        v = _literal_int(tree)
        if v is None:
            self.fail(f"{op_name} expects an integer literal here", tree.meta)
        return v

    def inline_variable(self, name, args, meta):
        values = [self.int_arg(a, name) for a in args]
        if name == "Var":
            if len(values) != 3:
                self.fail(f"Var expects 3 integers (position, dimension, category), got {len(values)}", meta)
            attrs = tuple(values)
        else:
            if len(values) != 2:
                self.fail(f"{name} in a formula expects 2 integers (position, dimension), got {len(values)}", meta)
            attrs = (values[0], values[1], CATEGORIES[name])
        return self.node("Var", (), attrs, meta)
