"""The textual IR read back (keomlir/ir/text.py, keomlir/schedule/kir.py): what `keomlir ir` prints
parses into the same program and schedule, prints back identically, and compiles to the same kernel."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keomlir.backends import cpu
from keomlir.compile import CompiledReduction
from keomlir.explain import explain, opt
from keomlir.ir import OPS, REDUCTIONS, DimensionError, Program, make, verify_program
from keomlir.ir.text import IRSyntaxError, parse_program
from keomlir.schedule import schedule, target
from keomlir.schedule.kir import kir_text, parse_kir

from conftest import examples

ALIASES = ["x = Vi(3)", "y = Vj(3)", "s = Vi(1)", "t = Vj(1)", "z = Vi(2)", "w = Vj(2)", "m = Vi(9)",
           "k = Pm(7)"]
# one formula using each registered operation (the test below fails when an operation is added
# without one)
OPERATIONS = {
    "Var": "x", "IntCst": "IntCst(3) * x", "IntInv": "IntInv(2) * x", "Zero": "Zero(3) + x",
    "Add": "x + y", "Subtract": "x - y", "Mult": "x * y", "Divide": "x / y", "Minus": "-x",
    "Equal": "Equal(x, y)", "NotEqual": "NotEqual(x, y)", "LessThan": "LessThan(x, y)",
    "GreaterThan": "GreaterThan(x, y)", "LessOrEqual": "LessOrEqual(x, y)", "GreaterOrEqual": "GreaterOrEqual(x, y)",
    **{name: f"{name}(x - y)" for name in ("Exp", "Log", "XLogX", "Sin", "SinXDivX", "Asin", "Cos", "Acos", "Atan",
                                            "Inv", "Square", "Sqrt", "Rsqrt", "Abs", "Floor", "Sign", "Step", "ReLU",
                                            "Sum", "Max", "Min", "ArgMax", "ArgMin", "SqNorm2", "Norm2",
                                            "Normalize")},
    "Atan2": "Atan2(x, y)", "Powf": "Powf(x, y)", "Clamp": "Clamp(x, s, t)", "IfElse": "IfElse(x, y, s)",
    "Mod": "Mod(x, y, s)", "ClampInt": "ClampInt(x, -1, 2)", "Round": "Round(x, 2)", "Pow": "Pow(x, 3)",
    "Scalprod": "(x | y)", "SqDist": "SqDist(x, y)", "WeightedSqNorm": "WeightedSqNorm(s, x)",
    "WeightedSqDist": "WeightedSqDist(s, x, y)", "SumT": "SumT(s, 3)", "Elem": "Elem(x, 1)",
    "ElemT": "ElemT(s, 3, 1)", "Extract": "Extract(x, 1, 2)", "ExtractT": "ExtractT(x, 1, 5)",
    "Concat": "Concat(x, y)", "OneHot": "OneHot(s, 4)", "Factorize": "Factorize(Exp(x) * y, Exp(x))",
    "AutoFactorize": "AutoFactorize(x * y)", "MatVecMult": "MatVecMult(m, x)", "VecMatMult": "VecMatMult(x, m)",
    "TensorProd": "TensorProd(x, y)", "Kron": "Kron(x, y, Ind(3), Ind(3))",
    "TensorDot": "TensorDot(m, y, Ind(3, 3), Ind(3), Ind(1), Ind(0), Ind(0))",
    **{name: f"{name}(z)" for name in ("ComplexReal", "ComplexImag", "Conj", "ComplexExp", "ComplexAbs",
                                        "ComplexSquareAbs", "ComplexAngle", "ComplexSum")},
    "Real2Complex": "Real2Complex(x)", "Imag2Complex": "Imag2Complex(x)", "ComplexExp1j": "ComplexExp1j(x)",
    "ComplexSumT": "ComplexSumT(z, 6)", "ComplexMult": "ComplexMult(z, w)", "ComplexDivide": "ComplexDivide(z, w)",
    "ComplexScal": "ComplexScal(z, w)", "ComplexRealScal": "ComplexRealScal(s, w)",
    "Grad": "Grad(Exp(-SqDist(x, y)), x, s)", "Diff": "Diff(SqDist(x, y), x, y)",
    "GradMatrix": "GradMatrix(x * s, x)", "Divergence": "Divergence(x * SqDist(x, y), x)",
    "Laplacian": "Laplacian(SqDist(x, y), x)", "TraceOperator": "TraceOperator(x * Sum(y), x)",
    "BSpline": "BSpline(k, s, 2)", "BSplineGrad": "BSplineGrad(k, s, BSpline(k, s, 2), 2)",
    "SoftDTW_SqDist": "SoftDTW_SqDist(x, y, t)", "SoftDTWGrad": "SoftDTWGrad(x, y, t)",
    "DifferenceMatrix": "DifferenceMatrix(x, y)",
}


def round_trip(program):
    """Print, parse, print: the same program and the same text."""
    text = program.text()
    parsed = parse_program(text)
    assert parsed == program
    assert parsed.text() == text
    return parsed


def test_every_operation_has_a_formula_here():
    assert set(OPERATIONS) == set(OPS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_round_trips(name):
    red = CompiledReduction(OPERATIONS[name], ALIASES, axis=1, passes=())
    assert f"= {name}" in red.parsed.text()
    round_trip(red.parsed)
    round_trip(red.program.__class__(*[getattr(red.parsed, f) for f in ("reduction", "formula", "formula2",
                                                                      "opt_arg", "arguments")]))  # no names


# (reduction, K, formula2) of every reduction
REDUCTION_CASES = {"Sum": (None, None), "LogSumExp": (None, None), "SumSoftMaxWeight": (None, "y * t"),
                   "Min": (None, None), "Max": (None, None), "ArgMin": (None, None), "ArgMax": (None, None),
                   "Min_ArgMin": (None, None), "Max_ArgMax": (None, None), "KMin": (3, None),
                   "ArgKMin": (3, None), "KMin_ArgKMin": (3, None)}


def test_every_reduction_has_a_case_here():
    assert set(REDUCTION_CASES) == set(REDUCTIONS)


@pytest.mark.parametrize("reduction", sorted(REDUCTION_CASES))
def test_every_reduction_round_trips_with_its_schedule(reduction):
    k, g = REDUCTION_CASES[reduction]
    formula = "SqDist(x, y) * s" if g is None or reduction != "LogSumExp" else "SqDist(x, y)"
    red = CompiledReduction(formula, ALIASES[:4], reduction, 1, k, g)
    round_trip(red.program)
    for name in ("host", "sm_80"):
        sched = schedule(red.program, target(name))
        text = kir_text(red.program, sched, describe_target=name != "host")
        kir = parse_kir(text)
        assert (kir.program, kir.schedule, kir.decisions) == (red.program, sched, ())
        assert kir.text() == text


# ---- random programs ---------------------------------------------------------------------------

LEAF_DIMS = (1, 2, 3, 4)


@st.composite
def programs(draw):
    """A random valid program over random arguments: operations drawn from the whole registry,
    operands from the nodes built so far (so the DAG shares nodes), a random reduction."""
    n_args = draw(st.integers(1, 4))
    arguments = tuple((pos, draw(st.sampled_from(LEAF_DIMS)), draw(st.integers(0, 2))) for pos in range(n_args))
    pool = [make("Var", (), a) for a in arguments]
    pool += [make("IntCst", (), (draw(st.integers(-3, 3)),)), make("Zero", (), (draw(st.sampled_from(LEAF_DIMS)),))]
    names = tuple((a, f"v{a[0]}") for a in arguments if draw(st.booleans()))
    ops = sorted(n for n in OPS if n not in ("Var",))
    for _ in range(draw(st.integers(1, 30))):  # (many a draw fails to type-check: skipped)
        op = OPS[draw(st.sampled_from(ops))]
        args, attrs = [], []
        for kind in op.kinds:
            if kind == "f":  # recent nodes more often: deeper DAGs
                args.append(draw(st.sampled_from(pool[-4:])) if draw(st.booleans()) else draw(st.sampled_from(pool)))
            elif kind == "i":
                attrs.append(draw(st.integers(-1, 4)))
            elif kind == "n":
                attrs.append(tuple(draw(st.lists(st.integers(0, 3), max_size=2))))
            else:
                attrs.append(pool[draw(st.integers(0, n_args - 1))])
        try:
            pool.append(make(op.name, args, attrs))
        except (DimensionError, ValueError):
            continue
    f = draw(st.sampled_from(pool[-3:]))
    reduction = draw(st.sampled_from(sorted(REDUCTIONS)))
    g = draw(st.sampled_from(pool)) if reduction == "SumSoftMaxWeight" else None
    if reduction in ("LogSumExp", "SumSoftMaxWeight") or REDUCTIONS[reduction].needs_k:
        f = make("Sum", (f,)) if f.dim > 1 else f
    k = draw(st.integers(1, 3)) if REDUCTIONS[reduction].needs_k else None
    return Program(reduction, f, g, k, arguments, names)


@settings(max_examples=examples(40, 500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_round_trip(program):
    verify_program(program)
    round_trip(program)


# ---- compiled: the same kernel ----------------------------------------------------------------

@pytest.mark.parametrize("formula,aliases", [
    ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]),
    ("Exp(-SqDist(x,y)) * b", ["x = Vi(20)", "y = Vj(20)", "b = Vj(2)"]),  # a contraction: wide nodes named
])
def test_a_parsed_program_compiles_to_the_same_kernel(formula, aliases):
    red = CompiledReduction(formula, aliases, axis=1)
    kernel = red.kernel("float32")
    text = explain(formula, aliases).outputs["ir"]  # `keomlir ir`'s output: program and host schedule
    kir = parse_kir(text)
    assert kir.text() == text
    assert cpu.kernel_cache_key(kir.program, kir.schedule, "float32") == kernel.stats["key"]
    parsed = CompiledReduction.from_program(kir.program, schedule=kir.decisions)
    assert parsed.program == red.program
    r = np.random.default_rng(0)
    args = [r.normal(size=(7 if cat == 0 else 5, dim)).astype("float32") for _, dim, cat in red.arguments]
    x, y, b = (a.astype(np.float64) for a in args)
    oracle = (np.exp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))[:, :, None] * b[None, :, :]).sum(1)
    np.testing.assert_allclose(parsed.run_numpy(args, "CPU")[0], oracle, rtol=2e-5, atol=1e-6)


def test_opt_emits_the_same_assembly_as_ir():
    gauss = ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"])
    ex = explain(*gauss, emit=("ir", "asm"))
    assert opt(ex.outputs["ir"], emit="asm").outputs["asm"] == ex.outputs["asm"]


# ---- the schedule block ----------------------------------------------------------------------

GAUSS_TEXT = None


def gauss_text(**kw):
    return explain("Exp(-SqDist(x,y)) * b + Exp(-SqDist(x,y))", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"],
                   passes="", **kw).outputs["ir"]


def test_the_schedule_keeps_its_decisions_through_passes():
    text = gauss_text(schedule="sum_block=1024")
    kir = parse_kir(text)
    assert kir.decisions == (("sum_block", 1024),)
    out = opt(text, passes="simplify,cse")
    assert out.schedule.sum_block == 1024
    assert out.statistics[1].counters["CSE merges"] == 3
    assert parse_kir(out.outputs["ir"]).program == out.program


def test_a_schedule_block_may_name_some_fields_only():
    program_text = gauss_text().split("schedule:")[0]
    kir = parse_kir(program_text + "schedule:\n  dtype = float64\n  rows = 2\n")
    assert (kir.schedule.dtype, kir.schedule.rows, kir.decisions) == ("float64", 2, (("rows", 2),))
    assert kir.schedule.vector_bits == schedule(kir.program, target("host"), dtype="float64").vector_bits


@pytest.mark.parametrize("edit,message", [
    (("wide_nodes = none", "wide_nodes = %2"), r"line \d+, column 16: wide_nodes = %2 does not follow"),
    (("rows = ", "rowz = "), r"unknown schedule field 'rowz'"),
    (("dtype = float32", "dtype = float8"), r"dtype: expected one of float32"),
    (("sum_block = 512", "sum_block = 100"), r"sum_block='100' is not valid: expected at least 64.*multiple of 64"),
    (("target = host", "target = sm_80"), r"is a field of CPU targets; sm_80 is a GPU target"),
])
def test_a_bad_schedule_is_an_error_on_its_line(edit, message):
    text = gauss_text()
    assert edit[0] in text
    with pytest.raises(IRSyntaxError, match=message):
        parse_kir(text.replace(edit[0], edit[1], 1))


# ---- parse errors -------------------------------------------------------------------------------

HEAD = "reduce Sum over j  args(x=Var(0,3,i), y=Var(1,3,j))\n"


@pytest.mark.parametrize("body,line,column,message", [
    ("  %0 = Var[x: pos=0, i]\n  %1 = Exp(%0, %0)\n  F = %1", 3, 8, "Exp expects 1 arguments, got 2"),
    ("  %0 = Var[x: pos=0, i]\n  %1 = Exp(%2)\n  F = %1", 3, 12, "%2 is not defined on an earlier line"),
    ("  %0 = Var[x: pos=0, i]\n  %1 = Exp(%0) : dim 1, i\n  F = %1", 3, 18, "Exp of these operands has dim 3, i"),
    ("  %0 = Var[y: pos=0, i]\n  F = %0", 2, 12, "named 'x' in the header, not 'y'"),
    ("  %0 = Var[x: pos=0, j]\n  F = %0", 2, 22, "indexed by i in the header, not j"),
    ("  %0 = Var[x: pos=0, i]\n  %1 = Elem[7](%0)\n  F = %1", 3, 8, "out of range"),
    ("  %0 = Var[x: pos=0, i]\n  %1 = Frob(%0)\n  F = %1", 3, 8, "unknown operation 'Frob'"),
    ("  %0 = Var[x: pos=0, i]\n  %1 = Exp(%0) ?\n  F = %1", 3, 16, "unexpected character '?'"),
    ("  %0 = Var[x: pos=0, i]\n", 2, 24, "no root"),
    ("  %0 = Var[x: pos=0, i]\n  F = %0\n" + HEAD, 4, 1, "a second program"),
])
def test_parse_errors_give_line_column_and_caret(body, line, column, message):
    with pytest.raises(IRSyntaxError) as info:
        parse_kir(HEAD + body)
    text = str(info.value)
    assert text.startswith(f"IR line {line}, column {column}: ") and message in text
    source, caret = text.splitlines()[1:3]
    assert caret.index("^") == column - 1 + 4  # under the column (both lines indented by 4)
    assert source[4:] == (HEAD + body).splitlines()[line - 1]


def test_header_errors():
    with pytest.raises(IRSyntaxError, match="unknown reduction 'Summ'"):
        parse_program("reduce Summ over j  args(x=Var(0,3,i))\n  %0 = Var[x: pos=0, i]\n  F = %0")
    with pytest.raises(IRSyntaxError, match="arguments are listed by position"):
        parse_program("reduce Sum over j  args(x=Var(1,3,i))\n  %0 = Var[x: pos=1, i]\n  F = %0")
    with pytest.raises(IRSyntaxError, match="expected the program's header first"):
        parse_program("  F = %0")


def test_comments_and_hand_numbering_are_read():
    text = ("// a hand-written kernel\n" + HEAD + "  %7 = Var[pos=0, i]   // x, unlabelled\n"
            "  %3 = Var[y: pos=1, j]\n  %9 = SqDist(%7, %3)\n  F = %9\n")
    program = parse_program(text)
    assert program.text().splitlines()[-2].split() == ["%2", "=", "SqDist(%0,", "%1)", ":", "dim", "1,", "ij"]


@pytest.mark.parametrize("options", [
    {"sizes": (1000, 1000)},
    {"target": "sm_90", "sizes": (100, 100000)},
    {"target": "skylake-avx512", "schedule": "rows=8,sum_block=1024"},
    {"dtype": "float64", "schedule": "strategy=lanes"},
])
def test_keomlir_irs_output_with_options_reads_back(options):
    text = explain("Exp(-SqDist(x,y)) * b", ["x = Vi(20)", "y = Vj(20)", "b = Vj(1)"], **options).outputs["ir"]
    kir = parse_kir(text)
    assert kir.text() == text
    assert kir.describe_target == ("target" in options)


def test_from_program_needs_every_argument_named_or_used():
    x = make("Var", (), (0, 3, 0))
    program = Program("Sum", make("Exp", (x,)), None, None, ((0, 3, 0), (1, 2, 1)), (((0, 3, 0), "x"),))
    with pytest.raises(ValueError, match=r"name every argument the formulas do not use"):
        CompiledReduction.from_program(program)
    named = Program("Sum", make("Exp", (x,)), None, None, ((0, 3, 0), (1, 2, 1)),
                    (((0, 3, 0), "x"), ((1, 2, 1), "y")))
    assert CompiledReduction.from_program(named).program == named
