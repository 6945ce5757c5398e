"""The compiler researcher's workbench: `keomlir reduce`, `keomlir bench` (and the FLOP count
and peak behind it), and the page of `keomlir explain --html` (its browser test is in
test_workbench_browser.py)."""

import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from keomlir import cli, explain
from keomlir.compile import CompiledReduction
from keomlir.ir import make
from keomlir.passes import DEFAULT_PIPELINE, PASSES, register_pass
from keomlir.passes.manager import NodePass
from keomlir.schedule.targets import NAMED, Target, _clock_hz, host
from keomlir.backends.llvm import flops
from keomlir.workbench import bench, page, reduce as reducer

ROOT = pathlib.Path(__file__).resolve().parents[1]
GAUSS = ["Exp(-SqDist(x,y)) * b", "-a", "x = Vi(3)", "-a", "y = Vj(3)", "-a", "b = Vj(1)"]
BAD = "test_bad_square"
# a formula of 23 nodes, one subtree of which the bad rule below miscompiles
BIG = "Exp(-SqDist(x,y)) * b + Square(Sum(x*y) - p) * Log(IntCst(1) + Square(b)) + Sin(x|y) * Cos(p)"
BIG_ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "p = Pm(1)"]


class BadSquare(NodePass):
    """A wrong rewrite: (a - b)^2 -> a^2 - b^2."""

    name = BAD

    def rule(self, node):
        if node.name == "Square" and node.args[0].name == "Subtract":
            a, b = node.args[0].args
            return make("Subtract", (make("Square", (a,)), make("Square", (b,))))
        return None


@pytest.fixture
def bad_pass():
    register_pass(BadSquare)
    yield ",".join(DEFAULT_PIPELINE[:-1] + (BAD,) + DEFAULT_PIPELINE[-1:])
    del PASSES[BAD]  # other tests compare PASSES with a fresh process's


def run_cli(capsys, *args):
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def dense_sum(formula_fn, m_rows, n_rows):
    """Sum over j of a scalar formula of (x_i, y_j) evaluated densely in float64."""
    return np.array([[sum(formula_fn(xi, yj) for yj in n_rows)] for xi in m_rows])


# ---- reduce --------------------------------------------------------------------------------------


def test_reduce_finds_an_injected_bad_rewrite(bad_pass, capsys):
    start = time.perf_counter()
    status, out, _ = run_cli(capsys, "reduce", BIG, *[w for a in BIG_ALIASES for w in ("-a", a)],
                             "--passes", bad_pass, "-q")
    seconds = time.perf_counter() - start
    assert status == 0, out
    assert seconds < 60
    found = re.search(r"reduced 23 -> (\d+) nodes in \d+ tests, [\d.]+ s \(minimal\)", out)
    assert found and int(found.group(1)) <= 6, out
    assert f"pass to blame: {BAD}" in out
    formula = re.search(r"^formula: (.*)$", out, re.M).group(1)
    aliases = re.search(r"^aliases: (.*)$", out, re.M).group(1).split(", ")
    assert "Square" in formula and ("Subtract" in formula or "-" in formula)
    assert "Subtract" in out.split("\n\n", 1)[1]  # the IR printed is the pipeline's: (a-b)^2 rewritten
    # independently: the reduced formula, correctly compiled, matches dense NumPy; the bad pipeline does not
    rng = np.random.default_rng(5)
    red_ok = CompiledReduction(formula, aliases, "Sum", 1)
    red_bad = CompiledReduction(formula, aliases, "Sum", 1, passes=bad_pass.split(","))
    arrays = [rng.standard_normal((1,) if "Pm" in a else (7, int(a[-2]))) for a in aliases]
    expected = red_ok.run_numpy(arrays, "reference")
    np.testing.assert_allclose(red_ok.run_numpy(arrays, "CPU")[0], expected[0], rtol=1e-10)
    assert not np.allclose(red_bad.run_numpy(arrays, "CPU")[0], expected[0], rtol=1e-6)


def test_reduce_a_crash_of_the_passes_on_the_reference_backend():
    class Boom(NodePass):
        name = "test_boom"

        def rule(self, node):
            if node.name == "Cos" and node.args[0].cat:
                raise RuntimeError("boom: Cos of a variable")

    register_pass(Boom)
    try:
        case = reducer.make_case("Exp(-SqDist(x,y)) * b + Sin(x|y) * Cos(p*x)", BIG_ALIASES)
        done = reducer.reduce(case, reducer.Crash("autodiff,test_boom", backend="reference"))
    finally:
        del PASSES["test_boom"]
    assert (done.case.text(), done.case.aliases(), done.minimal) == ("Cos(x)", ["x = Vi(1)"], True)
    assert "raises RuntimeError" in done.test.describe() and "boom" in done.ir()


def test_reduce_with_a_shell_command(capsys):
    status, out, _ = run_cli(capsys, "reduce", GAUSS[0] + " + Sin(x|y) * b", *GAUSS[1:], "-q", "--command",
                             'case "$KEOMLIR_REDUCE_FORMULA" in *Sin*) exit 3;; esac; exit 0', "--status", "3")
    assert status == 0, out
    assert re.search(r"^formula: Sin\(IntCst\(1\)\)$", out, re.M), out


def test_reduce_moves_keep_aliases_and_lower_dimensions():
    case = reducer.make_case("Elem(x, 2) * SqDist(y, z)", ["x = Vi(3)", "y = Vj(3)", "z = Vj(3)"])
    texts = {(c.text(), tuple(c.aliases())) for c in reducer.proposals(case)}
    assert ("Elem(x, 2)", ("x = Vi(3)",)) in texts  # a node replaced by an operand; y and z dropped
    assert ("Mult(Elem(x, 2), y)", ("x = Vi(3)", "y = Vj(3)")) in texts  # a node replaced by a variable
    assert ("Mult(Elem(x, 2), SqDist(y, z))", ("x = Vi(3)", "y = Vj(1)", "z = Vj(3)")) in texts  # dim lowered
    assert not any("x = Vi(1)" in a for _, a in texts)  # Elem(x, 2) needs 3 components
    weights = [c.weight() for c in reducer.proposals(case)]
    assert weights == sorted(weights) and max(weights) < case.weight()


@pytest.mark.parametrize("args, message", [
    (["--size", "3"], "--size: expected M,N"),
    (["--budget", "0"], "--budget: expected a positive number"),
    (["--against-passes", "autodiff,cse", "--backend", "reference"], "nothing to reduce"),
    (["--against-passes", "default", "--backend", "reference"], "the same backend and pipeline"),
])
def test_reduce_errors(capsys, args, message):
    status, _, err = run_cli(capsys, "reduce", *GAUSS, *args)
    assert status == 2 and message in err, err


# ---- FLOPs, peak, bench ------------------------------------------------------------------------------


def _program(formula, reduction="Sum", aliases=("x = Vi(3)", "y = Vj(3)", "b = Vj(1)")):
    return CompiledReduction(formula, list(aliases), reduction, 1).program


def test_flops_counted_by_hand():
    # SqDist of dim 3: 3 subtractions, 1 multiply, 2 FMAs (2 each) = 8; the Sum's add: 1
    assert flops.count(_program("SqDist(x,y)")) == flops.Flops(9, 0)
    # float32 Exp (generic code): x / ln 2 + shifter (FMA), n = k - shifter, two FMAs of Cody-Waite,
    # Horner on 7 coefficients (6 FMAs), two multiplies by powers of two: 2 + 1 + 4 + 12 + 2 = 21;
    # Scalprod of dim 3: 1 multiply, 2 FMAs = 5; Sum: 1
    assert flops.count(_program("Exp(x|y)")) == flops.Flops(27, 0)
    # with AVX-512, 2^n is one vscalef: one multiply fewer
    assert flops.count(_program("Exp(x|y)"), "float32", NAMED["skylake-avx512"]) == flops.Flops(26, 0)
    # what depends on i alone is counted once per row: Exp(x|x) per row, Mult and the Sum per pair
    assert flops.count(_program("Exp(x|x) * b")) == flops.Flops(2, 26)
    assert flops.Flops(2, 26).total(10, 20) == 2 * 200 + 26 * 10


def test_peak_flops_and_clock(tmp_path):
    t = Target("t", "cpu", "x86_64-unknown-linux-gnu", "znver4", vector_bits=512, fma_units=1, cores=2,
               clock_hz=2.5e9)
    assert t.peak_flops("float32") == 16 * 1 * 2 * 2.5e9 * 2
    assert t.peak_flops("float64") == 8 * 1 * 2 * 2.5e9 * 2
    assert Target("u", "cpu", "x", "y", vector_bits=512, fma_units=None, clock_hz=1e9).peak_flops() is None
    (tmp_path / "cpuinfo_max_freq").write_text("3700000\n")
    assert _clock_hz(tmp_path, tmp_path / "none") == 3.7e9
    (tmp_path / "cpuinfo").write_text("processor : 0\ncpu MHz\t\t: 2596.144\nprocessor : 1\ncpu MHz : 2400.0\n")
    assert _clock_hz(tmp_path / "absent", tmp_path / "cpuinfo") == pytest.approx(2596.144e6)
    assert _clock_hz(tmp_path / "absent", tmp_path / "absent") is None
    assert "clock_hz = " in host().text()


LAST_LINE = re.compile(r"^default: ([\d.e+-]+) s, ([\d.]+) Gpairs/s, ([\d.]+) GFLOP/s, ([\d.]+) % of peak$")


def test_bench_command_last_line(capsys):
    status, out, _ = run_cli(capsys, "bench", *GAUSS, "--size", "2000,1500", "--rounds", "3",
                             "--schedule", "rows=2")
    assert status == 0, out
    lines = out.strip().splitlines()
    found = LAST_LINE.match(lines[-1])
    assert found, lines[-1]
    seconds, gpairs, gflops, percent = map(float, found.groups())
    pairs = 2000 * 1500
    per_pair = flops.count(_program("Exp(-SqDist(x,y)) * b"), "float32", host()).pair
    assert gpairs == pytest.approx(pairs / seconds / 1e9, rel=2e-3)
    assert gflops == pytest.approx(per_pair * pairs / seconds / 1e9, rel=2e-3)
    if host().peak_flops() is not None:
        assert percent == pytest.approx(100 * gflops * 1e9 / host().peak_flops(), rel=2e-3)
    assert any(line.startswith("schedule=rows=2") for line in lines)
    assert sum(" ok, " in line for line in lines) == 2


def test_bench_a_kir_file(tmp_path, capsys, bad_pass):
    """A `.kir` file benches its program as it is (no pass), then each --passes variant over it;
    a wrong pass's variant is caught by the check against the reference."""
    status, text, _ = run_cli(capsys, "ir", "Square(x - y) * b", "-a", "x = Vi(1)", "-a", "y = Vj(1)",
                              "-a", "b = Vj(1)", "--dtype", "float64", "--schedule", "rows=2", "--passes", "")
    assert status == 0
    path = tmp_path / "k.kir"
    path.write_text(text)
    status, out, _ = run_cli(capsys, "bench", str(path), "--size", "300,200", "--dtype", "float64",
                             "--rounds", "1", "--passes", bad_pass)
    lines = out.strip().splitlines()
    assert status == 1 and LAST_LINE.match(lines[-1]), out
    assert any(line.startswith("check default: ok") for line in lines)
    assert any(line.startswith(f"check passes={bad_pass}") and "MISMATCH" in line for line in lines)


def test_bench_check_catches_a_wrong_variant(bad_pass):
    result = bench.bench("Square(x - y) * b", ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], sizes=(300, 200),
                         dtype="float64", passes=[bad_pass], rounds=1)
    default, bad = result.variants
    assert default.error < 1e-12 and bad.error > 1e-2 and not result.passed
    assert "MISMATCH" in "\n".join(result.lines())


@pytest.mark.slow
def test_bench_the_issue_command(capsys):
    status, out, _ = run_cli(capsys, "bench", *GAUSS, "--size", "20000,20000")
    assert status == 0 and LAST_LINE.match(out.strip().splitlines()[-1]), out


# ---- the page ----------------------------------------------------------------------------------------


def test_explain_command(tmp_path, capsys):
    status, out, _ = run_cli(capsys, "explain", *GAUSS)
    assert status == 0 and [h for h in re.findall(r"IR after (\S+) ", out)] == ["parse", *DEFAULT_PIPELINE]
    status, out, _ = run_cli(capsys, "explain", *GAUSS, "--html", str(tmp_path / "k.html"))
    assert status == 0 and out.startswith(f"wrote {tmp_path / 'k.html'} (")
    html = (tmp_path / "k.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Exp(-SqDist(x,y)) * b" in html and 'id="tab-bench"' not in html
    status, _, err = run_cli(capsys, "explain", *GAUSS, "--bench", "10,10")
    assert status == 2 and "give --html FILE too" in err


def test_stage_diff_ignores_renumbering():
    before = "head\n  %0 = Var[x]  : dim 1, i\n  %1 = IntCst[1]  : dim 1, -\n  %2 = Mult(%0, %1)  : dim 1, i\n  F = %2"
    after = "head\n  %0 = Var[x]  : dim 1, i\n  F = %0"
    html, added, removed = page.stage_diff(before, after)
    assert (added, removed) == (1, 3)  # F now names x; IntCst, Mult and F = Mult(...) are gone
    assert html.count('class="new"') == 1 and "F = %0" in html
    renumbered = "head\n  %0 = IntCst[1]  : dim 1, -\n  %1 = Var[x]  : dim 1, i\n  %2 = Mult(%1, %0)  : dim 1, i\n  F = %2"
    assert page.stage_diff(before, renumbered)[1:] == (0, 0)  # the same expressions, numbered otherwise


def test_to_html_is_self_contained_with_every_part():
    ex = explain("Grad(SqDist(x,y), x, e) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "e = Vi(1)"])
    html = ex.to_html()
    for tab in ("stages", "graph", "schedule", "llvm", "llvm-opt", "asm", "ptx", "timings"):
        assert f'id="tab-{tab}"' in html and f'data-tab="{tab}"' in html
    assert html.count('<g class="node"') == len(ex.program.text().splitlines()) - 2 + 1  # nodes and reduction
    assert '<span class="new">' in html  # autodiff's new lines
    assert "define void @" in html and ".visible .entry" in html and "vfmadd" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert html.count('class="bar"') == len(ex.timings) + 4  # parse, passes; LLVM IR, optimization, asm, PTX


@pytest.mark.slow
def test_the_documented_commands_run(tmp_path, monkeypatch):
    """Every command of the README's section on bench, reduce and the page, as a user runs it
    (from a directory where `examples/` is this repository's)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Benchmark a variant, shrink a failing formula")
    end = re.compile(r"^#{1,3} ", re.M).search(readme, start + 4)
    text = readme[start:end.start() if end else len(readme)]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    commands = [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("keomlir ")]
    assert len(commands) == 3
    outputs = []
    for line in commands:
        done = subprocess.run([sys.executable, "-m", "keomlir", *shlex.split(line)[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
    assert LAST_LINE.match(outputs[0].strip().splitlines()[-1])
    assert re.search(r"^formula: Sin\(IntCst\(1\)\)$", outputs[1], re.M)
    assert "<svg" in (tmp_path / "kernel.html").read_text() and 'id="tab-bench"' in (tmp_path / "kernel.html").read_text()
    monkeypatch.chdir(tmp_path)
    (python,) = re.findall(r"```python\n(.*?)```", text, re.S)
    exec(compile(python, "README.md", "exec"), {})
    assert 'id="tab-graph"' in (tmp_path / "gauss.html").read_text()
