"""Passes from outside the package (options, `register_pass`, `--load-pass`), run verified like the
built-in ones, and what the PassManager tells of them: statistics, the stages that changed the
program, and `--bisect-limit` (keomlir/passes/manager.py, keomlir/cli.py)."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from keomlir.backends import reference
from keomlir.compile import CompiledReduction
from keomlir.explain import explain
from keomlir.ir import Node, VerificationError, make
from keomlir.numpy import Genred
from keomlir.passes import (PASSES, NodePass, Pass, PassManager, load_pass_file, parse_pipeline,
                            register_pass)
from keomlir.passes.manager import count_nodes

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "passes" / "reciprocal.py"
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]


class UnrollPow(NodePass):
    """Pow(a, n) for 2 < n <= max as a * Pow(a, n - 1) (a test pass with an integer option)."""

    name = "test-unroll-pow"
    options = {"max": 3, "verbose": False}

    def rule(self, node):
        if node.name == "Pow" and 2 < node.attrs[0] <= self.max:
            a = node.args[0]
            return make("Mult", (a, make("Pow", (a,), (node.attrs[0] - 1,))))
        return None


class WrongSqrt(NodePass):
    """A deliberately wrong rewrite, Sqrt(a) -> a, for bisection to find."""

    name = "test-wrong-sqrt"

    def rule(self, node):
        return node.args[0] if node.name == "Sqrt" else None


@pytest.fixture(autouse=True, scope="module")
def registered():
    """The test passes registered for this module's tests only (the registry is the process's)."""
    before = dict(PASSES)
    for cls in (UnrollPow, WrongSqrt):
        register_pass(cls)
    yield
    PASSES.clear()
    PASSES.update(before)


def gauss_oracle(args, power=1):
    x, y, b = (np.asarray(a, np.float64) for a in args)
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return (np.exp(-d ** power)[:, :, None] * b[None, :, :]).sum(1)


def data(m=6, n=5):
    r = np.random.default_rng(3)
    return [r.normal(size=(m, 3)), r.normal(size=(n, 3)), r.normal(size=(n, 1))]


# ---- pipelines and options ----------------------------------------------------------------------

def test_pipeline_text_with_options():
    assert parse_pipeline(" simplify, test-unroll-pow{max=5, verbose=on},cse") == [
        ("simplify", {}), ("test-unroll-pow", {"max": "5", "verbose": "on"}), ("cse", {})]
    manager = PassManager("simplify,test-unroll-pow{max=5,verbose=on}")
    unroll = manager.passes[1]
    assert (unroll.max, unroll.verbose, unroll.label) == (5, True, "test-unroll-pow{max=5,verbose=on}")
    assert PassManager([("test-unroll-pow", {"max": 4})]).passes[0].max == 4


@pytest.mark.parametrize("pipeline,message", [
    ("test-unroll-pow{maximum=5}", r"pass test-unroll-pow: unknown option maximum; its options: max, verbose"),
    ("test-unroll-pow{max=five}", r"option max='five' is not an integer"),
    ("test-unroll-pow{verbose=maybe}", r"option verbose='maybe' is not a bool \(on/off\)"),
    ("test-unroll-pow{max=5", r"a '\{' is not closed"),
    ("simplify{level=2}", r"pass simplify: unknown option level; its options: none"),
    ("simplfy", r"unknown pass simplfy; valid passes: autodiff, simplify, cse"),
])
def test_pipeline_errors_name_what_is_wrong(pipeline, message):
    with pytest.raises(ValueError, match=message):
        PassManager(pipeline)


def test_a_registered_pass_runs_in_genred_and_keeps_the_values():
    g = Genred("Exp(-Pow(SqDist(x,y), 3)) * b", ALIASES, axis=1,
               passes="autodiff,simplify,test-unroll-pow{max=3},simplify,cse")
    text = g.program.text()
    assert "Pow" not in text and "Square" in text
    args = data()
    np.testing.assert_allclose(g(*args), gauss_oracle(args, 3), rtol=1e-10)


def test_a_name_is_registered_once():
    class Other(Pass):
        name = "cse"

    with pytest.raises(ValueError, match="a pass named 'cse' exists"):
        register_pass(Other)
    assert PASSES["cse"].__module__ == "keomlir.passes.cse"
    with pytest.raises(ValueError, match="must be a name"):
        register_pass(type("Bad", (Pass,), {"name": "a,b"}))


def test_the_example_pass_loads_from_its_file_and_keeps_the_values():
    assert load_pass_file(EXAMPLE) == ["reciprocal"]
    assert load_pass_file(EXAMPLE) == ["reciprocal"]  # (the same file again replaces it)
    aliases = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "s = Pm(1)"]
    g = Genred("Exp(-SqDist(x,y) / (s*s)) * b", aliases, axis=1, passes="autodiff,simplify,reciprocal,cse")
    assert "Divide" not in g.program.text() and "Inv" in g.program.text()
    args = data() + [np.array([1.5])]
    np.testing.assert_allclose(g(*args), gauss_oracle([a / 1.5 for a in args[:2]] + [args[2]]), rtol=1e-12)
    with pytest.raises(ValueError, match="invariant='i'; expected one of j, ij"):
        PassManager("reciprocal{invariant=i}")


# ---- verification -----------------------------------------------------------------------------

class Grow(Pass):
    """Wrong: F of dimension 3 becomes F of dimension 6."""

    name = "test-grow"

    def run(self, program):
        return program.with_formulas(make("Concat", (program.formula, program.formula)), program.formula2)


class Lie(Pass):
    """Wrong: F's last node claims a dimension it does not have."""

    name = "test-lie"

    def run(self, program):
        f = program.formula
        return program.with_formulas(Node(f.op, f.args, f.attrs, f.dim + 1, f.cat), program.formula2)


def test_a_user_pass_is_verified_like_the_built_in_ones():
    for cls in (Grow, Lie):
        register_pass(cls)
    parsed = CompiledReduction("x * y", ALIASES, axis=1, passes=()).parsed
    with pytest.raises(VerificationError, match="pass test-grow changed the dimension of F from 3 to 6"):
        PassManager("test-grow").run(parsed)
    with pytest.raises(VerificationError, match="IR after pass test-lie is invalid: Mult: recorded dimension 4, "
                                                "operands give 3"):
        PassManager("test-lie").run(parsed)
    assert PassManager("test-lie", verify=False).run(parsed).formula.dim == 4  # to study broken IR


# ---- statistics, changes, bisection ---------------------------------------------------------

FORMULA = "x * 1 + (2 + 3) * Exp(-SqDist(x,y)) + Exp(-SqDist(x,y))"


def test_statistics_count_nodes_rewrites_merges_and_folds():
    parsed = CompiledReduction(FORMULA, ALIASES, axis=1, passes=()).parsed
    manager = PassManager("simplify,cse,simplify")
    program = manager.run(parsed)
    simplify, cse, again = manager.statistics
    assert simplify.rewrites == {"Mult -> operand": 1, "Add -> IntCst": 1}
    assert simplify.counters == {"constants folded": 1}
    assert cse.counters == {"CSE merges": 3}  # SqDist, Minus, Exp
    assert cse.rewrites == {"merge SqDist": 1, "merge Minus": 1, "merge Exp": 1}
    assert (simplify.nodes_before, simplify.nodes_after, cse.nodes_after) == (16, 12, 9)
    assert cse.nodes_after == count_nodes(program) == len([ln for ln in program.text().splitlines() if " = %" not in
                                                           ln and "%" in ln])
    assert (simplify.changed, cse.changed, again.changed) == (True, True, False)
    assert "simplify: nodes 16 -> 12, 1 constants folded, 2 rewrites" in simplify.text()


def test_bisect_limit_makes_only_the_first_rewrites():
    parsed = CompiledReduction(FORMULA, ALIASES, axis=1, passes=()).parsed
    full = PassManager("simplify,cse").run(parsed)
    for limit in range(6):
        lines = []
        program = PassManager("simplify,cse", bisect_limit=limit, on_bisect=lines.append).run(parsed)
        assert [int(re.search(r"\((\d+)\)", ln).group(1)) for ln in lines] == list(range(1, 6))
        assert [ln.startswith("BISECT: applying") for ln in lines] == [k < limit for k in range(5)]
        assert lines[0].startswith("BISECT: applying rewrite (1) simplify: ") or limit == 0
        if limit == 0:
            assert program.text() == parsed.text()
        if limit == 5:
            assert program.text() == full.text()


def test_bisection_finds_an_injected_wrong_rewrite():
    red = CompiledReduction("Sqrt(SqDist(x,y)) * 1 + Exp(-Sqrt(SqDist(x,y)) - 0) * b", ALIASES, axis=1,
                            passes=())
    args = data()
    x, y, b = args
    d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    oracle = (d[:, :, None] + np.exp(-d)[:, :, None] * b[None]).sum(1)
    pipeline = "simplify,test-wrong-sqrt,cse"

    def good(limit):
        lines = []
        program = PassManager(pipeline, bisect_limit=limit, on_bisect=lines.append).run(red.parsed)
        return np.allclose(reference.evaluate(program, args, 6, 5)[0], oracle), lines

    total = len(good(0)[1])
    low, high = 0, total  # good(low), not good(high)
    assert good(low)[0] and not good(high)[0]
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if good(mid)[0] else (low, mid)
    culprit = good(high)[1][high - 1]
    assert culprit.startswith(f"BISECT: applying rewrite ({high}) test-wrong-sqrt: Sqrt -> operand on Sqrt(")


def test_explain_marks_the_stages_that_changed():
    ex = explain("x * 1 + y", ALIASES, passes="autodiff,simplify,cse")
    assert [(s.name, s.changed) for s in ex.stages] == [("parse", True), ("autodiff", False), ("simplify", True),
                                                       ("cse", False)]
    assert "IR after autodiff" not in ex.text(changed_only=True) and "IR after simplify" in ex.text(True)
    assert ex.to_dict()["statistics"][1]["rewrites"] == {"Mult -> operand": 1}


# ---- the command -----------------------------------------------------------------------------

def keomlir_cmd(*args, input=None, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "keomlir", *args], cwd=cwd, env=env, input=input,
                          capture_output=True, text=True, timeout=120)


def test_opt_with_a_loaded_pass_statistics_changes_and_bisection():
    kir = explain("Exp(-SqDist(x,y) / (s*s)) * b", ALIASES + ["s = Pm(1)"], passes="").outputs["ir"]
    r = keomlir_cmd("opt", "-", "--load-pass", str(EXAMPLE), "--passes", "simplify,reciprocal{invariant=ij},cse",
                    "--print-ir-after-change", "--pass-statistics", "--bisect-limit", "1", input=kir)
    assert r.returncode == 0, r.stderr
    headers = re.findall(r"^// ----- IR after (\S+) ----- //$", r.stdout, re.M)
    assert headers == ["input", "reciprocal{invariant=ij}"]
    assert "Inv(%5)" in r.stdout and "schedule:" in r.stdout
    assert "BISECT: applying rewrite (1) reciprocal{invariant=ij}: a / b -> a * Inv(b) on Divide(" in r.stderr
    assert "reciprocal{invariant=ij}: nodes 10 -> 11, 1 rewrite\n       1  a / b -> a * Inv(b)" in r.stderr


def test_no_verify_lets_broken_ir_through(tmp_path):
    plugin = tmp_path / "lie.py"
    plugin.write_text("from keomlir.ir import Node\nfrom keomlir.passes import Pass, register_pass\n\n\n"
                      "@register_pass\nclass Lie(Pass):\n    name = 'lie'\n\n    def run(self, program):\n"
                      "        f = program.formula\n"
                      "        return program.with_formulas(Node(f.op, f.args, f.attrs, 2, f.cat), None)\n")
    base = ["ir", "x - y", "-a", "x = Vi(3)", "-a", "y = Vj(3)", "--load-pass", str(plugin), "--passes", "lie"]
    r = keomlir_cmd(*base)
    assert r.returncode == 2 and "keomlir: error: the IR after pass lie is invalid: Subtract: recorded " \
                                 "dimension 2, operands give 3" in r.stderr
    r = keomlir_cmd(*base, "--no-verify")
    assert r.returncode == 0, r.stderr
    assert re.search(r"%2 = Subtract\(%0, %1\) +: dim 2, ij", r.stdout)


def test_opt_reads_a_file_and_names_a_missing_one(tmp_path):
    path = tmp_path / "k.kir"
    path.write_text("reduce Sum over j  args(x=Var(0,3,i))\n  %0 = Var[x: pos=0, i]\n  %1 = Exp(%0)\n  F = %1\n")
    r = keomlir_cmd("opt", str(path), "--emit", "llvm", "--dtype", "float64")
    assert r.returncode == 0, r.stderr
    assert "double" in r.stdout and 'define void @"keomlir_kernel"' in r.stdout
    r = keomlir_cmd("opt", str(tmp_path / "none.kir"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_ir_takes_the_same_pipeline_options():
    r = keomlir_cmd("ir", "x * 1 + y", "-a", "x = Vi(3)", "-a", "y = Vj(3)", "--print-ir-after-change",
                    "--pass-statistics", "--bisect-limit", "0")
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^// ----- IR after (\S+) ----- //$", r.stdout, re.M) == ["parse"]  # nothing applied
    assert r.stderr.splitlines()[:2] == ["BISECT: NOT applying rewrite (1) simplify: Mult -> operand on "
                                         "Mult(x, IntCst(1))", "// ----- pass statistics ----- //"]
    assert "simplify: nodes 5 -> 5, 0 rewrites (unchanged)" in r.stderr
