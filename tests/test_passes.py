"""The pass pipeline: simplification rules, CSE, verification after each pass."""

import numpy as np
import pytest

from keomlir.backends import reference
from keomlir.ir import Node, VerificationError, make, to_formula, verify_program
from keomlir.numpy import Genred
from keomlir.passes import PassManager

ALIASES = ["x = Vi(3)", "y = Vj(3)", "s = Vi(1)"]


def optimized(formula, aliases=ALIASES):
    g = Genred(formula, aliases, axis=1)
    return to_formula(g.program.formula, dict(g.program.names))


@pytest.mark.parametrize("formula,expected", [
    ("x * 1", "x"),
    ("1 * x", "x"),
    ("x + 0", "x"),
    ("0 + x - 0", "x"),
    ("Exp(Zero(1)) * x", "x"),
    ("2 * 3 * x", "Mult(IntCst(6), x)"),
    ("2 * (3 * x)", "Mult(IntCst(6), x)"),
    ("x * 2", "Mult(IntCst(2), x)"),
    ("-(-x)", "x"),
    ("x * -1", "Minus(x)"),
    ("Sqrt(Square(x - y))", "Abs(Subtract(x, y))"),
    ("Abs(Exp(x))", "Exp(x)"),
    ("Pow(x, 1)", "x"),
    ("Pow(x, 2)", "Square(x)"),
    ("Pow(x, -1)", "Inv(x)"),
    ("x / 1", "x"),
    ("Square(IntCst(3)) + 2 - 1", "IntCst(10)"),
    ("(7 - 2) * s", "Mult(IntCst(5), s)"),
    ("Sum(s)", "s"),
    ("Extract(x, 0, 3)", "x"),
    # signs and powers of two onto the factor without j (once a row, not once a pair)
    ("-(s * SqDist(x,y))", "Mult(Minus(s), SqDist(x, y))"),
    ("(-SqDist(x,y)) * s", "Mult(SqDist(x, y), Minus(s))"),
    ("2 * -((s * y) * Exp(-SqDist(x,y)))", "Mult(Mult(Mult(IntCst(-2), s), y), Exp(Minus(SqDist(x, y))))"),
    ("4 * (y * x)", "Mult(y, Mult(IntCst(4), x))"),
    ("3 * (s * y)", "Mult(IntCst(3), Mult(s, y))"),  # (3 s y rounds otherwise than 3 (s y))
    ("-(x * s)", "Minus(Mult(x, s))"),  # (no j: nothing to gain)
    ("-(y * SqDist(x,y))", "Minus(Mult(y, SqDist(x, y)))"),  # (no factor without j)
])
def test_simplify(formula, expected):
    assert optimized(formula) == expected


@pytest.mark.parametrize("formula", ["0 * x", "x - x", "Exp(Log(s))", "Square(Sqrt(s))", "x / x"])
def test_simplify_keeps_ieee_semantics(formula):
    # each of these changes the value somewhere (inf, NaN, negative s): not rewritten
    g = Genred(formula, ALIASES, axis=1)
    assert len(g.program.formula.walk()) == len(g.reduction.parsed.formula.walk())


def test_scalar_times_zero_vector_keeps_its_dimension():
    g = Genred("s + Zero(3)", ALIASES, axis=1)
    assert g.program.formula.dim == 3


def test_cse_shares_repeated_subexpressions():
    g = Genred("Exp(-SqDist(x,y)) * s + Exp(-SqDist(x,y))", ALIASES, axis=1)
    parsed = len(g.reduction.parsed.formula.walk())
    shared = len(g.program.formula.walk())
    assert shared < parsed
    text = g.program.text()
    assert text.count("SqDist(") == 1 and text.count("Exp(") == 1


@pytest.mark.parametrize("formula", [
    "Exp(-SqDist(x,y) * 1 + 0) * (2 * 3) + Sqrt(Square(x - y))",
    "Pow(x - y, 2) + Pow(x, 1) * 1 - (-(-y))",
    "IfElse(s - 1, x * 1, y + 0) + Exp(Zero(1)) * x",
    "2 * -(s * Exp(-SqDist(x,y))) * (x - y) + (-SqDist(x,y)) * s * 4",
])
def test_passes_preserve_meaning(formula):
    r = np.random.default_rng(0)
    args = [r.normal(size=(6, 3)), r.normal(size=(7, 3)), r.normal(size=(6, 1))]
    g = Genred(formula, ALIASES, axis=1)
    before = reference.evaluate(g.reduction.parsed, args, 6, 7)[0]
    after = reference.evaluate(g.program, args, 6, 7)[0]
    np.testing.assert_allclose(after, before, rtol=1e-13)
    np.testing.assert_allclose(g(*args), before, rtol=1e-12)


def test_pass_manager_reports_each_stage_and_verifies():
    g = Genred("x * 1 + x * 1", ALIASES, axis=1)
    seen = []
    PassManager(["simplify", "cse"], on_stage=lambda name, prog, dt: seen.append((name, prog.text()))).run(
        g.reduction.parsed)
    assert [name for name, _ in seen] == ["simplify", "cse"]
    assert "Mult" not in seen[0][1]


def test_unknown_pass_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown pass fold.*valid passes: autodiff, simplify, cse"):
        PassManager(["fold"])


def test_genred_runs_without_passes():
    r = np.random.default_rng(1)
    x, y, s = r.normal(size=(5, 3)), r.normal(size=(4, 3)), r.normal(size=(5, 1))
    plain = Genred("x * 1 + 0", ALIASES, axis=1, passes=())
    assert "IntCst" in plain.program.text()
    np.testing.assert_allclose(plain(x, y, s), Genred("x", ALIASES, axis=1)(x, y, s))


def test_verifier_catches_a_wrong_dimension():
    x = make("Var", (), (0, 3, 0))
    bad = Node(make("Exp", (x,)).op, (x,), (), 2, x.cat)  # Exp of a 3-vector claiming dim 2
    g = Genred("x", ALIASES, axis=1)
    with pytest.raises(VerificationError, match="Exp: recorded dimension 2, operands give 3"):
        verify_program(g.program.with_formulas(bad, None))
