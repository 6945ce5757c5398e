"""The formula language (SPEC §1-2): precedence, every operation name, inline
variables, literals, multi-line text, syntax errors with a caret, the formula
printer round trip and the SSA printer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import assert_close
from keomlir.grammar import FormulaError, FormulaSyntaxError, parse_alias, parse_formula
from keomlir.ir import to_formula
from keomlir.ir.ops import make
from keomlir.numpy import Genred


def var(pos, dim, cat):
    return make("Var", (), (pos, dim, cat))


# ---- precedence and associativity, checked numerically ------------------------------

ALIASES = ["x = Vi(3)", "y = Vj(3)", "z = Vj(3)", "p = Pm(1)", "s = Vj(1)"]


def _numpy_sum(fn, x, y, z, p, s):
    """Σ_j fn(x_i, y_j, z_j, p, s_j), dense."""
    X, Y, Z, S = x[:, None, :], y[None], z[None], s[None]
    val = fn(X, Y, Z, p[0], S)
    val = np.broadcast_to(val, (x.shape[0], y.shape[0], val.shape[-1]))
    return val.sum(axis=1)


PRECEDENCE = [
    ("-x**2", lambda x, y, z, p, s: -(x ** 2)),
    ("(-x)**2", lambda x, y, z, p, s: (-x) ** 2),
    ("x-y-z", lambda x, y, z, p, s: (x - y) - z),
    ("x-(y-z)", lambda x, y, z, p, s: x - (y - z)),
    ("x/y*z", lambda x, y, z, p, s: (x / y) * z),
    ("x/y/z", lambda x, y, z, p, s: (x / y) / z),
    ("x+y*z", lambda x, y, z, p, s: x + y * z),
    ("(x+y)*z", lambda x, y, z, p, s: (x + y) * z),
    ("2*x+1", lambda x, y, z, p, s: 2 * x + 1),
    ("1+2*x", lambda x, y, z, p, s: 1 + 2 * x),
    ("x*3-y/2", lambda x, y, z, p, s: x * 3 - y / 2),
    ("x**-1", lambda x, y, z, p, s: 1 / x),
    ("x**-2*y", lambda x, y, z, p, s: x ** -2.0 * y),
    ("x**2**2", lambda x, y, z, p, s: x ** 4),
    ("2*x**3", lambda x, y, z, p, s: 2 * x ** 3),
    ("-2**2*x", lambda x, y, z, p, s: -4 * x),
    ("x**p", lambda x, y, z, p, s: x ** p),
    ("x**y", lambda x, y, z, p, s: x ** y),
    ("x**-s", lambda x, y, z, p, s: x ** -s),
    ("2**x", lambda x, y, z, p, s: 2.0 ** x),
    ("x - -y", lambda x, y, z, p, s: x + y),
    ("--x", lambda x, y, z, p, s: x),
    ("+x", lambda x, y, z, p, s: x),
    ("-x*y", lambda x, y, z, p, s: -(x * y)),
    ("x*-y", lambda x, y, z, p, s: -(x * y)),
    ("(x|y)", lambda x, y, z, p, s: (x * y).sum(-1, keepdims=True)),
    ("(x|y)*z", lambda x, y, z, p, s: (x * y).sum(-1, keepdims=True) * z),
    ("(x+y|y-z)", lambda x, y, z, p, s: ((x + y) * (y - z)).sum(-1, keepdims=True)),
    ("((x|y))", lambda x, y, z, p, s: (x * y).sum(-1, keepdims=True)),
    ("x < y", lambda x, y, z, p, s: (x < y) * 1.0),
    ("x > y", lambda x, y, z, p, s: (x > y) * 1.0),
    ("x <= y", lambda x, y, z, p, s: (x <= y) * 1.0),
    ("x >= y", lambda x, y, z, p, s: (x >= y) * 1.0),
    ("x == x", lambda x, y, z, p, s: np.ones_like(x)),
    ("x != x", lambda x, y, z, p, s: np.zeros_like(x)),
    ("x == y", lambda x, y, z, p, s: (x == y) * 1.0),
    ("x != y", lambda x, y, z, p, s: (x != y) * 1.0),
    ("x + 1 > y * 2", lambda x, y, z, p, s: ((x + 1) > (y * 2)) * 1.0),
    ("x < y + z - 1", lambda x, y, z, p, s: (x < (y + z - 1)) * 1.0),
    ("(x < y) * z", lambda x, y, z, p, s: (x < y) * z),
    ("Exp(-SqDist(x,y)) * z", lambda x, y, z, p, s: np.exp(-((x - y) ** 2).sum(-1, keepdims=True)) * z),
    ("s*x + p", lambda x, y, z, p, s: s * x + p),
    ("x/2", lambda x, y, z, p, s: x / 2),
    ("IntInv(2)*x", lambda x, y, z, p, s: 0.5 * x),
    ("Square(x) - x**2", lambda x, y, z, p, s: 0 * x),
]


@pytest.mark.parametrize("backend", ["reference", "CPU"])
@pytest.mark.parametrize("formula, fn", PRECEDENCE, ids=[f for f, _ in PRECEDENCE])
def test_precedence_and_associativity(formula, fn, backend, rng):
    g = Genred(formula, ALIASES, reduction_op="Sum", axis=1)
    x, y, z = rng.uniform(0.5, 1.5, (6, 3)), rng.uniform(0.5, 1.5, (5, 3)), rng.uniform(0.5, 1.5, (5, 3))
    p, s = rng.uniform(0.5, 1.5, (1,)), rng.uniform(0.5, 1.5, (5, 1))
    out = g(x, y, z, p, s, backend=backend)
    assert_close(out, _numpy_sum(fn, x, y, z, p, s), "float64")


XYP = {"x": var(0, 3, 0), "y": var(1, 3, 1), "p": var(2, 1, 2)}


@pytest.mark.parametrize("text, expected", [
    ("-x**2", "Minus(Square(x))"),
    ("x**2", "Square(x)"),
    ("x**3", "Pow(x, 3)"),
    ("x**-1", "Pow(x, -1)"),
    ("x**(-1)", "Pow(x, -1)"),
    ("x**p", "Powf(x, p)"),
    ("x**y", "Powf(x, y)"),
    ("x-y-x", "Subtract(Subtract(x, y), x)"),
    ("x/y*x", "Mult(Divide(x, y), x)"),
    ("x+y*x", "Add(x, Mult(y, x))"),
    ("2*x+1", "Add(Mult(IntCst(2), x), IntCst(1))"),
    ("(x|y)", "(x|y)"),
    ("x < y", "LessThan(x, y)"),
    ("x+1 >= y", "GreaterOrEqual(Add(x, IntCst(1)), y)"),
    ("-3", "IntCst(-3)"),
    ("- x", "Minus(x)"),
])
def test_parse_tree_shape(text, expected):
    names = {v.attrs: k for k, v in XYP.items()}
    assert to_formula(parse_formula(text, XYP), names) == expected


@pytest.mark.parametrize("text, column", [("x < y < x", 7), ("x == y == x", 8), ("x < y >= x", 7)])
def test_comparisons_do_not_chain(text, column):
    with pytest.raises(SyntaxError, match=rf"line 1, column {column}\b"):
        parse_formula(text, XYP)


# ---- every operation of SPEC §2 parses, with the right dimension --------------------

# x, y: dimension 3; s: scalar; c: complex scalar (2 reals); z, w: 2 complex numbers (4 reals);
# A: a 2x3 matrix (6 reals); a, m: 2x2 matrices (4 reals); r: 2 reals
OP_ALIASES = {
    "x": var(0, 3, 0), "y": var(1, 3, 1), "s": var(2, 1, 1), "c": var(3, 2, 0), "z": var(4, 4, 0),
    "w": var(5, 4, 1), "A": var(6, 6, 0), "a": var(7, 4, 0), "m": var(8, 4, 1), "r": var(9, 2, 1),
    "e": var(10, 3, 1),
}

OPERATIONS = [
    # arithmetic
    ("x+y", 3), ("x-s", 3), ("-x", 3), ("x*y", 3), ("s/x", 3), ("(x|y)", 1), ("x**2", 3), ("x**5", 3),
    ("x==y", 3), ("x!=y", 3), ("x<y", 3), ("x>y", 3), ("x<=s", 3), ("x>=y", 3), ("2*x", 3),
    # element-wise
    ("Minus(x)", 3), ("Inv(x)", 3), ("Exp(x)", 3), ("Log(x)", 3), ("XLogX(x)", 3), ("Sin(x)", 3),
    ("SinXDivX(x)", 3), ("Asin(x)", 3), ("Cos(x)", 3), ("Acos(x)", 3), ("Atan(x)", 3),
    ("Atan2(x, y)", 3), ("Pow(x, 3)", 3), ("Pow(x, -2)", 3), ("Powf(x, y)", 3), ("Powf(s, x)", 3),
    ("Square(x)", 3), ("Sqrt(x)", 3), ("Rsqrt(x)", 3), ("Abs(x)", 3), ("Sign(x)", 3), ("Step(x)", 3),
    ("ReLU(x)", 3), ("Clamp(x, s, y)", 3), ("ClampInt(x, -1, 2)", 3), ("IfElse(s, x, y)", 3),
    ("Mod(x, s, y)", 3), ("Round(x, 2)", 3), ("Floor(x)", 3),
    # vector
    ("Sum(x)", 1), ("Max(x)", 1), ("Min(x)", 1), ("ArgMax(x)", 1), ("ArgMin(x)", 1), ("SumT(s, 4)", 4),
    ("SqNorm2(x)", 1), ("Norm2(x)", 1), ("Normalize(x)", 3), ("SqDist(x, y)", 1),
    ("WeightedSqNorm(s, x)", 1), ("WeightedSqNorm(y, x)", 1), ("WeightedSqNorm(Concat(A, y), x)", 1),
    ("WeightedSqDist(s, x, y)", 1), ("Elem(x, 2)", 1), ("ElemT(s, 5, 4)", 5), ("Extract(x, 1, 2)", 2),
    ("ExtractT(x, 1, 5)", 5), ("Concat(x, y)", 6), ("Concat(s, x)", 4), ("OneHot(s, 4)", 4),
    # constants
    ("IntCst(7)", 1), ("IntCst(-7)", 1), ("IntInv(3)", 1), ("Zero(4)", 4), ("x + Zero(3)", 3),
    # tensor algebra
    ("MatVecMult(A, x)", 2), ("MatVecMult(A, r)", 3), ("VecMatMult(x, A)", 2), ("VecMatMult(r, A)", 3),
    ("TensorProd(x, r)", 6), ("Kron(a, m, Ind(2,2), Ind(2,2))", 16),
    ("TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(1), Ind(0))", 4),
    ("TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(1), Ind(0), Ind(1,0))", 4),
    ("TensorDot(A, x, Ind(2,3), Ind(3), Ind(1), Ind(0))", 2),
    ("TensorDot(r, x, Ind(2), Ind(3), Ind(), Ind())", 6),
    # complex
    ("ComplexReal(z)", 2), ("ComplexImag(z)", 2), ("Real2Complex(r)", 4), ("Imag2Complex(r)", 4),
    ("Conj(z)", 4), ("ComplexAbs(z)", 2), ("ComplexSquareAbs(z)", 2), ("ComplexAngle(z)", 2),
    ("ComplexSum(z)", 2), ("ComplexSumT(c, 6)", 6), ("ComplexMult(z, w)", 4), ("ComplexScal(c, z)", 4),
    ("ComplexRealScal(s, z)", 4), ("ComplexDivide(z, w)", 4), ("ComplexExp(z)", 4),
    ("ComplexExp1j(r)", 4),
    # derivatives
    ("Grad(SqDist(x, y), x, s)", 3), ("Grad(Exp(-SqDist(x, y)) * x, y, e)", 3),
    ("Diff(SqDist(x, y), x, e)", 1), ("Diff(Exp(x), x, y)", 3), ("GradMatrix(Exp(x), x)", 9),
    ("GradMatrix(SqDist(x, y), y)", 3), ("Divergence(x * SqNorm2(x), x)", 1),
    ("Laplacian(Exp(-SqDist(x, y)), x)", 1), ("Grad(Grad(SqDist(x, y), x, s), x, e)", 3),
    ("Laplacian(Laplacian(SqNorm2(x) * SqNorm2(x), x), x)", 1),
]

SPEC_OPERATIONS = """Minus Inv Exp Log XLogX Sin SinXDivX Asin Cos Acos Atan Atan2 Pow Powf Square Sqrt Rsqrt
Abs Sign Step ReLU Clamp ClampInt IfElse Mod Round Floor Sum Max Min ArgMax ArgMin SumT SqNorm2 Norm2
Normalize SqDist WeightedSqNorm WeightedSqDist Elem ElemT Extract ExtractT Concat OneHot IntCst IntInv
Zero MatVecMult VecMatMult TensorProd Kron TensorDot ComplexReal ComplexImag Real2Complex Imag2Complex
Conj ComplexAbs ComplexSquareAbs ComplexAngle ComplexSum ComplexSumT ComplexMult ComplexScal
ComplexRealScal ComplexDivide ComplexExp ComplexExp1j Grad Diff GradMatrix Divergence Laplacian""".split()

_CALLED = re.compile(r"\b([A-Z][A-Za-z0-9]*)\(")


def test_operation_table_covers_spec():
    used = {name for text, _ in OPERATIONS for name in _CALLED.findall(text)}
    assert set(SPEC_OPERATIONS) <= used, sorted(set(SPEC_OPERATIONS) - used)


@pytest.mark.parametrize("text, dim", OPERATIONS, ids=[t for t, _ in OPERATIONS])
def test_every_operation_parses(text, dim):
    node = parse_formula(text, OP_ALIASES)
    assert node.dim == dim
    # and the printer gives text that parses back to the same node
    assert parse_formula(to_formula(node), {}) == node


# ---- variables written inline -------------------------------------------------------


@pytest.mark.parametrize("text, attrs", [
    ("Vi(0,3)", (0, 3, 0)), ("Vj(1,3)", (1, 3, 1)), ("Pm(2,1)", (2, 1, 2)), ("Var(0,3,0)", (0, 3, 0)),
    ("Var(4, 2, 1)", (4, 2, 1)), ("Var(1,5,2)", (1, 5, 2)), ("Vi( 7 , 2 )", (7, 2, 0)),
])
def test_inline_variables(text, attrs):
    node = parse_formula(text, {})
    assert node.name == "Var" and node.attrs == attrs and node.dim == attrs[1]
    assert node == var(*attrs)


def test_inline_and_alias_are_the_same_variable():
    aliases = {"x": var(0, 3, 0)}
    assert parse_formula("x + Vi(0,3)", aliases) == parse_formula("x + x", aliases)


@pytest.mark.parametrize("backend", ["reference", "CPU"])
def test_inline_variables_in_a_reduction(backend, rng):
    g = Genred("Exp(-SqDist(Vi(0,3), Vj(1,3))) * Pm(2,1) * Var(3,1,1)", [], reduction_op="Sum", axis=1)
    x, y, p, b = rng.random((5, 3)), rng.random((4, 3)), np.array([2.0]), rng.random((4, 1))
    want = (np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * 2.0 * b[:, 0][None]).sum(1, keepdims=True)
    assert_close(g(x, y, p, b, backend=backend), want, "float64")


@pytest.mark.parametrize("text, message", [
    ("Vi(3)", r"Vi in a formula expects 2 integers \(position, dimension\), got 1"),
    ("Vj(0,3,1)", r"Vj in a formula expects 2 integers"),
    ("Var(0,3)", r"Var expects 3 integers \(position, dimension, category\), got 2"),
    ("Var(0,3,7)", r"category must be 0 \(i\), 1 \(j\) or 2"),
    ("Vi(0,0)", r"dimension must be >= 1"),
    ("Vi(-1,3)", r"position must be >= 0"),
    ("Vi(a,3)", r"Vi expects an integer literal"),
])
def test_bad_inline_variables(text, message):
    with pytest.raises(ValueError, match=message):
        parse_formula(text, {"a": var(0, 1, 0)})


@pytest.mark.parametrize("text, attrs", [
    ("x = Vi(3)", (5, 3, 0)), ("y = Vj(2, 3)", (2, 3, 1)), ("p = Pm(1)", (5, 1, 2)),
    ("v = Var(0, 3, 1)", (0, 3, 1)), ("  x=Vi(4)  ", (5, 4, 0)), ("Exp = Vi(1)", (5, 1, 0)),
])
def test_aliases(text, attrs):
    name, node = parse_alias(text, 5)
    assert name == text.split("=")[0].strip() and node.attrs == attrs


# ---- integer literals ---------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("3", 3), ("0", 0), ("-5", -5), ("007", 7), ("123456789", 123456789),
                                         ("- 2", -2)])
def test_integer_literals(text, value):
    node = parse_formula(text, {})
    assert node.name == "IntCst" and node.attrs == (value,) and node.dim == 1


def test_integer_literal_in_a_reduction(rng):
    g = Genred("12*x - 7 + x/4", ["x = Vi(2)"], reduction_op="Sum", axis=1)
    x = rng.random((4, 2))
    assert_close(g(x, backend="reference"), 12 * x - 7 + x / 4, "float64")
    assert_close(g(x), 12 * x - 7 + x / 4, "float64")


# ---- multi-line formulas ------------------------------------------------------------


def test_multi_line_formula_is_the_same_formula(rng):
    aliases = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]
    one = Genred("Exp(-SqDist(x,y)) * b + SqNorm2(x)", aliases, reduction_op="Sum", axis=1)
    many = Genred("Exp(\n    -SqDist(x, y)\n)\n\t* b\r\n  + SqNorm2(x)\n", aliases, reduction_op="Sum", axis=1)
    assert one.program.text() == many.program.text()
    x, y, b = rng.random((5, 3)), rng.random((4, 3)), rng.random((4, 1))
    assert_close(many(x, y, b), one(x, y, b), "float64")


def _caret_column(message, source):
    """The 1-based column the caret points at, under the line showing `source`."""
    lines = message.splitlines()
    idx = [k for k, line in enumerate(lines) if line.endswith(source) and line.strip() == source.strip()]
    assert idx, f"source line {source!r} not shown in:\n{message}"
    k = idx[-1]
    assert k + 1 < len(lines) and lines[k + 1].strip() == "^", message
    prefix = len(lines[k]) - len(source)
    return lines[k + 1].index("^") - prefix + 1


@pytest.mark.parametrize("text, line, column, source", [
    ("SqNorm2(x)\n+ Exp(w)", 2, 7, "+ Exp(w)"),
    ("b +\n  Elem(x, 7)", 2, 3, "  Elem(x, 7)"),
    ("b * Exp(x, y)", 1, 5, "b * Exp(x, y)"),
    ("b*\nFoo(x)", 2, 1, "Foo(x)"),
    ("b +\nb +\n  Pow(x, b)", 3, 10, "  Pow(x, b)"),
    ("b *\n  Grad(x, Exp(x), b)", 2, 11, "  Grad(x, Exp(x), b)"),
])
def test_meaning_errors_report_line_and_column(text, line, column, source):
    aliases = {"x": var(0, 3, 0), "y": var(1, 3, 1), "b": var(2, 1, 1)}
    with pytest.raises(FormulaError) as info:
        parse_formula(text, aliases)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert f"line {line}, column {column}" in msg
    assert _caret_column(msg, source) == column


# ---- syntax errors: SyntaxError, line and column, caret under the fault -------------

SYNTAX_ERRORS = [
    ("Exp(x+)", 1, 7, "Exp(x+)", r"unexpected '\)'"),
    ("x + * y", 1, 5, "x + * y", r"unexpected '\*'"),
    ("Exp(x,,y)", 1, 7, "Exp(x,,y)", r"unexpected ','"),
    ("Exp(x", 1, 6, "Exp(x", r"end of text"),
    ("(x+y", 1, 5, "(x+y", r"end of text"),
    ("Exp((x)", 1, 8, "Exp((x)", r"end of text"),
    ("Exp(x))", 1, 7, "Exp(x))", r"unexpected '\)'"),
    ("x+y)", 1, 4, "x+y)", r"unexpected '\)'"),
    (")x", 1, 1, ")x", r"unexpected '\)'"),
    ("x y", 1, 3, "x y", r"unexpected 'y'"),
    ("Exp x", 1, 5, "Exp x", r"unexpected 'x'"),
    ("x @ y", 1, 3, "x @ y", r"unexpected character '@'"),
    ("x = Vi(3)", 1, 3, "x = Vi(3)", r"unexpected '='"),
    ("x +\n * y", 2, 2, " * y", r"unexpected '\*'"),
    ("Exp(\n x,\n ,y)", 3, 2, " ,y)", r"unexpected ','"),
    ("x +\ny +\n)", 3, 1, ")", r"unexpected '\)'"),
    ("x +\r\n * y", 2, 2, " * y", r"unexpected '\*'"),
    ("x ** ", 1, 6, "x ** ", r"end of text"),
    ("", 1, 1, "", r"end of text"),
]


@pytest.mark.parametrize("text, line, column, source, what", SYNTAX_ERRORS, ids=[repr(t[0]) for t in SYNTAX_ERRORS])
def test_syntax_error_position_and_caret(text, line, column, source, what):
    with pytest.raises(SyntaxError, match=what) as info:
        parse_formula(text, {"x": var(0, 3, 0), "y": var(1, 3, 1)})
    e = info.value
    assert isinstance(e, FormulaSyntaxError)
    msg = str(e)
    assert f"line {line}, column {column}" in msg
    assert (e.lineno, e.offset) == (line, column)
    if source.strip():
        assert _caret_column(msg, source) == column
    else:
        assert msg.splitlines()[-1].strip() == "^"


@pytest.mark.parametrize("text, column, literal", [
    ("0.5*x", 1, "0.5"), ("x*0.5", 3, "0.5"), ("x**2.5", 4, "2.5"), ("1e3*x", 1, "1e3"), (".5*x", 1, ".5"),
    ("Exp(-x*1.)", 8, "1."),
])
def test_decimal_literal_gives_a_helpful_message(text, column, literal):
    with pytest.raises(SyntaxError, match=r"integer literals") as info:
        parse_formula(text, {"x": var(0, 3, 0)})
    msg = str(info.value)
    assert f"line 1, column {column}" in msg
    assert repr(literal) in msg
    assert "IntInv" in msg
    assert _caret_column(msg, text) == column


def test_decimal_literal_on_a_later_line():
    with pytest.raises(SyntaxError) as info:
        parse_formula("x\n+\n0.25", {"x": var(0, 3, 0)})
    msg = str(info.value)
    assert "line 3, column 1" in msg and "integer literals" in msg
    assert _caret_column(msg, "0.25") == 1


def test_syntax_error_through_genred():
    with pytest.raises(SyntaxError, match=r"formula line 1, column 7") as info:
        Genred("Exp(x+)", ["x = Vi(3)"], reduction_op="Sum", axis=1)
    assert _caret_column(str(info.value), "Exp(x+)") == 7


def test_formula2_syntax_error():
    with pytest.raises(SyntaxError, match=r"line 1, column 4: unexpected end of text"):
        Genred("x", ["x = Vi(1)", "y = Vj(2)"], reduction_op="SumSoftMaxWeight", axis=1, formula2="y +")


@pytest.mark.parametrize("formula2", ["y +", "y + w", "Elem(y, 9)"])
def test_formula2_errors_name_formula2(formula2):
    with pytest.raises((SyntaxError, ValueError), match=r"formula2"):
        Genred("x", ["x = Vi(1)", "y = Vj(2)"], reduction_op="SumSoftMaxWeight", axis=1, formula2=formula2)


def test_caret_lines_up_on_a_tab_indented_line():
    with pytest.raises(SyntaxError) as info:
        parse_formula("x +\n\t\t* y", {"x": var(0, 3, 0), "y": var(1, 3, 1)})
    lines = str(info.value).splitlines()
    k = next(i for i, line in enumerate(lines) if line.rstrip().endswith("* y"))
    src, caret = lines[k].expandtabs(8), lines[k + 1].expandtabs(8)
    assert src[caret.index("^")] == "*"


# ---- printer round trip -------------------------------------------------------------

ROUND_TRIP = [
    "Exp(-SqDist(x,y)) * b",
    "x**p + x**-3 - x**2 + x**7",
    "(x|y) * 2 + IntInv(3) - IntCst(-4) * b",
    "x < y",
    "Grad(Exp(-SqDist(x,y)) * b, x, b)",
    "Clamp(x, b, y) + ClampInt(x, -1, 2) + Round(x, 3) + Mod(x, b, y) + IfElse(b, x, y)",
    "Concat(Elem(x, 2), Extract(y, 1, 2)) + ElemT(b, 3, 1) + SumT(b, 3) + ExtractT(Elem(x, 0), 2, 3)",
    "WeightedSqDist(b, x, y) * OneHot(b, 3) + Zero(3)",
    "Vi(0,3) + Vj(1,3) * Pm(3,1)",
    "Exp(x) + Exp(x)",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_printer_round_trip(text):
    aliases = {"x": var(0, 3, 0), "y": var(1, 3, 1), "b": var(2, 1, 1), "p": var(3, 1, 2)}
    node = parse_formula(text, aliases)
    assert parse_formula(to_formula(node), {}) == node
    names = {v.attrs: k for k, v in aliases.items()}
    assert parse_formula(to_formula(node, names), aliases) == node


def test_printer_round_trip_tensor_ops():
    aliases = {"a": var(0, 4, 0), "m": var(1, 4, 1)}
    node = parse_formula("TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(1), Ind(0), Ind(1,0))", aliases)
    assert parse_formula(to_formula(node), {}) == node


# ---- the SSA text printer -----------------------------------------------------------


def _program(formula, aliases=("x = Vi(3)", "y = Vj(3)", "b = Vj(1)"), **kw):
    kw.setdefault("reduction_op", "Sum")
    return Genred(formula, list(aliases), axis=kw.pop("axis", 1), **kw).program


def test_ssa_text_is_stable():
    f = "Exp(-SqDist(x,y)) * b + Sin(Sum(x - y))"
    first, second = _program(f).text(), _program(f).text()
    assert first == second
    assert _program(f).text() == _program(f.replace(" ", "")).text()
    assert "reduce Sum" in first and "F = %" in first


def test_ssa_text_shows_the_aliases_and_arguments():
    text = _program("SqDist(x,y) * b").text()
    assert re.search(r"x=Var\(0,3,i\)", text) and re.search(r"y=Var\(1,3,j\)", text) \
        and re.search(r"b=Var\(2,1,j\)", text)
    assert "SqDist" in text


def test_ssa_text_shows_cse():
    text = _program("Exp(-SqDist(x,y)) * b + Exp(-SqDist(x,y)) * SqDist(x,y)").text()
    ops = [m.group(1) for m in re.finditer(r"%\d+ = (\w+)", text)]
    assert ops.count("SqDist") == 1, text
    assert ops.count("Exp") == 1, text
    assert ops.count("Minus") == 1, text
    assert ops.count("Var") == 3, text


def test_ssa_text_shares_between_formula_and_formula2():
    text = _program("-SqDist(x,y)", reduction_op="SumSoftMaxWeight", formula2="SqDist(x,y) * y").text()
    ops = [m.group(1) for m in re.finditer(r"%\d+ = (\w+)", text)]
    assert ops.count("SqDist") == 1, text
    assert "F = %" in text and "G = %" in text


def test_ssa_text_differs_for_different_formulas():
    assert _program("SqDist(x,y) * b").text() != _program("SqDist(y,x) * b + 1").text()


# ---- long formulas ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["+".join(f"{k % 7 + 1}*x" for k in range(1000)),
                                  "Exp(" * 400 + "x" + ")" * 400, "-" * 1000 + "x"],
                         ids=["sum of 1000 terms", "400 nested calls", "1000 minus signs"])
def test_long_formulas_parse(text):
    node = parse_formula(text, {"x": var(0, 3, 0)})
    assert node.dim == 3


def test_moderately_long_sum(rng):
    text = "+".join(f"{k % 7 + 1}*x" for k in range(100))
    g = Genred(text, ["x = Vi(2)"], reduction_op="Sum", axis=1)
    x = rng.random((3, 2))
    want = sum(k % 7 + 1 for k in range(100)) * x
    assert_close(g(x, backend="reference"), want, "float64")
    assert_close(g(x), want, "float64")


# ---- pykeops's list form of index lists ---------------------------------------------


@pytest.mark.parametrize("listed, ind", [
    ("Kron(a, m, [2, 2], [2,2])", "Kron(a, m, Ind(2,2), Ind(2,2))"),
    ("TensorDot(a, m, [2, 2], [2, 2], [1], [0])", "TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(1), Ind(0))"),
    ("TensorDot(a, m, [2,2], [2,2], [1], [0], [1, 0])", "TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(1), Ind(0), Ind(1,0))"),
    ("TensorDot(r, x, [2], [3], [], [])", "TensorDot(r, x, Ind(2), Ind(3), Ind(), Ind())"),
    ("TensorDot(a, m, [2, 2], [2, 2], [], [], [0, 2, 1, 3])", "TensorDot(a, m, Ind(2,2), Ind(2,2), Ind(), Ind(), Ind(0,2,1,3))"),
])
def test_list_arguments_are_index_lists(listed, ind, rng):
    aliases = {"a": var(0, 4, 0), "m": var(1, 4, 1), "r": var(2, 2, 0), "x": var(3, 3, 1)}
    assert parse_formula(listed, aliases) == parse_formula(ind, aliases)


def test_list_arguments_compute_the_tensor_product(rng):
    """[2, 2] x [2, 2] with nothing contracted and axes (0, 2, 1, 3): the Kronecker product."""
    a, m = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    out = Genred("TensorDot(a, m, [2, 2], [2, 2], [], [], [0, 2, 1, 3])", ["a = Vi(4)", "m = Vj(4)"],
                 "Sum", axis=1)(a, m)
    want = np.stack([np.kron(a[i].reshape(2, 2), m.sum(0).reshape(2, 2)).ravel() for i in range(5)])
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, column", [("Kron(a, m, [2, a], [2, 2])", 16), ("[2, 2] + a", 1)])
def test_bad_list_arguments(text, column):
    with pytest.raises(FormulaError) as info:
        parse_formula(text, {"a": var(0, 4, 0), "m": var(1, 4, 1)})
    assert f"column {column}" in str(info.value)
