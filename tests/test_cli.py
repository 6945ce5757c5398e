"""The keomlir command, run as a user runs it (a subprocess), and keomlir.explain."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import keomlir
from keomlir.passes import DEFAULT_PIPELINE, PASSES

ROOT = pathlib.Path(__file__).resolve().parents[1]
GAUSS = ["Exp(-SqDist(x,y))*b", "-a", "x = Vi(3)", "-a", "y = Vj(3)", "-a", "b = Vj(1)"]
HEADER = re.compile(r"^// ----- IR after (\S+) ----- //$", re.M)


def keomlir_cmd(*args, env=None, input=None):
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "keomlir", *args], cwd=ROOT, env=full_env, input=input,
                          capture_output=True, text=True, timeout=120)


def ok(*args, **kw):
    r = keomlir_cmd(*args, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout


def user_error(*args):
    r = keomlir_cmd(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("keomlir: error: ")
    return r.stderr


def test_default_prints_the_optimized_ir():
    out = ok("ir", *GAUSS)
    assert out.startswith("reduce Sum over j  args(x=Var(0,3,i), y=Var(1,3,j), b=Var(2,1,j))")
    assert "Exp(%3)" in out and "F = %6" in out


def test_emit_llvm_and_llvm_opt():
    raw = ok("ir", *GAUSS, "--emit", "llvm")
    opt = ok("ir", *GAUSS, "--emit", "llvm-opt")
    assert re.search(r'^define .*@"?keomlir_kernel', raw, re.M)
    assert re.search(r'^define .*@"?keomlir_kernel', opt, re.M)
    assert opt != raw and "float" in raw
    assert "double" in ok("ir", *GAUSS, "--emit", "llvm", "--dtype", "float64")


def test_emit_asm_is_x86_vector_code():
    asm = ok("ir", *GAUSS, "--emit", "asm")
    assert "keomlir_kernel:" in asm
    assert re.search(r"\b(vfmadd\w*|vmul[ps]s|vadd[ps]s|vsub[ps]s)\b", asm)  # VEX/EVEX-encoded float math
    assert re.search(r"%[xyz]mm\d+", asm)


def test_emit_dot_is_a_colored_graph_that_renders():
    dot = ok("ir", *GAUSS, "--emit", "dot")
    assert dot.startswith("digraph keomlir {") and dot.rstrip().endswith("}")
    assert re.search(r'label="Exp\\ndim 1, ij", fillcolor="#fdae6b"', dot)  # i and j
    assert re.search(r'label="Var\[x: pos=0, i\]\\ndim 3, i", fillcolor="#9ecae1"', dot)
    assert 'label="Sum over j"' in dot
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` is not installed")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout


def test_emit_ptx():
    assert ".entry" in ok("ir", *GAUSS, "--emit", "ptx")


def test_print_ir_after_all_has_one_header_per_stage():
    out = ok("ir", *GAUSS, "--print-ir-after-all")
    assert HEADER.findall(out) == ["parse", *DEFAULT_PIPELINE]
    assert out.count("reduce Sum over j") == 1 + len(DEFAULT_PIPELINE)


def test_target_schedule_and_sizes():
    out = ok("ir", *GAUSS, "--target", "x86-64-v3", "--schedule", "rows=2,sum_block=128", "--sizes", "20000,1000")
    assert "schedule:\n  target = x86-64-v3\n" in out and "\n  vector_bits = 256\n" in out
    assert "\n  rows = 2\n  sum_block = 128\n" in out and "\n  thread_strategy = rows\n" in out
    assert "\ntarget: x86-64-v3\n  kind = cpu\n" in out and "l2_bytes = 512KiB" in out
    err = user_error("ir", *GAUSS, "--schedule", "rows=2,rowz=1")
    assert "unknown field 'rowz'; settable fields: strategy, " in err


def test_passes_runs_exactly_the_named_passes():
    twice = ["Exp(x)+Exp(x)", "-a", "x = Vi(1)"]
    out = ok("ir", *twice, "--passes", "cse", "--print-ir-after-all")
    assert HEADER.findall(out) == ["parse", "cse"]
    assert out.split("IR after cse")[1].count("Exp(") == 1  # shared by cse
    none = ok("ir", *twice, "--passes", "")
    assert none.count("Exp(") == 2
    assert HEADER.findall(ok("ir", *twice, "--passes", "", "--print-ir-after-all")) == ["parse"]


def test_unknown_pass_lists_the_valid_ones():
    err = user_error("ir", *GAUSS, "--passes", "cse,nosuchpass")
    assert "nosuchpass" in err and f"valid passes: {', '.join(PASSES)}" in err


@pytest.mark.parametrize("args, message, echoed", [
    (["Exp(x+", "-a", "x = Vi(3)"], "formula line 1, column 7", "Exp(x+"),
    (["x", "-a", "x = Vk(3)"], "alias line 1, column 5", "x = Vk(3)"),
    (["x+b", "-a", "x = Vi(3)", "-a", "b = Vj(2)"], "operand dimensions 3, 2", "x+b"),
    (["x", "-a", "x = Vi(3)", "--reduction", "Foo"], "unknown reduction 'Foo'", None),
])
def test_user_errors_exit_2_without_traceback(args, message, echoed):
    err = user_error("ir", *args)
    assert message in err
    if echoed is not None:  # the faulty text, then a caret under the fault
        column = int(re.search(r"column (\d+)", err).group(1))
        line, caret = err.splitlines()[1:3]
        assert line.strip() == echoed and caret.index("^") - line.index(echoed) == column - 1


def test_time_passes_table():
    r = keomlir_cmd("ir", *GAUSS, "--time-passes")
    assert r.returncode == 0 and r.stdout.startswith("reduce Sum")
    stages = [line.split("  ")[0] for line in r.stderr.splitlines()[1:]]
    assert stages == ["parse", *DEFAULT_PIPELINE, "LLVM IR rendering", "LLVM optimization", "machine code",
                      "total"]


def test_help_mentions_every_option():
    top = ok("--help")
    sub = ok("ir", "--help")
    for option in ["-a", "--reduction", "--axis", "--opt-arg", "--formula2", "--dtype", "--passes",
                   "--print-ir-after-all", "--emit", "--time-passes", "--target", "--schedule", "--sizes"]:
        assert option in top and option in sub
    for form in ["llvm-opt", "asm", "ptx", "dot"]:
        assert form in sub
    assert "cache" in top and "--clear" in top and "info" in top
    assert "tune" in top and "--size M,N" in top and "--budget SECONDS" in top and "--fields" in top


def test_cache_and_clear(tmp_path, monkeypatch):
    from keomlir.backends import cache

    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    cache.store("a kernel", b"x" * 1000)
    env = {"KEOMLIR_CACHE_DIR": str(tmp_path)}
    out = ok("cache", env=env)
    assert str(tmp_path) in out and re.search(r"entries:\s+1\n", out) and "bytes" in out
    out = ok("cache", "--clear", env=env)
    assert "1 entries removed" in out and cache.entries() == []


def test_info():
    out = ok("info")
    assert f"keomlir:         {keomlir.__version__}" in out
    for word in ["llvmlite:", "LLVM:", "numpy:", "x86-64", "nvptx64", "host CPU:", "vector features:",
                 "CUDA driver:", "GPUs:"]:
        assert word in out


class _OneGpuDriver:
    """A libcuda that answers for one GPU and fails every other call."""

    def cuDriverGetVersion(self, out):
        out._obj.value = 12040
        return 0

    def cuDeviceGetCount(self, out):
        out._obj.value = 1
        return 0

    def cuDeviceGet(self, out, ordinal):
        out._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, buf, size, dev):
        buf.value = b"NVIDIA H100"
        return 0

    def __getattr__(self, name):
        return lambda *args: 1


def test_info_sees_the_driver_the_gpu_runtime_loads(monkeypatch):
    from keomlir.backends.cuda import driver
    from keomlir.cli import cuda_status

    monkeypatch.setattr(driver, "_driver", (_OneGpuDriver(), ""))
    monkeypatch.setattr(driver, "_library_name", "libcuda.so.1")
    assert cuda_status() == ("libcuda.so.1, CUDA 12.4", "0: NVIDIA H100")
    monkeypatch.setattr(_OneGpuDriver, "cuDriverGetVersion", lambda self, out: 999)
    driver_text, gpus = cuda_status()
    assert driver_text.startswith("libcuda.so.1 loads, but is not usable (cuDriverGetVersion failed: ")
    assert gpus == "none visible"
    monkeypatch.setattr(driver, "_driver", (None, "no CUDA driver: libcuda was not found"))
    assert cuda_status() == ("no CUDA driver: libcuda was not found", "none visible")


def test_explain_from_python():
    ex = keomlir.explain("Exp(-SqDist(x,y))*b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=0,
                         emit=("ir", "llvm", "dot"))
    assert [s.name for s in ex.stages] == ["parse", *DEFAULT_PIPELINE]
    assert ex.ir == ex.program.text() and ex.outputs["ir"] == f"{ex.ir}\n{ex.schedule.text()}"
    assert "x=Var(0,3,j)" in ex.ir  # axis 0: the kernel reduces over the x_i
    assert "define" in ex.outputs["llvm"] and ex.outputs["dot"].startswith("digraph")
    assert [name for name, _ in ex.timings] == ["parse", *DEFAULT_PIPELINE, "LLVM IR rendering"]
    assert str(ex).startswith("// ----- IR after parse ----- //")
    assert "**cse**" in ex._repr_markdown_()
    d = ex.to_dict()
    assert d["stages"][0]["name"] == "parse" and set(d["outputs"]) == {"ir", "llvm", "dot"}
    assert d["schedule"]["target"] == "host" and d["schedule"]["strategy"] == "lanes"

    ex = keomlir.explain("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", opt_arg=4, passes="",
                         emit="asm", dtype="float64")
    assert [s.name for s in ex.stages] == ["parse"] and "keomlir_kernel:" in ex.outputs["asm"]
    with pytest.raises(SyntaxError, match="column 7"):
        keomlir.explain("Exp(x+", ["x = Vi(3)"])
    with pytest.raises(ValueError, match="valid passes"):
        keomlir.explain("x", ["x = Vi(3)"], passes=["fusion"])
    with pytest.raises(ValueError, match="emit"):
        keomlir.explain("x", ["x = Vi(3)"], emit="svg")


def test_formulas_starting_with_a_minus_sign_are_operands():
    """`keomlir ir "-SqDist(x,y)"` and `--formula2 "-x"`: not read as options."""
    res = subprocess.run([sys.executable, "-m", "keomlir", "ir", "-a", "x = Vi(3)", "-a", "y = Vj(3)",
                          "--reduction", "LogSumExp", "--formula2", "-x", "-SqDist(x,y)"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Minus(%2)" in res.stdout and "G = " in res.stdout


def test_tune_prints_every_candidate_then_the_best_which_later_calls_use(tmp_path, monkeypatch):
    """One line a candidate with its time, the last `best: OVERRIDES SECONDS s (RATIOx the default)`;
    another process (this one) then runs the program at sizes of the class with that schedule."""
    from keomlir.numpy import Genred
    from keomlir.schedule import parse_overrides

    out = ok("tune", *GAUSS, "--size", "300,300", "--budget", "10", "--fields", "rows",
             env={"KEOMLIR_CACHE_DIR": str(tmp_path)}).splitlines()
    assert out[0].startswith("tuning Sum at M = 300 output rows, N = 300 reduced rows (M in [256, 512), "
                             "N in [256, 512)), float32, on host")
    for name in ("rows=2", "rows=8"):
        line = next(line for line in out if line.startswith(f"  {name} "))
        assert re.search(r" \S+ s  \d+\.\d\dx  \(\d pairs?\)$| pruned: first sample \S+ s, ", line), line
    best = re.fullmatch(r"best: (default|rows=\d+) (\S+) s \((\d+\.\d\d)x the default\)", out[-1])
    assert best, out[-1]
    assert float(best[2]) > 0 and (float(best[3]) < 1 or best[1] == "default")
    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    g = Genred(GAUSS[0], GAUSS[2::2], "Sum", axis=1)
    fields = dict(parse_overrides("" if best[1] == "default" else best[1]))
    assert g.reduction.kernel("float32", (300, 300)).schedule.rows == fields.get("rows", 4)


@pytest.mark.parametrize("args, message", [
    (["--size", "10"], "--size: expected M,N (two positive integers), got '10'"),
    (["--size", "0,5"], "--size: expected M,N (two positive integers), got '0,5'"),
    (["--size", "5,5", "--budget", "0"], "--budget: expected a positive number of seconds, got 0.0"),
    (["--size", "5,5", "--fields", "rows,rowz"], "fields: 'rowz' not searched; searched fields on host: strategy,"),
    (["--size", "5,5", "--opt-arg", "7", "--reduction", "ArgKMin"], "K=7 is larger than the number of reduced rows 5"),
])
def test_tune_errors(args, message, capsys):
    from keomlir.cli import main

    formula = ["SqDist(x,y)", "-a", "x = Vi(3)", "-a", "y = Vj(3)"]
    assert main(["tune", *formula, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keomlir: error: ") and message in err, err
