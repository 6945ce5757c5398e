"""The IR as `Program.text()` prints it, read back: the program's header, its nodes and roots.

    reduce Sum over j  args(x=Var(0,3,i), y=Var(1,3,j), b=Var(2,1,j))
        %0 = Var[x: pos=0, i]                         : dim 3, i
        %1 = Var[y: pos=1, j]                         : dim 3, j
        %2 = SqDist(%0, %1)                           : dim 1, ij
        ...
      F = %6

A line is a header (`reduce NAME[, K=k] over j  args(...)`), a node (`%n = Op[attributes](operands)`
with an optional `: dim d, cats` annotation, checked where given), or a root (`F = %n`, `G = %n`);
`//` starts a comment.  Each node line builds a new node with `make` (never hash-consed: the DAG
read has the sharing the text has, so it prints back the same): every node of a well-formed text
type-checks (the program as a whole is the verifier's), and a bad text is an `IRSyntaxError`
naming the line and column, with a caret.  Nothing is evaluated.  The schedule block that may follow is read by `keomlir.schedule.kir`.
"""

from __future__ import annotations

import re

from .node import DimensionError, index_name
from .ops import OPS, make
from .program import Program
from .reductions import REDUCTIONS

__all__ = ["IRSyntaxError", "parse_program", "read_program", "source_lines"]

CATS = {"i": 0, "j": 1, "p": 2}
INDEX_SETS = {index_name(c): c for c in range(4)}
_TOKEN = re.compile(r"\s*(?:(?P<ssa>%\d+)|(?P<int>-?\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<punct>[=\[\](),:\-]))")


class IRSyntaxError(SyntaxError):
    """A text that is not a program, located by line and column, shown with a caret."""

    def __init__(self, message, source, line, column, what="IR"):
        self.message = message
        caret = "".join(c if c == "\t" else " " for c in source[:column - 1]) + "^"
        self.detail = f"{what} line {line}, column {column}: {message}\n    {source}\n    {caret}"
        super().__init__(self.detail, (what, line, column, source))

    def __str__(self):
        return self.detail


def source_lines(text):
    """(line number, line without its comment) of every line holding more than a comment."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("//", 1)[0].rstrip()
        if code.strip():
            found.append((number, code))
    return found


class Tokens:
    """The tokens of one line, each (kind, text, column), read front to back."""

    def __init__(self, number, line, what):
        self.number, self.line, self.what = number, line, what
        self.items, pos = [], 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if m is None or m.end() == pos:
                if not line[pos:].strip():
                    break
                column = pos + len(line[pos:]) - len(line[pos:].lstrip()) + 1
                self.fail(f"unexpected character {line[column - 1]!r}", column)
            kind = m.lastgroup
            self.items.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.k = 0

    def fail(self, message, column=None):
        if column is None:
            column = self.items[self.k][2] if self.k < len(self.items) else len(self.line) + 1
        raise IRSyntaxError(message, self.line, self.number, column, self.what)

    def column(self):
        return self.items[self.k][2] if self.k < len(self.items) else len(self.line) + 1

    def peek(self, text=None):
        if self.k >= len(self.items):
            return None
        kind, value, _ = self.items[self.k]
        return value if text is None or value == text else None

    def take(self, kind, expected=None):
        """The next token's text, which must be of `kind` (and `expected`, if given)."""
        what = repr(expected) if expected is not None else {"ssa": "a node (%n)", "int": "an integer",
                                                            "name": "a name", "punct": "punctuation"}[kind]
        if self.k >= len(self.items):
            self.fail(f"expected {what}, found the end of the line")
        found_kind, value, _ = self.items[self.k]
        if found_kind != kind or (expected is not None and value != expected):
            self.fail(f"expected {what}, found {value!r}")
        self.k += 1
        return value

    def integer(self):
        return int(self.take("int"))

    def done(self):
        if self.k < len(self.items):
            self.fail(f"unexpected {self.items[self.k][1]!r} after the end of the line's text")


def parse_program(text, what="IR"):
    """The Program of `text` (as `Program.text()` prints it); IRSyntaxError if malformed."""
    if not isinstance(text, str):
        raise TypeError(f"{what}: expected the IR as text, got {type(text).__name__}")
    lines = source_lines(text)
    program = read_program(lines, what)
    if program is None:
        raise IRSyntaxError("no program: expected a line 'reduce NAME over j  args(...)'", "", 1, 1, what)
    return program


def read_program(lines, what="IR"):
    """The Program of the (number, line) pairs `lines` (None if there are none)."""
    if not lines:
        return None
    reader = _Reader(what)
    for number, line in lines:
        reader.line(Tokens(number, line, what))
    return reader.program(lines[-1])


class _Reader:
    def __init__(self, what):
        self.what = what
        self.head = None  # (reduction, K)
        self.arguments = []  # (pos, dim, cat) in order
        self.names = {}  # alias -> (pos, dim, cat)
        self.nodes = {}  # "%n" -> node
        self.roots = {}  # "F" / "G" -> node

    def line(self, t):
        first = t.peek()
        if first == "reduce":
            self.header(t)
        elif self.head is None:
            t.fail("expected the program's header first: 'reduce NAME over j  args(...)'")
        elif first is not None and first.startswith("%"):
            self.node(t)
        elif first in ("F", "G"):
            self.root(t)
        else:
            t.fail(f"expected a node ('%n = Op(...)') or a root ('F = %n'), found {first!r}")
        t.done()

    # ---- the header -------------------------------------------------------------
    def header(self, t):
        if self.head is not None:
            t.fail("a second program: a .kir text holds one program (`keomlir ir --print-ir-after-all` "
                   "prints one per stage: keep one)")
        t.take("name", "reduce")
        column = t.column()
        reduction = t.take("name")
        if reduction not in REDUCTIONS:
            t.fail(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}", column)
        k = None
        if t.peek(","):
            t.take("punct", ",")
            t.take("name", "K")
            t.take("punct", "=")
            k = t.integer()
        t.take("name", "over")
        t.take("name", "j")
        t.take("name", "args")
        t.take("punct", "(")
        while not t.peek(")"):
            if self.arguments:
                t.take("punct", ",")
            self.argument(t)
        t.take("punct", ")")
        self.head = (reduction, k)

    def argument(self, t):
        column = t.column()
        name = None
        if t.peek() != "Var":
            name = t.take("name")
            t.take("punct", "=")
        t.take("name", "Var")
        t.take("punct", "(")
        pos = t.integer()
        t.take("punct", ",")
        dim = t.integer()
        t.take("punct", ",")
        cat_column = t.column()
        cat = t.take("name")
        t.take("punct", ")")
        if cat not in CATS:
            t.fail(f"expected an index i, j or p (a parameter), found {cat!r}", cat_column)
        if pos != len(self.arguments):
            t.fail(f"argument {len(self.arguments)} has position {pos}: arguments are listed by position, "
                   f"0, 1, 2, ...", column)
        if dim < 1:
            t.fail(f"argument {pos}: dimension must be at least 1, got {dim}", column)
        if name is not None:
            if name in self.names:
                t.fail(f"alias {name!r} names two arguments", column)
            self.names[name] = (pos, dim, CATS[cat])
        self.arguments.append((pos, dim, CATS[cat]))

    # ---- nodes and roots -------------------------------------------------------------
    def node(self, t):
        column = t.column()
        ssa = t.take("ssa")
        if ssa in self.nodes:
            t.fail(f"{ssa} is defined twice", column)
        t.take("punct", "=")
        op_column = t.column()
        name = t.take("name")
        op = OPS.get(name)
        if op is None:
            t.fail(f"unknown operation {name!r}", op_column)
        attrs = []
        if t.peek("["):
            t.take("punct", "[")
            attrs = self.var_attrs(t) if name == "Var" else self.attrs(t, op)
            t.take("punct", "]")
        args = []
        if t.peek("("):
            t.take("punct", "(")
            while not t.peek(")"):
                if args:
                    t.take("punct", ",")
                ref_column = t.column()
                ref = t.take("ssa")
                if ref not in self.nodes:
                    t.fail(f"{ref} is not defined on an earlier line", ref_column)
                args.append(self.nodes[ref])
            t.take("punct", ")")
        try:
            node = make(name, args, attrs)
        except (DimensionError, ValueError) as e:
            t.fail(str(e), op_column)
        if t.peek(":"):
            self.annotation(t, node)
        self.nodes[ssa] = node

    def var_attrs(self, t):
        """`x: pos=0, i` or `pos=0, i`: the argument at that position, which the header declares."""
        column = t.column()
        label = None
        if t.peek() != "pos":
            label = t.take("name")
            t.take("punct", ":")
        t.take("name", "pos")
        t.take("punct", "=")
        pos = t.integer()
        t.take("punct", ",")
        cat_column = t.column()
        cat = t.take("name")
        if cat not in CATS:
            t.fail(f"expected an index i, j or p (a parameter), found {cat!r}", cat_column)
        if not 0 <= pos < len(self.arguments):
            t.fail(f"Var at position {pos}: the header declares arguments 0 to {len(self.arguments) - 1}", column)
        attrs = self.arguments[pos]
        if attrs[2] != CATS[cat]:
            t.fail(f"Var at position {pos} is indexed by {'ijp'[attrs[2]]} in the header, not {cat}", cat_column)
        named = {v: k for k, v in self.names.items()}.get(attrs)
        if label is not None and label != named:
            t.fail(f"Var at position {pos} is {'named ' + repr(named) if named else 'unnamed'} in the header, "
                   f"not {label!r}", column)
        return list(attrs)

    def attrs(self, t, op):
        kinds = [k for k in op.kinds if k != "f"]
        values = []
        while not t.peek("]"):
            if values:
                t.take("punct", ",")
            if len(values) == len(kinds):
                t.fail(f"{op.name} takes {len(kinds)} attribute(s)")
            values.append(self.attr(t, kinds[len(values)]))
        return values

    def attr(self, t, kind):
        if kind == "i":
            return t.integer()
        if kind == "n":
            t.take("name", "Ind")
            t.take("punct", "(")
            values = []
            while not t.peek(")"):
                if values:
                    t.take("punct", ",")
                values.append(t.integer())
            t.take("punct", ")")
            return tuple(values)
        # "v": a variable, by its alias or as Var(pos,dim,cat)
        column = t.column()
        name = t.take("name")
        if name == "Var" and t.peek("("):
            t.take("punct", "(")
            values = [t.integer()]
            for _ in range(2):
                t.take("punct", ",")
                values.append(t.integer())
            t.take("punct", ")")
            try:
                return make("Var", (), values)
            except DimensionError as e:
                t.fail(str(e), column)
        if name not in self.names:
            t.fail(f"unknown variable {name!r} (aliases: {', '.join(self.names) or 'none'})", column)
        return make("Var", (), self.names[name])

    def annotation(self, t, node):
        t.take("punct", ":")
        column = t.column()
        t.take("name", "dim")
        dim = t.integer()
        t.take("punct", ",")
        cats_column = t.column()
        cats = t.take("punct", "-") if t.peek("-") else t.take("name")
        if cats not in INDEX_SETS:
            t.fail(f"expected the indices a node depends on: -, i, j or ij, found {cats!r}", cats_column)
        if (dim, INDEX_SETS[cats]) != (node.dim, node.cat):
            t.fail(f"{node.name} of these operands has dim {node.dim}, {index_name(node.cat)}; the line says "
                   f"dim {dim}, {cats}", column)

    def root(self, t):
        column = t.column()
        label = t.take("name")
        if label in self.roots:
            t.fail(f"{label} is given twice", column)
        t.take("punct", "=")
        ref_column = t.column()
        ref = t.take("ssa")
        if ref not in self.nodes:
            t.fail(f"{ref} is not defined on an earlier line", ref_column)
        self.roots[label] = self.nodes[ref]

    def program(self, last):
        number, line = last
        if "F" not in self.roots:
            raise IRSyntaxError("no root: expected a line 'F = %n' naming the formula", line, number,
                                len(line) + 1, self.what)
        reduction, k = self.head
        names = tuple(sorted((attrs, alias) for alias, attrs in self.names.items()))
        return Program(reduction, self.roots["F"], self.roots.get("G"), k, tuple(self.arguments), names)
