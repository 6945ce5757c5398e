"""float16 and bfloat16 on the CPU: half data is read and written in 16 bits, computed in
float32 (summed in float32, or float64 as dtype_acc says) and each result rounded once.

Oracles: dense float64 NumPy (or torch float64 autograd) on the half-rounded inputs, which
float64 holds exactly; and the float32 kernels on the same values, whose results rounded to
half must be the half kernels' results bit for bit (the same float32 arithmetic, rounded
once).  Bounds: a half result r of an exact value v obeys

    |r - v| <= U |v| + 2^-18 S

with U the unit roundoff (2^-11 float16, 2^-8 bfloat16: the one rounding to half) and S
the largest |v| of the output (the float32 arithmetic before it: 64 float32 ulps of S).
NumPy has no bfloat16: ml_dtypes' (installed with JAX) where present; torch.bfloat16 always.
"""

import ctypes
import dataclasses
import platform

import numpy as np
import pytest

import keomlir.numpy as kn
from keomlir.backends import cache, cpu
from keomlir.backends.launch import float_values, numpy_dtype, rounded
from keomlir.ir.reductions import REDUCTIONS
from keomlir.schedule import host, schedule

torch = pytest.importorskip("torch")

U = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
HALF = ["float16", "bfloat16"]
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}
M, N = 37, 83
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]
# every reduction, with a formula fit for it (K = 3 for the K-min ones)
FORMULAS = {"Sum": "Exp(-SqDist(x,y)) * b", "LogSumExp": "-SqDist(x,y)", "SumSoftMaxWeight": "-SqDist(x,y)"}
HAS_ML_DTYPES = numpy_dtype("bfloat16").kind == "V"  # ml_dtypes' bfloat16 (else uint16 bits)


def _half(a, dtype):
    """float64 values rounded once to `dtype` (a NumPy array of its `numpy_dtype`)."""
    return rounded(a, dtype)


def _numpy_dtypes():
    """The half dtypes a NumPy array can hold here."""
    return [d if d == "float16" or HAS_ML_DTYPES else
            pytest.param(d, marks=pytest.mark.skip("NumPy bfloat16 needs ml_dtypes")) for d in HALF]


def _data(dtype, seed=0, m=M, n=N):
    r = np.random.default_rng(seed)
    return [_half(a, dtype) for a in (r.normal(size=(m, 3)), r.normal(size=(n, 3)), r.uniform(0.5, 2, (n, 2)))]


def _within(got, exact, dtype, factor=1.0):
    """|got - exact| <= U |exact| + 2^-18 S (see the module's docstring), `factor` times."""
    got, exact = float_values(got, dtype), np.asarray(exact, np.float64)
    scale = np.abs(exact[np.isfinite(exact)]).max(initial=0)
    err = np.abs(got - exact)
    bound = factor * (U[dtype] * np.abs(exact) + 2.0 ** -18 * scale)
    assert got.shape == exact.shape
    assert np.all((err <= bound) | (got == exact)), f"max error {np.max(err - bound):.3g} over the bound"


def _genred(reduction, axis=1, **kw):
    formula = FORMULAS.get(reduction, "SqDist(x,y)")
    formula2 = "b" if reduction == "SumSoftMaxWeight" else None
    k = 3 if "KMin" in reduction else None
    return kn.Genred(formula, ALIASES, reduction, axis=axis, opt_arg=k, formula2=formula2, **kw)


# ---- the conversions -----------------------------------------------------------------------

def _bits_of(values, dtype):
    """The 16-bit patterns of float32 `values` rounded to `dtype` by torch (the reference)."""
    return torch.from_numpy(values).to(TORCH[dtype]).view(torch.int16).numpy().view(np.uint16)


def _conversions(dtype, target):
    """ext(bits -> float32), nar(float32 -> bits), odd(float64 -> bits) compiled for `target`."""
    from llvmlite import ir

    from keomlir.backends.llvm import halfconv, toolchain
    from keomlir.backends.llvm.emitter import counted_loop

    module = ir.Module()
    i64, st = ir.IntType(64), halfconv.STORAGE[dtype]
    kinds = {"ext": (st, ir.FloatType(), lambda b, v: halfconv.extend(b, v, dtype, target)),
             "nar": (ir.FloatType(), st, lambda b, v: halfconv.narrow(b, v, dtype, target)),
             "odd": (ir.DoubleType(), st, lambda b, v: halfconv.narrow(b, halfconv.to_odd_float(b, v), dtype, target))}
    for name, (src, dst, convert) in kinds.items():
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [src.as_pointer(), dst.as_pointer(), i64]), name)
        b = ir.IRBuilder(fn.append_basic_block())
        with counted_loop(b, ir.Constant(i64, 0), fn.args[2], "k", 16) as k:  # 16 at a time: vectors
            p = b.bitcast(b.gep(fn.args[0], [k]), ir.VectorType(src, 16).as_pointer())
            q = b.bitcast(b.gep(fn.args[1], [k]), ir.VectorType(dst, 16).as_pointer())
            b.store(convert(b, b.load(p, align=2)), q, align=2)
        b.ret_void()
    tm = toolchain.target_machine(target)
    engine = toolchain.host_engine(tm.emit_object(toolchain.optimize(module, tm)))
    fn_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    fns = {name: fn_t(engine.get_function_address(name)) for name in kinds}

    def run(name, a, out_dtype):
        out = np.empty(len(a), out_dtype)
        fns[name](a.ctypes.data, out.ctypes.data, len(a))
        return out

    return engine, run


def _baseline(target):
    """`target` without F16C and AVX512 (x86-64's first instruction set): software conversions."""
    return dataclasses.replace(target, name="x86-64", cpu="x86-64", features="", required=(), vector_bits=128)


X86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host")


@X86
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("where", ["host", "x86-64"])
def test_conversions_are_exact_and_round_to_nearest_even(dtype, where, rng):
    """Every 16-bit pattern widens exactly; float32 (every half value, the midpoints between them and
    their neighbours, random bits) and float64 values (through float32 rounded to odd) are rounded to
    nearest even as torch rounds them: by instructions on the host where it has them, by integer code
    on x86-64 without F16C (no library call: the kernels are JIT-loaded)."""
    target = host() if where == "host" else _baseline(host())
    _engine, run = _conversions(dtype, target)
    bits = np.arange(65536, dtype=np.uint16)
    want = torch.from_numpy(bits.view(np.int16)).view(TORCH[dtype]).float().numpy()
    got = run("ext", bits, np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)].view(np.uint32), want[~np.isnan(want)].view(np.uint32))
    values = np.sort(want[np.isfinite(want)].astype(np.float64))
    mids = ((values[1:] + values[:-1]) / 2).astype(np.float32)  # (exact in float32)
    xs = np.concatenate([want, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
                         rng.integers(0, 2 ** 32, 2 ** 16, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    xs = xs[:len(xs) // 16 * 16]
    got = run("nar", xs, np.uint16)
    nan = np.isnan(xs)
    np.testing.assert_array_equal(got[~nan], _bits_of(xs[~nan], dtype))
    assert np.isnan(torch.from_numpy(got[nan].view(np.int16)).view(TORCH[dtype]).float().numpy()).all()
    # float64: one rounding (double rounding through float32 would miss the values beside the midpoints)
    mids64 = (values[1:] + values[:-1]) / 2
    ds = np.concatenate([mids64, np.nextafter(mids64, np.inf), np.nextafter(mids64, -np.inf),
                         rng.normal(size=4096) * 10.0 ** rng.integers(-45, 40, 4096)])
    ds = ds[:len(ds) // 16 * 16]
    np.testing.assert_array_equal(run("odd", ds, np.uint16), np.asarray(_half(ds, dtype)).view(np.uint16))


def test_float64_rounding_helper_is_one_rounding():
    """`rounded` (the reference backend's, and these tests', rounding) against exact midpoints."""
    for dtype in HALF:
        v = torch.arange(-2 ** 15, 2 ** 15 - 1, dtype=torch.int32).to(torch.int16).view(TORCH[dtype]).double().numpy()
        v = np.sort(v[np.isfinite(v)])
        mid = (v[1:] + v[:-1]) / 2
        up, down = np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf)
        for values, want in ((up, v[1:]), (down, v[:-1])):
            keep = np.isfinite(values)
            np.testing.assert_array_equal(float_values(_half(values[keep], dtype), dtype), want[keep])


# ---- every reduction, NumPy ------------------------------------------------------------------------

def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


# the reductions whose outputs are one of another's: the same, bit for bit
PART_OF = {"Min": ("Min_ArgMin", 0), "ArgMin": ("Min_ArgMin", 1), "Max": ("Max_ArgMax", 0),
           "ArgMax": ("Max_ArgMax", 1), "KMin": ("KMin_ArgKMin", 0), "ArgKMin": ("KMin_ArgKMin", 1)}


@pytest.mark.parametrize("dtype", _numpy_dtypes())
def test_every_reduction_is_the_float32_kernel_rounded_once(dtype):
    """Each reduction's outputs: within the bound of the float64 oracle, and bit for bit the float32
    kernel's results on the same values rounded to half (indices equal); Min, ArgKMin...: the
    outputs of Min_ArgMin, KMin_ArgKMin... (float16 only: bfloat16 differs in its conversions)."""
    x, y, b = _data(dtype)
    names = sorted(REDUCTIONS) if dtype == "float16" else sorted(set(REDUCTIONS) - set(PART_OF))
    got = {name: _outputs(_genred(name)(x, y, b)) for name in names}
    for name in names:
        if name in PART_OF:
            whole, k = PART_OF[name]
            np.testing.assert_array_equal(got[name][0], got[whole][k], err_msg=name)
            continue
        single = _outputs(_genred(name)(*(a.astype(np.float32) for a in (x, y, b))))
        assert len(got[name]) == len(single)
        for out, s in zip(got[name], single):
            if s.dtype == np.int64:
                np.testing.assert_array_equal(out, s, err_msg=name)
                continue
            assert out.dtype == numpy_dtype(dtype), name
            np.testing.assert_array_equal(np.asarray(out).view(np.uint16),
                                          np.asarray(_half(s.astype(np.float64), dtype)).view(np.uint16), err_msg=name)
            _within(out, _oracle(name, x, y, b), dtype)


def _oracle(name, x, y, b):
    """The exact float64 values of a reduction's float output, by dense NumPy (formulas above)."""
    x, y, b = (a.astype(np.float64) for a in (x, y, b))
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    if name == "Sum":
        return np.exp(-d2) @ b
    if name == "LogSumExp":
        m = (-d2).max(1, keepdims=True)
        return m + np.log(np.exp(-d2 - m).sum(1, keepdims=True))
    if name == "SumSoftMaxWeight":
        w = np.exp(-d2 - (-d2).max(1, keepdims=True))
        return (w @ b) / w.sum(1, keepdims=True)
    if name in ("Min", "Min_ArgMin"):
        return d2.min(1, keepdims=True)
    if name in ("Max", "Max_ArgMax"):
        return d2.max(1, keepdims=True)
    if name in ("KMin", "KMin_ArgKMin"):
        return np.sort(d2, 1)[:, :3]
    raise AssertionError(f"no oracle for {name}")


@pytest.mark.parametrize("dtype", _numpy_dtypes())
def test_axis_0_ranges_float64_sums_and_dask(dtype):
    """The Gaussian sum reduced over i, block-sparse, with float64 sums (the float64 total reaches
    float32 rounded to odd, then half: one rounding), and through keomlir.dask."""
    da = pytest.importorskip("dask.array")
    import keomlir.dask as kd
    from test_ranges import ranges_from_keep

    x, y, b = _data(dtype)
    exact = _oracle("Sum", x, y, b)
    swapped = kn.Genred(FORMULAS["Sum"], ["x = Vj(3)", "y = Vi(3)", "b = Vi(2)"], axis=0)
    _within(swapped(x, y, b), exact, dtype)
    acc64 = kn.Genred(FORMULAS["Sum"], ALIASES, axis=1, dtype_acc="float64")
    _within(acc64(x, y, b), exact, dtype)
    ranges = ranges_from_keep([[0, 20], [20, M]], [[0, 50], [50, N]], [[1, 0], [1, 1]])
    keep = np.zeros((M, N), bool)
    keep[:20, :50] = keep[20:, :] = True
    xf, yf, bf = (a.astype(np.float64) for a in (x, y, b))
    masked = np.where(keep, np.exp(-((xf[:, None] - yf[None]) ** 2).sum(-1)), 0) @ bf
    _within(acc64(x, y, b, ranges=ranges), masked, dtype)
    if dtype != "float16":  # (keomlir.dask runs the kernels of keomlir.numpy: once is enough)
        return
    dask_sum = kd.Genred(FORMULAS["Sum"], ALIASES, axis=1)
    got = dask_sum(da.from_array(x, chunks=(16, 3)), da.from_array(y, chunks=(30, 3)),
                   da.from_array(b, chunks=(30, 2))).compute()
    assert got.dtype == numpy_dtype(dtype)
    _within(got, exact, dtype)


# ---- torch: forward, autograd, LazyTensor, KernelSolve ---------------------------------------------

def _tensors(dtype, requires_grad=False, n=N):
    return [torch.from_numpy(np.asarray(a).view(np.int16)).view(TORCH[dtype]).requires_grad_(requires_grad)
            for a in _data(dtype, n=n)]


@pytest.mark.parametrize("dtype", HALF)
def test_torch_forward_and_gradients(dtype):
    """The Gaussian sum and its gradients in every argument (torch autograd through keomlir's
    backward reductions, themselves half kernels), and a LogSumExp's, against float64 autograd."""
    import keomlir.torch as kt

    x, y, b = _tensors(dtype, requires_grad=True)
    xs, ys, bs = (t.detach().double().requires_grad_() for t in (x, y, b))
    gauss = kt.Genred(FORMULAS["Sum"], ALIASES, axis=1)
    out = gauss(x, y, b)
    assert out.dtype == TORCH[dtype]
    exact = torch.exp(-((xs[:, None] - ys[None]) ** 2).sum(-1)) @ bs
    _within(out.detach().float().numpy(), exact.detach().numpy(), dtype)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    grads = torch.autograd.grad(out, (x, y, b), weights.to(TORCH[dtype]))
    exact_grads = torch.autograd.grad(exact, (xs, ys, bs), weights.to(TORCH[dtype]).double())
    for g, e in zip(grads, exact_grads):
        assert g.dtype == TORCH[dtype]
        # (x's and y's gradients: sums over their reduced index of terms in both; 2 U: the weights'
        # products are formed in float32 from half values, the sums rounded once)
        _within(g.float().numpy(), e.numpy(), dtype, factor=2)
    lse = kt.Genred("-SqDist(x,y)", ALIASES[:2], "LogSumExp", axis=1)(x, y)
    exact_lse = torch.logsumexp(-((xs[:, None] - ys[None]) ** 2).sum(-1), 1, keepdim=True)
    _within(lse.detach().float().numpy(), exact_lse.detach().numpy(), dtype)
    (gx,) = torch.autograd.grad(lse.sum(), x)
    (ex,) = torch.autograd.grad(exact_lse.sum(), xs)
    # (the backward's weights exp(F - lse) read the forward's half-rounded lse: |lse| U more of each)
    _within(gx.float().numpy(), ex.numpy(), dtype, factor=2 + exact_lse.abs().max().item())


@pytest.mark.parametrize("dtype", HALF)
def test_lazytensors_in_both_front_ends(dtype):
    """A LazyTensor Gaussian sum and K-nearest neighbours: torch tensors of `dtype` (differentiated),
    and NumPy arrays of it where NumPy has it."""
    import keomlir.torch as kt

    x, y, b = _tensors(dtype, requires_grad=True)
    xs, ys, bs = (t.detach().double().requires_grad_() for t in (x, y, b))
    d2 = ((kt.LazyTensor(x[:, None]) - kt.LazyTensor(y[None])) ** 2).sum(-1)
    out = (-d2).exp() @ b
    exact = torch.exp(-((xs[:, None] - ys[None]) ** 2).sum(-1)) @ bs
    _within(out.detach().float().numpy(), exact.detach().numpy(), dtype)
    (gy,) = torch.autograd.grad(out.sum(), y)
    (ey,) = torch.autograd.grad(exact.sum(), ys)
    _within(gy.float().numpy(), ey.numpy(), dtype, factor=2)
    knn = d2.argKmin(3, dim=1)
    dense = ((xs[:, None] - ys[None]) ** 2).sum(-1).detach()
    # the distances of the neighbours found: the 3 least, within the bound (ties at half precision)
    _within(dense.gather(1, knn).numpy().astype(np.float32), dense.sort(1).values[:, :3].numpy(), "float16")
    if dtype == "float16" or HAS_ML_DTYPES:
        xn, yn, bn = _data(dtype)
        lazy = (-((kn.LazyTensor(xn[:, None]) - kn.LazyTensor(yn[None])) ** 2).sum(-1)).exp() @ bn
        assert lazy.dtype == numpy_dtype(dtype)
        _within(lazy, _oracle("Sum", xn, yn, bn), dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_kernel_solve_iterates_in_float32(dtype):
    """(Id + K) a = b of half data: the conjugate gradient's kernel runs on float32 copies (p never
    rounded to half, which would stall it near half's precision), the solution rounded once.
    Bound: U |a| + 2^-14 max |a| (float32 iterations to eps = 1e-6 on a system of condition < 40)."""
    import keomlir.torch as kt

    x, _, b = _tensors(dtype, n=M)
    b = b[:, :1].clone().requires_grad_()
    solver = kt.KernelSolve("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "b", axis=1)
    a = solver(x, x, b, alpha=1.0)
    assert a.dtype == TORCH[dtype]
    xs = x.double()
    kernel = torch.exp(-((xs[:, None] - xs[None]) ** 2).sum(-1)) + torch.eye(M, dtype=torch.float64)
    exact = torch.linalg.solve(kernel, b.detach().double()).numpy()
    err = np.abs(a.detach().double().numpy() - exact)
    assert np.all(err <= U[dtype] * np.abs(exact) + 2.0 ** -14 * np.abs(exact).max())
    (gb,) = torch.autograd.grad(a.sum(), b)  # (Id + K)^-1 1, K symmetric
    exact_gb = torch.linalg.solve(kernel, torch.ones(M, 1, dtype=torch.float64)).numpy()
    assert gb.dtype == TORCH[dtype]
    assert np.all(np.abs(gb.double().numpy() - exact_gb) <= U[dtype] * np.abs(exact_gb) + 2.0 ** -14)
    if dtype == "float16" or HAS_ML_DTYPES:
        xn, _, bn = _data(dtype, n=M)
        an = kn.KernelSolve("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "b", axis=1)(
            xn, xn, np.ascontiguousarray(bn[:, :1]), alpha=1.0)
        assert an.dtype == numpy_dtype(dtype)
        err = np.abs(float_values(an, dtype) - exact)
        assert np.all(err <= U[dtype] * np.abs(exact) + 2.0 ** -14 * np.abs(exact).max())


# ---- code generation ----------------------------------------------------------------------------------

def test_the_cache_key_and_schedule_name_the_dtype():
    """float16, bfloat16 and float32 kernels of one program are three kernels, in memory and on disk."""
    g = _genred("Sum")
    kernels = {d: g.reduction.kernel(d) for d in ("float16", "bfloat16", "float32")}
    assert len({id(k) for k in kernels.values()}) == 3
    assert len({k.stats["key"] for k in kernels.values()}) == 3
    for d, k in kernels.items():
        assert f"dtype={d}" in k.stats["key"] and k.schedule.dtype == d
        assert k.schedule.lanes == k.schedule.vector_bits // 32  # (float32 arithmetic)
    assert cache.kernel_key(g.reduction.program, "t", dtype="float16") != \
        cache.kernel_key(g.reduction.program, "t", dtype="bfloat16")


@X86
@pytest.mark.parametrize("dtype", HALF)
def test_kernels_without_conversion_instructions(dtype):
    """A whole kernel compiled for x86-64 without F16C (software conversions, no library call) and
    run on this machine: within the bound of the oracle."""
    g = _genred("Sum")
    red = g.reduction
    target = _baseline(host())
    sched = schedule(red.program, target, dtype=dtype)
    obj, _ = cpu._build(red.program, dtype, red.acc_dtype(dtype), red.sum_scheme, "kernel", sched)
    kernel = cpu.CpuKernel(obj, {}, None, sched)
    x, y, b = _data(dtype)
    out = cpu.run(red.launch([x, y, b]), [x, y, b], kernel)[0]
    _within(out, _oracle("Sum", x, y, b), dtype)


@pytest.mark.parametrize("target, instructions", [
    ("znver4", {"float16": ["vcvtph2ps", "vcvtps2ph"], "bfloat16": ["vpslld"]}),
    ("x86-64-v3", {"float16": ["vcvtph2ps", "vcvtps2ph"], "bfloat16": ["vpslld"]}),
    ("neoverse-v1", {"float16": ["fcvtl", "fcvt\t"], "bfloat16": ["shll", "bfcvt"]}),
])
def test_assembly_converts_with_instructions(target, instructions):
    """`keomlir ir --emit asm --target T` of half data: F16C / AArch64 conversions, bfloat16 widened by a
    shift, and no call (LLVM's library conversions would not link in a JIT-loaded kernel)."""
    import re

    from keomlir.explain import explain

    for dtype, expected in instructions.items():
        asm = explain(FORMULAS["Sum"], ALIASES, dtype=dtype, emit="asm", target=target).outputs["asm"]
        for name in expected:
            assert name in asm, (target, dtype, name)
        assert not re.search(r"\bcall[q]?\s|\bbl\s+[_a-zA-Z]", asm), (target, dtype)


def test_loop_nests_of_wide_variables(rng):
    """float16 data in the contraction micro-kernel (a Gaussian of D = 20), the screened K-min and the
    column micro-kernel (b of 40 columns): within the bound of the oracle."""
    dtype = "float16"
    x, y = (_half(rng.normal(size=(n, 20)) * 0.3, dtype) for n in (M, N))
    b = _half(rng.normal(size=(N, 40)), dtype)
    xf, yf, bf = (a.astype(np.float64) for a in (x, y, b))
    d2 = ((xf[:, None] - yf[None]) ** 2).sum(-1)
    wide = ["x = Vi(20)", "y = Vj(20)"]
    sums = {"contraction": (kn.Genred(FORMULAS["Sum"], wide + ["b = Vj(1)"], axis=1), (x, y, b[:, :1]),
                            np.exp(-d2) @ bf[:, :1]),
            "columns": (kn.Genred(FORMULAS["Sum"], ["x = Vi(3)", "y = Vj(3)", "b = Vj(40)"], axis=1),
                        (x[:, :3], y[:, :3], b), np.exp(-((xf[:, None, :3] - yf[None, :, :3]) ** 2).sum(-1)) @ bf)}
    for strategy, (g, args, exact) in sums.items():
        assert g.reduction.kernel(dtype, (M, N)).schedule.strategy == strategy
        _within(g(*args), exact, dtype)
    knn = kn.Genred("SqDist(x,y)", wide, "KMin_ArgKMin", axis=1, opt_arg=4)
    assert knn.reduction.kernel(dtype, (M, N)).schedule.strategy == "screened"
    values, indices = knn(x, y)
    _within(values, np.sort(d2, 1)[:, :4], dtype)
    np.testing.assert_array_equal(np.take_along_axis(d2, indices, 1), np.sort(d2, 1)[:, :4])


@pytest.mark.slow
def test_torch_bfloat16_without_ml_dtypes():
    """Without ml_dtypes (no JAX), torch.bfloat16 runs through NumPy uint16 arrays of its bits."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["ml_dtypes"] = None  # (an import of it fails)
import numpy as np, torch
import keomlir.torch as kt
from keomlir.backends.launch import numpy_dtype
assert numpy_dtype("bfloat16") == np.uint16
torch.manual_seed(0)
x, y = torch.randn(50, 3, dtype=torch.bfloat16, requires_grad=True), torch.randn(70, 3, dtype=torch.bfloat16)
b = torch.rand(70, 1, dtype=torch.bfloat16)
out = kt.Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)(x, y, b)
ref = kt.Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)(
    x.float(), y.float(), b.float()).to(torch.bfloat16)
assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
(g,) = torch.autograd.grad(out.sum(), x)
assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
