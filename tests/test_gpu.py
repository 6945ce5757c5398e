"""The GPU backend without a GPU, and with one when present.

- PTX of every reduction (both axes) and of gradients, float32 and float64, is
  assembled by `ptxas` (from the nvidia-cuda-nvcc wheel) for sm_80 and sm_90;
  skipped when ptxas is absent.
- The same kernels built for the host run in the simulator (`cuda.simulate`:
  one OS thread per GPU thread, the real barriers, tiles, 2-D scheme and merges)
  against the CPU backend, on sizes no tile divides.
- Without a CUDA driver keomlir imports and runs on the CPU; backend='GPU' is a
  clear error.  With a driver, the runtime tests run on the GPU (else skipped).
"""

import concurrent.futures
import ctypes
import glob
import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest

from keomlir.backends import cache, cpu, cuda
from keomlir.backends.cuda import driver, runner
from keomlir.backends.cuda.plan import plan
from keomlir.backends.launch import numpy_dtype
from keomlir.backends.llvm import nvptx
from keomlir.compile import CompiledReduction as Reduction
from keomlir.numpy import Genred
from keomlir.schedule import gpu, schedule
from keomlir.schedule.choose import MERGE_BLOCK

from conftest import assert_close

ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]
# reduction -> (formula, formula2, K)
REDUCTIONS = {
    "Sum": ("Exp(-SqDist(x,y)) * b", None, None),
    "LogSumExp": ("-SqDist(x,y) + Sum(b)", "b", None),
    "SumSoftMaxWeight": ("-SqDist(x,y)", "b", None),
    "Min": ("x - y", None, None),
    "Max": ("x - y", None, None),
    "ArgMin": ("x - y", None, None),
    "ArgMax": ("x - y", None, None),
    "Min_ArgMin": ("x - y", None, None),
    "Max_ArgMax": ("x - y", None, None),
    "KMin": ("SqDist(x,y)", None, 3),
    "ArgKMin": ("x - y", None, 2),
    "KMin_ArgKMin": ("SqDist(x,y) - Sum(b)", None, 4),
}
# gradients, as the torch front end builds them (e is the incoming gradient, l a log-normalizer)
GRAD_ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "e = Vi(1)", "l = Vi(1)"]
GRADIENTS = {
    "gauss_dx": ("Grad(Exp(-SqDist(x,y))*b, x, e)", 1),
    "gauss_dy": ("Grad(Exp(-SqDist(x,y))*b, y, e)", 0),
    "gauss_db": ("Grad(Exp(-SqDist(x,y))*b, b, e)", 0),
    "lse_dx": ("Grad(-SqDist(x,y), x, Exp(-SqDist(x,y) - l) * e)", 1),
    "second_order": ("Grad(Grad(Exp(-SqDist(x,y))*b, x, e), x, x)", 1),
    "math": ("Grad(Sin((x|y)) * Log(1 + Exp(b)) + Sqrt(SqNorm2(x)) * Cos(b) + Rsqrt(1 + SqDist(x,y)), x, e)", 1),
    "inverse_trig": ("Grad(Atan(b) + Atan2(Sum(x), Sum(y)) + Asin(Sin(b)) * Acos(Cos(b)) "
                     "+ Powf(1 + Square(b), Sum(x)), x, e)", 1),
    # not a gradient: every function that is IR on the GPU, in one kernel
    "functions": ("Atan(Sum(x)) + Atan2(Sum(x), Sum(y)) + Asin(Sin(b)) * Acos(Cos(b)) + Powf(1 + Square(b), Sum(x))"
                  " + Floor(b) + Round(b, 2) + Abs(b) + Mod(b, IntInv(3), IntInv(10)) + XLogX(1 + Square(b)) + SinXDivX(b) + e", 1),
}
DTYPES = ("float32", "float64")
ARCHS = ("sm_80", "sm_90")
# PTX tests take the arch as a parameter: sm_90 in the quick suite, sm_80 (the same kernels
# for the older arch) as slow tests, which CI runs
ARCH = pytest.mark.parametrize("arch", [a if a == ARCHS[-1] else pytest.param(a, marks=pytest.mark.slow)
                                        for a in ARCHS])


def _reduction(name, axis):
    """axis=1 reduces over y, b (Vj); axis=0 over the same y, b declared Vi: the
    arguments have the same shapes either way."""
    formula, formula2, k = REDUCTIONS[name.split("+")[0]]
    if name == "LogSumExp":  # the plain form; "LogSumExp+G" is the weighted one
        formula2 = None
    aliases = ALIASES if axis == 1 else ["x = Vj(3)", "y = Vi(3)", "b = Vi(2)"]
    return Reduction(formula, aliases, name.split("+")[0], axis, k, formula2)


ALL_REDUCTIONS = sorted(REDUCTIONS) + ["LogSumExp+G"]  # the 12 names, LogSumExp in both forms


# ---- ptxas ---------------------------------------------------------------------------


def find_ptxas():
    """ptxas from $KEOMLIR_PTXAS, the PATH, or the nvidia-cuda-nvcc wheel (nvidia/*/bin)."""
    env = os.environ.get("KEOMLIR_PTXAS")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("ptxas")
    if found:
        return found
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas"))):
            if os.access(path, os.X_OK):
                return path
    return None


PTXAS = find_ptxas()
needs_ptxas = pytest.mark.skipif(PTXAS is None, reason="ptxas not found (pip install nvidia-cuda-nvcc)")


def assemble(ptx, arch, tmp_path, label):
    src = tmp_path / f"{label}-{arch}.ptx"
    src.write_text(ptx)
    res = subprocess.run([PTXAS, f"-arch={arch}", "-v", str(src), "-o", str(src.with_suffix(".cubin"))],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"ptxas {arch} failed on {label}:\n{res.stderr[-3000:]}"
    return res.stderr


def assemble_all(program, tmp_path, label, arch, fast_math=False):
    """Every dtype for `arch`, ptxas runs in parallel; returns ptxas's -v reports."""
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for dtype in DTYPES:
            ptx = nvptx.render_ptx(program, dtype, arch, fast_math=fast_math)
            assert f".target {arch}" in ptx
            for name in nvptx.KERNELS:
                assert f".entry {name}(" in ptx
            jobs.append(pool.submit(assemble, ptx, arch, tmp_path, f"{label}-{dtype}"))
        return [j.result() for j in jobs]


@needs_ptxas
@ARCH
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ALL_REDUCTIONS)
def test_ptxas_assembles_every_reduction(name, axis, arch, tmp_path):
    reports = assemble_all(_reduction(name, axis).program, tmp_path, f"{name}-{axis}", arch)
    for report in reports:
        assert "error" not in report.lower()


@needs_ptxas
@ARCH
@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_ptxas_assembles_gradients(name, arch, tmp_path):
    formula, axis = GRADIENTS[name]
    assemble_all(Reduction(formula, GRAD_ALIASES, "Sum", axis).program, tmp_path, name, arch)


@needs_ptxas
@ARCH
def test_ptxas_assembles_torch_gradients(arch, tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    from keomlir.torch import Genred as TorchGenred

    for red, f2 in [("LogSumExp", None), ("LogSumExp", "b"), ("SumSoftMaxWeight", "b")]:
        g = TorchGenred("-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], red, 1, formula2=f2)
        for positions in [(0,), (1, 2)]:
            genred = g.derivatives.gradient(positions)[0]
            assemble_all(genred.program, tmp_path, f"{red}-{f2}-{positions}", arch)


@needs_ptxas
@ARCH
def test_ptxas_fast_math_and_large_dimension(arch, tmp_path):
    r = _reduction("Sum", 1)
    reports = assemble_all(r.program, tmp_path, "fast", arch, fast_math=True)
    assert all("error" not in rep.lower() for rep in reports)
    assert "ex2.approx" in nvptx.render_ptx(r.program, "float32", fast_math=True)
    big = Reduction("Exp(-SqDist(x,y)) * Sum(b)", ["x = Vi(200)", "y = Vj(200)", "b = Vj(100)"], "Sum", 1)
    config = schedule(big.program, gpu("sm_80"), dtype="float64")
    assert config.stage and config.tile == 48 * 1024 // (300 * 8) < config.block  # fewer j than threads
    assemble_all(big.program, tmp_path, "large-dim", arch)


# ---- PTX structure (no ptxas needed) ------------------------------------------------------


def test_ptx_structure():
    r = _reduction("Sum", 1)
    ptx = nvptx.render_ptx(r.program, "float32", "sm_90")
    info = nvptx.KernelInfo.from_header(ptx.split("\n", 1)[0])
    assert info.block == 256 and info.stage and info.shared_bytes == 256 * 5 * 4
    assert ".target sm_90" in ptx and "bar.sync" in ptx and ".maxntid 256" in ptx
    assert ".shared" in ptx and "ld.shared" in ptx
    assert "call" not in ptx.replace("// ", "").split(".entry", 1)[1].replace("call.uni", "")  # no libm: all inline


def test_large_dimension_path_reads_global_memory():
    """A j row above the 48 KiB of shared memory is not staged."""
    big = Reduction("Exp(-SqDist(x,y))", ["x = Vi(12289)", "y = Vj(12289)"], "Sum", 1)
    config = schedule(big.program, gpu("sm_80"), dtype="float32")
    assert not config.stage
    ptx = nvptx.render_ptx(big.program, "float32")
    assert "ld.shared" not in ptx and "bar.sync" not in ptx


def test_block_shrinks_to_fit_shared_memory():
    mid = Reduction("Exp(-SqDist(x,y))", ["x = Vi(60)", "y = Vj(60)"], "Sum", 1)
    assert schedule(mid.program, gpu("sm_80"), dtype="float32").block == 128  # 256 * 60 * 4 > 48 KiB
    assert schedule(mid.program, gpu("sm_80"), dtype="float64").block == 64
    assert schedule(mid.program, gpu("sm_80"), dtype="float64").tile == 64  # one j row per thread


def test_bad_arch():
    with pytest.raises(ValueError, match="arch"):
        nvptx.render_ptx(_reduction("Sum", 1).program, "float32", "gfx90a")


def test_arch_for_device():
    assert nvptx.arch_for(8, 0) == "sm_80"
    assert nvptx.arch_for(8, 9) == "sm_89"
    assert nvptx.arch_for(9, 0) == "sm_90"
    assert nvptx.arch_for(12, 1) == "sm_120"
    assert nvptx.arch_for(99, 0) == nvptx.ARCHS[-1]


def test_unknown_function_names_target():
    from llvmlite import ir

    m = ir.Module()
    f = ir.Function(m, ir.FunctionType(ir.VoidType(), []), "f")
    em = nvptx.NVPTXEmitter(ir.IRBuilder(f.append_basic_block()), ir.DoubleType())
    with pytest.raises(NotImplementedError, match=r"lgamma.*NVPTX.*float64"):
        em.call("lgamma", em.const(1))


# ---- the simulator: the GPU kernels, run on the host ---------------------------------------


def _simulate(reduction, arrays, ranges=None, **kw):
    """The reduction's GPU kernels on the host, on the Launch the compile entry builds."""
    return cuda.simulate(reduction.launch(arrays, ranges), arrays, **kw)


def _args(rng, dtype, m=37, n=101):
    """x (m, 3), and the reduced y (n, 3), b (n, 2)."""
    return [rng.standard_normal(shape).astype(dtype) for shape in [(m, 3), (n, 3), (n, 2)]]


def _compare(got, want, dtype, exact_index=True):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        if g.dtype == np.int64:
            np.testing.assert_array_equal(g, w)
        else:
            assert_close(g, w, dtype, rtol=2e-5 if dtype == "float32" else 1e-12,
                         atol=2e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ALL_REDUCTIONS)
def test_simulated_kernels_match_cpu(name, axis, dtype, rng):
    r = _reduction(name, axis)
    args = _args(rng, dtype)
    want = r.run_numpy(args, "CPU")
    for scheme, chunk, fan in [("1d", None, 32), ("2d", 16, 3), ("2d", 24, 32)]:
        got = _simulate(r, args, block=8, scheme=scheme, chunk=chunk, fan=fan)
        _compare(got, want, dtype)


@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_simulated_gradients_match_cpu(name, rng):
    formula, axis = GRADIENTS[name]
    r = Reduction(formula, GRAD_ALIASES, "Sum", axis)
    x, y = rng.standard_normal((29, 3)) * 0.5, rng.standard_normal((45, 3)) * 0.5
    b, e, l = rng.uniform(0.1, 0.9, (45, 1)), rng.standard_normal((29, 1)), rng.standard_normal((29, 1))
    args = [x, y, b, e, l]
    want = r.run_numpy(args, "CPU")
    for scheme in ("1d", "2d"):
        _compare(_simulate(r, args, block=8, scheme=scheme, chunk=16), want, "float64")


@pytest.mark.parametrize("scheme", ["direct_sum", "kahan_scheme", "block_sum"])
@pytest.mark.parametrize("acc", ["auto", "float64"])
def test_simulated_sum_schemes(scheme, acc, rng):
    r = Reduction("Exp(-SqDist(x,y)) * b", ALIASES, "Sum", 1, dtype_acc=acc, sum_scheme=scheme)
    args = _args(rng, "float32")
    want = r.run_numpy(args, "reference")
    for s, chunk in [("1d", None), ("2d", 16)]:
        _compare(_simulate(r, args, block=8, scheme=s, chunk=chunk, fan=2), want, "float32")


def test_simulated_large_dimension_path(rng):
    r = Reduction("Exp(-SqDist(x,y) / 100) * b", ["x = Vi(70)", "y = Vj(70)", "b = Vj(2)"], "Sum", 1)
    x, y, b = rng.standard_normal((21, 70)), rng.standard_normal((53, 70)), rng.standard_normal((53, 2))
    want = r.run_numpy([x, y, b], "CPU")
    for stage in (True, False):
        for scheme in ("1d", "2d"):
            _compare(_simulate(r, [x, y, b], block=8, scheme=scheme, chunk=16, stage=stage), want, "float64")


def test_simulated_parameters_and_no_j_variable(rng):
    r = Reduction("Exp(-SqNorm2(x - p)) + x", ["x = Vi(2)", "p = Pm(2)", "y = Vj(1)"], "Sum", 1)
    x, p, y = rng.standard_normal((13, 2)), rng.standard_normal(2), rng.standard_normal((17, 1))
    want = r.run_numpy([x, p, y], "CPU")
    _compare(_simulate(r, [x, p, y], block=8, scheme="1d"), want, "float64")
    _compare(_simulate(r, [x, p, y], block=8, scheme="2d", chunk=8), want, "float64")


@pytest.mark.parametrize("name,identity", [("Sum", 0.0), ("Min", np.inf), ("Max", -np.inf),
                                           ("LogSumExp", -np.inf)])
def test_simulated_empty_range(name, identity):
    formula = "SqDist(x,y)" if name == "LogSumExp" else "x - y"
    r = Reduction(formula, ["x = Vi(3)", "y = Vj(3)"], name, 1)
    out = _simulate(r, [np.ones((5, 3)), np.ones((0, 3))], block=8, scheme="2d")
    assert np.all(out[0] == identity)


def test_simulated_ties_keep_the_lower_index():
    r = Reduction("SqDist(x,y)", ["x = Vi(1)", "y = Vj(1)"], "KMin_ArgKMin", 1, 3)
    x = np.zeros((3, 1))
    y = np.array([[1.0], [0.0], [1.0], [0.0], [0.0], [1.0]] * 7)
    want = r.run_numpy([x, y], "CPU")
    for chunk in (None, 8, 16):
        got = _simulate(r, [x, y], block=4, scheme="2d" if chunk else "1d", chunk=chunk, fan=2)
        _compare(got, want, "float64")
    np.testing.assert_array_equal(want[1][0], [1, 3, 4])


def test_simulated_nan_stays_in_its_row(rng):
    r = Reduction("Exp(-SqDist(x,y))", ["x = Vi(1)", "y = Vj(1)"], "LogSumExp", 1)
    x = rng.standard_normal((9, 1))
    x[4] = np.nan
    y = rng.standard_normal((31, 1))
    got = _simulate(r, [x, y], block=4, scheme="2d", chunk=8)[0]
    assert np.isnan(got[4]).all() and np.isfinite(np.delete(got, 4, axis=0)).all()


# ---- math functions that are IR on the GPU (no libm on NVPTX) ---------------------------


MATH_CASES = {
    # formula: (numpy function, x range, float32 bound, float64 bound) in units of the dtype's spacing
    "Atan(x)": (np.arctan, (-50, 50), 3, 4),
    "Asin(x)": (np.arcsin, (-1, 1), 4, 6),
    "Acos(x)": (np.arccos, (-1, 1), 4, 6),
    "Atan2(x, y)": (lambda x, y: np.arctan2(x, y), (-3, 3), 4, 6),
    "Powf(x, y)": (lambda x, y: np.power(x, y), (0.01, 4), 1, 64),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("formula", sorted(MATH_CASES))
def test_gpu_math_accuracy(formula, dtype, rng):
    fn, (lo, hi), bound32, bound64 = MATH_CASES[formula]
    r = Reduction(f"{formula} + z", ["x = Vi(1)", "y = Vi(1)", "z = Vj(1)"], "Sum", 1)
    x = rng.uniform(lo, hi, (500, 1)).astype(dtype)
    y = rng.uniform(lo if "Atan2" in formula else -6, hi if "Atan2" in formula else 6, (500, 1)).astype(dtype)
    x[:4, 0] = [lo, hi, 0 if lo < 0 else lo, (lo + hi) / 2]
    got = _simulate(r, [x, y, np.zeros((1, 1), dtype)], block=64, scheme="1d")[0][:, 0]
    with np.errstate(all="ignore"):
        ref = (fn(x[:, 0].astype(np.float64)) if "y" not in formula.split("(")[1]
               else fn(x[:, 0].astype(np.float64), y[:, 0].astype(np.float64)))
    ok = np.isfinite(ref) & (np.abs(ref) < np.finfo(dtype).max / 2)
    spacing = np.spacing(np.maximum(np.abs(ref[ok]), np.finfo(dtype).tiny).astype(dtype)).astype(np.float64)
    err = np.abs(got[ok].astype(np.float64) - ref[ok]) / spacing
    assert err.max() <= (bound32 if dtype == "float32" else bound64), (formula, dtype, err.max())


def test_gpu_math_special_values():
    r = Reduction("Atan2(x, y) + z", ["x = Vi(1)", "y = Vi(1)", "z = Vj(1)"], "Sum", 1)
    x = np.array([[0.0], [-0.0], [1.0], [np.inf], [np.nan]])
    y = np.array([[-0.0], [-1.0], [np.inf], [-np.inf], [1.0]])
    got = _simulate(r, [x, y, np.zeros((1, 1))], block=8, scheme="1d")[0][:, 0]
    np.testing.assert_allclose(got[:4], np.arctan2(x[:4, 0], y[:4, 0]), rtol=1e-15)
    assert np.isnan(got[4])
    p = Reduction("Powf(x, y) + z", ["x = Vi(1)", "y = Vi(1)", "z = Vj(1)"], "Sum", 1)
    x = np.array([[-2.0], [-2.0], [0.0], [0.0], [np.nan], [1.0], [-8.0]])
    y = np.array([[3.0], [0.5], [-1.0], [2.0], [0.0], [np.nan], [2.0]])
    got = _simulate(p, [x, y, np.zeros((1, 1))], block=8, scheme="1d")[0][:, 0]
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got, np.power(x[:, 0], y[:, 0]), rtol=1e-14, equal_nan=True)


# ---- launch plans ----------------------------------------------------------------------------


def _info(block=256, slots=3):
    return nvptx.KernelInfo(block, MERGE_BLOCK, slots, True, 0, block)


def test_plan_many_rows_is_one_d():
    steps, buffers = plan(10**6, 10**6, 3, 1, _info(), sm_count=132)
    assert [s.kernel for s in steps] == ["keomlir_1d"] and buffers == {}
    assert steps[0].grid == (-(-10**6 // 256), 1)


def test_plan_few_rows_many_j_is_two_d():
    steps, buffers = plan(100, 10**7, 3, 1, _info(), sm_count=132)
    kinds = [s.kernel for s in steps]
    assert kinds[0] == "keomlir_partial" and kinds[-1] == "keomlir_final"
    gx, gj = steps[0].grid
    chunk = steps[0].params[2]
    assert gx == 1 and gj * chunk >= 10**7 > (gj - 1) * chunk and chunk % 256 == 0
    assert gj >= 132  # the whole GPU is busy
    n = gj
    for s in steps[1:-1]:  # each merge pass divides the states by the fan
        assert s.params[1] == n and s.grid[1] == -(-n // cuda.FAN)
        n = s.grid[1]
    assert steps[-1].params[1] == n <= cuda.FAN
    assert buffers["s0"] == gj * 3 * 100


def test_plan_limits():
    steps, _ = plan(1, 10**9, 2, 1, _info(), sm_count=132, scheme="2d", chunk=256)
    assert steps[0].grid[1] <= 65535
    assert plan(0, 10, 2, 1, _info(), 1) == ([], {})
    assert [s.kernel for s in plan(5, 0, 2, 1, _info(), 1, scheme="2d")[0]] == ["keomlir_1d"]


# ---- without a driver ----------------------------------------------------------------------


@pytest.fixture
def no_driver(monkeypatch):
    monkeypatch.setattr(driver, "_driver", (None, "no CUDA driver: libcuda was not found"))


def test_without_driver_keomlir_runs_on_the_cpu(no_driver, rng):
    assert not cuda.available() and cuda.device_count() == 0
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, axis=1)
    x, y, b = _args(rng, "float64")
    assert g(x, y, b).shape == (37, 2)  # 'auto' stays on the CPU
    with pytest.raises(ValueError, match=r"backend='GPU'.*not available.*libcuda"):
        g(x, y, b, backend="GPU")
    with pytest.raises(ValueError, match=r"backend='GPU'.*not available"):
        cuda.device(0)
    assert not cuda.wants_gpu(10**6, 10**6)


class _FakeDriver:
    """A libcuda whose calls fail with CUDA_ERROR_INVALID_VALUE."""

    def cuGetErrorName(self, rc, out):
        out._obj.value = b"CUDA_ERROR_INVALID_VALUE"
        return 0

    def cuGetErrorString(self, rc, out):
        out._obj.value = b"invalid argument"
        return 0

    def __getattr__(self, name):
        return lambda *args: 1


def test_driver_errors_name_the_call_and_the_error(monkeypatch):
    monkeypatch.setattr(driver, "_driver", (_FakeDriver(), ""))
    with pytest.raises(cuda.CudaError, match=r"cuMemAlloc_v2 failed: CUDA_ERROR_INVALID_VALUE \(1\): invalid argument"):
        cuda.call("cuMemAlloc_v2", ctypes.byref(ctypes.c_uint64()), 8)


def test_device_id_checked(monkeypatch):
    monkeypatch.setattr(driver, "_driver", (_FakeDriver(), ""))
    monkeypatch.setattr(driver, "device_count", lambda: 1)
    for bad in [3, -2, "0", 1.0, True]:
        with pytest.raises(ValueError, match="device_id"):
            cuda.device(bad)


class _OldGpuDriver(_FakeDriver):
    """A driver that answers for one Volta GPU (compute capability 7.0)."""

    def cuDeviceGetCount(self, out):
        out._obj.value = 1
        return 0

    def cuDeviceGet(self, out, ordinal):
        out._obj.value = 0
        return 0

    def cuDeviceGetName(self, buf, size, dev):
        buf.value = b"Tesla V100"
        return 0

    def cuDeviceGetAttribute(self, out, attr, dev):
        out._obj.value = {driver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: 7}.get(attr, 0)
        return 0


def test_gpus_older_than_turing_are_refused_and_auto_stays_on_the_cpu(monkeypatch, rng):
    monkeypatch.setattr(driver, "_driver", (_OldGpuDriver(), ""))
    monkeypatch.setattr(driver, "_devices", {})
    monkeypatch.setattr(runner, "AUTO_MIN_PAIRS", 1)
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, axis=1)
    x, y, b = _args(rng, "float64", 13, 21)
    with pytest.raises(NotImplementedError, match=r"Tesla V100\) has compute capability 7.0.*7.5 or newer"):
        g(x, y, b, backend="GPU")
    assert_close(g(x, y, b), g(x, y, b, backend="CPU"), "float64")  # 'auto': the CPU


def test_torch_cpu_and_cuda_do_not_mix():
    torch = pytest.importorskip("torch")
    from keomlir.torch import Genred as TorchGenred

    g = TorchGenred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "Sum", 1)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="not supported"):
        g(x.to("meta"), x.to("meta"))


# ---- on a GPU (skipped without one) ---------------------------------------------------------

needs_gpu = pytest.mark.skipif(not cuda.available(), reason="no CUDA driver or GPU")


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ALL_REDUCTIONS)
def test_gpu_matches_cpu(name, axis, dtype, rng):
    r = _reduction(name, axis)
    args = _args(rng, dtype, 1001, 2003)
    want = r.run_numpy(args, "CPU")
    for scheme in ("1d", "2d"):
        _compare(cuda.run_numpy(r.launch(args), args, scheme=scheme), want, dtype)


@needs_gpu
def test_gpu_torch_in_place_and_autograd():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    from keomlir.torch import Genred as TorchGenred

    g = TorchGenred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", 1)
    x = torch.randn(1001, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    y = torch.randn(1503, 3, dtype=torch.float64, device="cuda")
    b = torch.randn(1503, 1, dtype=torch.float64, device="cuda")
    out = g(x, y, b)
    assert out.device == x.device
    ref = (torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b)
    torch.testing.assert_close(out, ref)
    (gx,) = torch.autograd.grad(out.sum(), [x])
    (rx,) = torch.autograd.grad(ref.sum(), [x])
    torch.testing.assert_close(gx, rx)


def test_fast_math_exp_logic(rng):
    """The fast float32 exp's reduction and exponent scaling, with an exact exp2 standing
    in for ex2.approx (the simulator): within 1 ulp where the result is normal, flushed
    below 2^-126, inf above, NaN kept.  ex2.approx's own error is only measurable on a GPU."""
    r = Reduction("Exp(x) + z", ["x = Vi(1)", "z = Vj(1)"], "Sum", 1)
    x = np.concatenate([rng.uniform(-87.3, 88.7, 3000), [-87.33, 88.72, 0, -1e30, 1e30, np.inf, -np.inf, np.nan,
                                                         -100.0, 89.0]]).astype(np.float32)[:, None]
    got = _simulate(r, [x, np.zeros((1, 1), np.float32)], block=64, scheme="1d", fast_math=True)[0][:, 0]
    with np.errstate(over="ignore"):
        ref = np.exp(x[:, 0].astype(np.float64))
    normal = (ref >= 2.0 ** -126) & (ref < np.finfo(np.float32).max)
    err = np.abs(got[normal] - ref[normal]) / np.spacing(ref[normal].astype(np.float32))
    assert err.max() <= 1
    np.testing.assert_array_equal(got[-8:], np.float32([1, 0, np.inf, np.inf, 0, np.nan, 0, np.inf]))


def test_front_ends_dispatch_to_the_gpu(monkeypatch, rng):
    """backend='GPU' and 'auto' (large problems) reach the GPU backend's run_numpy with the
    arguments as given; 'auto' falls back to the CPU on NotImplementedError.  The
    driver is faked and the kernels run in the simulator."""
    monkeypatch.setattr(driver, "_driver", (_FakeDriver(), ""))
    calls = []

    def fake_run_numpy(launch, arrays, device_id=-1, scheme="auto"):
        calls.append((launch.n_i, launch.n_j, device_id))
        return cuda.simulate(launch, arrays, block=8)

    monkeypatch.setattr(runner, "run_numpy", fake_run_numpy)
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, axis=1)
    x, y, b = _args(rng, "float64", 13, 21)
    want = g(x, y, b, backend="CPU")
    assert_close(g(x, y, b, backend="GPU"), want, "float64")
    assert calls == [(13, 21, -1)]
    from test_ranges import ranges_from_keep

    ranges = ranges_from_keep([[0, 5], [5, 13]], [[0, 9], [9, 21]], [[1, 0], [1, 1]])
    assert_close(g(x, y, b, backend="GPU", ranges=ranges), g(x, y, b, backend="CPU", ranges=ranges), "float64")
    calls.pop()
    g(x, y, b)  # small: 'auto' stays on the CPU
    assert len(calls) == 1
    monkeypatch.setattr(runner, "AUTO_MIN_PAIRS", 100)
    assert_close(g(x, y, b), want, "float64")
    assert len(calls) == 2

    def lacking(*args, **kw):
        raise NotImplementedError("lgamma is not available on NVPTX for float64")

    monkeypatch.setattr(runner, "run_numpy", lacking)
    assert_close(g(x, y, b), want, "float64")  # 'auto': the CPU
    with pytest.raises(NotImplementedError, match="lgamma"):
        g(x, y, b, backend="GPU")

    torch = pytest.importorskip("torch")
    from keomlir.torch import Genred as TorchGenred

    monkeypatch.setattr(runner, "run_numpy", fake_run_numpy)
    tg = TorchGenred("Exp(-SqDist(x,y)) * b", ALIASES, "Sum", 1)
    out = tg(*[torch.from_numpy(a) for a in (x, y, b)], backend="GPU")  # CPU tensors, computed on the GPU
    assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
    assert_close(out.numpy(), want, "float64")


def test_the_gpu_key_does_not_depend_on_the_host_schedule(monkeypatch, rng):
    """Scheduling for the host rewrites no program: the GPU path (here the simulator,
    through the same key) keys on the compile entry's program, whether or not the CPU ran first."""
    r = _reduction("Sum", 1)
    args = _args(rng, "float32")
    sched = schedule(r.program, gpu("sm_80"), dtype="float32")
    before = runner.ptx_key(r.program, "float32", "float32", r.sum_scheme, sched)
    assert cpu.kernel_schedule(r.program, "float32").strategy == "lanes"  # the host's schedule
    r.run_numpy(args, "CPU")
    assert r.launch(args).program is r.program
    assert runner.ptx_key(r.program, "float32", "float32", r.sum_scheme, sched) == before
    keyed, kernel_key = [], cache.kernel_key
    monkeypatch.setattr(cache, "kernel_key", lambda program, target, **o: keyed.append(program)
                        or kernel_key(program, target, **o))
    _simulate(r, args, block=8)
    assert keyed and all(p is r.program for p in keyed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "Min_ArgMin", "KMin_ArgKMin", "SumSoftMaxWeight"])
def test_simulated_block_sparse_kernel_matches_cpu(name, axis, dtype, rng):
    """keomlir_ranges: chunks of `block` rows per block of ranges_i, each over its intervals
    (tiles that no block divides, a block of rows with no interval, rows in no block)."""
    from test_ranges import ranges_from_keep

    r = _reduction(name, axis)
    args = _args(rng, dtype)
    _, n_i, n_j = r.check_arrays(args)
    m, n = (n_i, n_j) if axis == 1 else (n_j, n_i)
    cut = lambda size: [[0, size // 3], [size // 3 + 2, size // 2], [size // 2, size]]  # noqa: E731
    ranges = ranges_from_keep(cut(m), cut(n), [[1, 0, 1], [0, 0, 0], [1, 1, 1]])
    want = r.run_numpy(args, "CPU", ranges=ranges)
    launch = r.launch(args, ranges)
    for got, want_half in zip(launch.ranges, r.kernel_ranges(ranges, n_i, n_j)):  # the kernel's half of the 6-tuple
        np.testing.assert_array_equal(got, want_half)
    for block in (4, 8):
        _compare(cuda.simulate(launch, args, block=block), want, dtype)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "Min_ArgMin", "KMin_ArgKMin", "SumSoftMaxWeight"])
def test_simulated_float16_kernels_match_cpu_float32(name, axis, rng):
    """float16 (SPEC: on the GPU): half in memory and shared tiles, float32 arithmetic and
    sums; the results are the float32 CPU results rounded to half."""
    r = _reduction(name, axis)
    args = [a.astype(np.float16) for a in _args(rng, "float32")]
    want = r.run_numpy([a.astype(np.float32) for a in args], "CPU")
    for scheme in ("1d", "2d"):
        got = _simulate(r, args, block=8, scheme=scheme, chunk=16)
        for g, w in zip(got, want):
            if w.dtype == np.int64:
                np.testing.assert_array_equal(g, w)
            else:
                assert g.dtype == np.float16
                np.testing.assert_allclose(g.astype(np.float32), w, rtol=1e-3, atol=1e-3 * np.abs(w).max())
    _, n_i, n_j = r.check_arrays(args)
    ranges = _half_ranges(r, n_i, n_j)
    got = _simulate(r, args, block=8, ranges=ranges)
    want = r.run_numpy([a.astype(np.float32) for a in args], "CPU", ranges=ranges)
    for g, w in zip(got, want):
        if w.dtype == np.int64:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g.astype(np.float32), w, rtol=1e-3, atol=1e-3 * np.abs(w[np.isfinite(w)]).max())


@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "KMin_ArgKMin"])
def test_simulated_bfloat16_kernels_match_cpu_float32(name, rng):
    """bfloat16 joins float16 on the GPU: 16 bits in memory and shared tiles, float32
    arithmetic and sums; the results are the float32 CPU results rounded to bfloat16.
    (NumPy has no bfloat16: torch's tensors make the launch, their bits run.)"""
    torch = pytest.importorskip("torch")
    r = _reduction(name, 1)
    half = [torch.from_numpy(a).to(torch.bfloat16) for a in _args(rng, "float32")]
    want = r.run_numpy([a.float().numpy() for a in half], "CPU")
    bits = [a.view(torch.int16).numpy() for a in half]
    for scheme in ("1d", "2d"):
        got = cuda.simulate(r.launch(half), bits, block=8, scheme=scheme, chunk=16)
        for g, w in zip(got, want):
            if w.dtype == np.int64:
                np.testing.assert_array_equal(g, w)
            else:
                assert g.dtype == numpy_dtype("bfloat16")
                g = torch.from_numpy(g.view(np.int16)).view(torch.bfloat16).float().numpy()
                np.testing.assert_allclose(g, w, rtol=2 ** -8, atol=2 ** -8 * np.abs(w).max())


def _half_ranges(r, n_i, n_j):
    from test_ranges import ranges_from_keep

    m, n = (n_i, n_j) if r.axis == 1 else (n_j, n_i)
    return ranges_from_keep([[0, m // 2], [m // 2, m]], [[0, n // 3], [n // 3, n]], [[1, 0], [1, 1]])


@needs_ptxas
@ARCH
@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "KMin_ArgKMin", "SumSoftMaxWeight"])
def test_ptxas_assembles_float16(name, arch, tmp_path):
    r = _reduction(name, 1)
    ptx = nvptx.render_ptx(r.program, "float16", arch)
    assert "cvt.f32.f16" in ptx and "cvt.rn.f16.f32" in ptx  # half loads widened, results narrowed
    assemble(ptx, arch, tmp_path, f"{name}-float16")


@needs_ptxas
@ARCH
@pytest.mark.parametrize("name", ["Sum", "KMin_ArgKMin"])
def test_ptxas_assembles_bfloat16(name, arch, tmp_path):
    r = _reduction(name, 1)
    ptx = nvptx.render_ptx(r.program, "bfloat16", arch)
    # loads widened by a 16-bit shift (exact), results narrowed by cvt.rn (sm_80 and later)
    assert "cvt.u32.u16" in ptx and "cvt.rn.bf16.f32" in ptx
    assemble(ptx, arch, tmp_path, f"{name}-bfloat16")
