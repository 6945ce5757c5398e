"""Check the GPU backend on a real GPU, against the CPU backend, and print a table.

    python bench/gpu_check.py [--quick] [--fast-math]
    python bench/gpu_check.py --simulate   # the same checks, small, on the host simulator (no GPU)

Covers: every reduction on both axes, float32 and float64, odd sizes that no
tile divides, the 1-D and the 2-D scheme (forced, and as 'auto' picks); the
large-dimension paths (j tiles of fewer rows than threads, no staging); wide
formulas (loops over components, wide Sum states in local memory: W = 17 ... 1024);
float16 and bfloat16 (half data, float32 arithmetic, against the float32 CPU result on
the same inputs; bfloat16 where ml_dtypes gives NumPy one); block-sparse reductions
(`ranges`, the keomlir_ranges kernel, and torch
gradients through it); gradients (torch autograd on CUDA tensors against torch
on CPU tensors, first and second order); torch CUDA tensors in and out (device,
dtype, no copy of contiguous inputs, torch's current stream).  Exit status 0
when every row passes, 1 otherwise, 2 without a usable GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keomlir.backends import cuda  # noqa: E402
from keomlir.backends.launch import numpy_dtype, rounded  # noqa: E402
from keomlir.compile import CompiledReduction  # noqa: E402
from keomlir.numpy.cluster import from_matrix  # noqa: E402

ALIASES = {1: ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], 0: ["x = Vj(3)", "y = Vi(3)", "b = Vi(2)"]}
REDUCTIONS = [  # (name, formula, formula2, K)
    ("Sum", "Exp(-SqDist(x,y)) * b", None, None),
    ("LogSumExp", "-SqDist(x,y) + Sum(b)", None, None),
    ("LogSumExp", "-SqDist(x,y)", "b", None),
    ("SumSoftMaxWeight", "-SqDist(x,y)", "b", None),
    ("Min", "x - y", None, None), ("Max", "x - y", None, None),
    ("ArgMin", "x - y", None, None), ("ArgMax", "x - y", None, None),
    ("Min_ArgMin", "x - y", None, None), ("Max_ArgMax", "x - y", None, None),
    ("KMin", "SqDist(x,y)", None, 5), ("ArgKMin", "x - y", None, 3), ("KMin_ArgKMin", "SqDist(x,y)", None, 10),
]
MATH = "Sin(Sum(x)) * Cos(Sum(y)) + Log(1 + Exp(Sum(b))) + Atan2(Sum(x), Sum(y)) + Sqrt(SqNorm2(x - y)) " \
       "+ Powf(1 + Square(Sum(b)), IntInv(3)) + Asin(Sin(Sum(x))) + Acos(Cos(Sum(y)))"
TOL = {"float16": 2e-3, "bfloat16": 1.6e-2, "float32": 2e-4, "float64": 1e-10}
# half data: bfloat16 where NumPy has it (ml_dtypes)
HALF = ("float16",) + (("bfloat16",) if numpy_dtype("bfloat16").kind != "u" else ())
DTYPES = ("float32", "float64") + HALF
WIDE = [  # (label, formula, aliases for a width w): dimensions above WIDE_THRESHOLD, loops over components
    ("wide Sum state", "Exp(-SqDist(x,y)) * b", lambda w: ["x = Vi(3)", "y = Vj(3)", f"b = Vj({w})"]),
    ("wide SqDist, Scalprod", "Exp(-SqDist(x,y)) * b + Exp((x|y)) * b",
     lambda w: [f"x = Vi({w})", f"y = Vj({w})", "b = Vj(2)"]),
    ("wide x, y, b", "Exp(-SqDist(x,y)) * b", lambda w: [f"x = Vi({w})", f"y = Vj({w})", f"b = Vj({w})"]),
    ("wide gradient", "Grad(Exp(-SqDist(x,y)) * b, x, e)",
     lambda w: [f"x = Vi({w})", f"y = Vj({w})", "b = Vj(1)", "e = Vi(1)"]),
]

rows = []


def record(case, dtype, scheme, err, ok, seconds, note=""):
    rows.append((case, dtype, scheme, err, ok, seconds, note))
    mark = "ok" if ok else "FAIL"
    print(f"{case:<42} {dtype:<8} {scheme:<5} {err:>10.3g} {mark:<5} {seconds:8.3f}s {note}", flush=True)


def max_error(got, want, dtype):
    """0 when equal; the largest error relative to the scale of `want` (indices: mismatches)."""
    worst = 0.0
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return float("inf")
        if w.dtype == np.int64:
            worst = max(worst, float(np.count_nonzero(g != w)))
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        same = (g64 == w64) | (np.isnan(g64) & np.isnan(w64))
        scale = np.maximum(np.abs(w64), 1.0)
        with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
            diff = np.where(same, 0.0, np.abs(g64 - w64) / scale)
        worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)))
    return worst


def check_reductions(rng, quick):
    sizes = [(1001, 2003), (37, 100003)] if not quick else [(1001, 2003)]
    if SIMULATE:
        sizes = [(37, 101)]
    for name, formula, formula2, k in REDUCTIONS:
        for axis in (1, 0):
            r = CompiledReduction(formula, ALIASES[axis], name, axis, k, formula2)
            label = f"{name}{'+G' if formula2 else ''} axis={axis}"
            for dtype in DTYPES:
                for m, n in sizes:
                    args = [rounded(rng.standard_normal(s), dtype) for s in [(m, 3), (n, 3), (n, 2)]]
                    # half data: against the float32 CPU result on the same (half) inputs
                    want = r.run_numpy([a.astype(np.float32) if dtype in HALF else a for a in args], "CPU")
                    for scheme in ("auto", "1d", "2d"):
                        t0 = time.perf_counter()
                        try:
                            got = cuda.run_numpy(r.launch(args), args, scheme=scheme)
                            err = max_error(got, want, dtype)
                            # indices may differ on float32 near-ties: count them, allow a few
                            # indices: exact in float64 and float16 (float32 arithmetic on the same
                            # inputs as the CPU: a mismatch counts 1, above the values' tolerance)
                            ok = err <= (TOL[dtype] if not any(o.dtype == np.int64 for o in want) else
                                         {"float64": 0, "float32": 3}.get(dtype, TOL[dtype]))
                            record(f"{label} {m}x{n}", dtype, scheme, err, ok, time.perf_counter() - t0)
                        except Exception as e:  # noqa: BLE001 - every failure is a row
                            record(f"{label} {m}x{n}", dtype, scheme, float("nan"), False,
                                   time.perf_counter() - t0, f"{type(e).__name__}: {e}")


def check_special(rng):
    for dtype in ("float32", "float64"):
        cases = [
            ("math functions", CompiledReduction(MATH, ALIASES[1], "Sum", 1), [(517, 3), (1029, 3), (1029, 2)]),
            ("large dimension (tiles < block)",
             CompiledReduction("Exp(-SqDist(x,y) / 100) * b", ["x = Vi(400)", "y = Vj(400)", "b = Vj(2)"],
                               "Sum", 1),
             [(301, 400), (777, 400), (777, 2)]),
            ("large dimension (no staging)",  # one j row above 48 KiB of shared memory
             CompiledReduction("Exp(-SqDist(x,y) / 10000) * b", ["x = Vi(12289)", "y = Vj(12289)", "b = Vj(1)"],
                               "Sum", 1),
             [(301, 12289), (777, 12289), (777, 1)]),
            ("parameters", CompiledReduction("Exp(-SqNorm2(x - p)) * y", ["x = Vi(2)", "p = Pm(2)", "y = Vj(1)"],
                                             "Sum", 1), [(99, 2), (2,), (1001, 1)]),
            ("empty j range", CompiledReduction("x - y", ["x = Vi(3)", "y = Vj(3)"], "Min", 1), [(10, 3), (0, 3)]),
        ]
        for label, r, shapes in cases:
            args = [rng.standard_normal(s).astype(dtype) for s in shapes]
            want = r.run_numpy(args, "CPU")
            for scheme in ("1d", "2d"):
                t0 = time.perf_counter()
                try:
                    got = cuda.run_numpy(r.launch(args), args, scheme=scheme)
                    err = max_error(got, want, dtype)
                    record(label, dtype, scheme, err, err <= TOL[dtype] * (10 if "math" in label else 1),
                           time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    record(label, dtype, scheme, float("nan"), False, time.perf_counter() - t0,
                           f"{type(e).__name__}: {e}")


def check_wide(rng, widths):
    """The WIDE formulas against the CPU backend (its own loops over components)."""
    m, n = (13, 29) if SIMULATE else (1001, 2003)
    for label, formula, aliases in WIDE:
        for w in widths:
            r = CompiledReduction(formula, aliases(w), "Sum", 1)
            for dtype in DTYPES:
                args = [rounded(rng.standard_normal((m if cat == 0 else n, d)) / (np.sqrt(d) if d > 2 else 1), dtype)
                        for _, d, cat in sorted(r.program.arguments)]
                want = r.run_numpy([a.astype(np.float32) if dtype in HALF else a for a in args], "CPU")
                for scheme in ("1d", "2d"):
                    t0 = time.perf_counter()
                    try:
                        got = cuda.run_numpy(r.launch(args), args, scheme=scheme)
                        err = max_error(got, want, dtype)
                        record(f"{label} W={w} {m}x{n}", dtype, scheme, err, err <= TOL[dtype],
                               time.perf_counter() - t0)
                    except Exception as e:  # noqa: BLE001
                        record(f"{label} W={w} {m}x{n}", dtype, scheme, float("nan"), False,
                               time.perf_counter() - t0, f"{type(e).__name__}: {e}")


def block_ranges(m, n, rng, size=97):
    """A block-sparse 6-tuple (keomlir.numpy.cluster.from_matrix): blocks of `size` rows and
    columns (the last ones ragged), about half of the block pairs kept, one block of rows
    with none."""

    def cuts(k):
        return np.array([[a, min(a + size, k)] for a in range(0, k, size)])

    bi, bj = cuts(m), cuts(n)
    keep = rng.random((len(bi), len(bj))) < 0.5
    keep[min(1, len(bi) - 1)] = False
    return from_matrix(bi, bj, keep)


def check_block_sparse(rng, quick):
    m, n = (37, 101) if SIMULATE else (3001, 5003)
    for name, formula, formula2, k in REDUCTIONS[:5] + REDUCTIONS[-1:]:
        for axis in (1, 0):
            r = CompiledReduction(formula, ALIASES[axis], name, axis, k, formula2)
            for dtype in ("float32", "float64"):
                args = [rng.standard_normal(s).astype(dtype) for s in [(m, 3), (n, 3), (n, 2)]]
                _, n_i, n_j = r.check_arrays(args)
                users = (n_i, n_j) if axis == 1 else (n_j, n_i)
                ranges = block_ranges(*users, rng, size=7 if SIMULATE else 97)
                label = f"ranges {name}{'+G' if formula2 else ''} axis={axis}"
                t0 = time.perf_counter()
                try:
                    want = r.run_numpy(args, "CPU", ranges=ranges)
                    got = cuda.run_numpy(r.launch(args, ranges), args)
                    err = max_error(got, want, dtype)
                    ok = err <= (TOL[dtype] if not any(o.dtype == np.int64 for o in want) else
                                 (0 if dtype == "float64" else 3))
                    record(label, dtype, "rng", err, ok, time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    record(label, dtype, "rng", float("nan"), False, time.perf_counter() - t0,
                           f"{type(e).__name__}: {e}")


def check_torch(quick):
    try:
        import torch
    except ImportError:
        print("torch is not installed: torch checks skipped")
        return
    if not torch.cuda.is_available():
        print("torch has no CUDA: torch checks skipped")
        return
    from keomlir.torch import Genred

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).replace("torch.", "")
        for name, formula, formula2, k in [("Sum", "Exp(-SqDist(x,y)) * b", None, None),
                                           ("LogSumExp", "-SqDist(x,y)", None, None),
                                           ("LogSumExp", "-SqDist(x,y)", "b", None),
                                           ("SumSoftMaxWeight", "-SqDist(x,y)", "b", None),
                                           ("Min", "x - y", None, None), ("KMin", "SqDist(x,y)", None, 4)]:
            for axis in (1, 0):
                label = f"torch grad {name}{'+G' if formula2 else ''} axis={axis}"
                t0 = time.perf_counter()
                try:
                    g = Genred(formula, ALIASES[axis], name, axis, opt_arg=k, formula2=formula2)
                    cpu = [torch.randn(*s, dtype=dtype) for s in [(301, 3), (517, 3), (517, 2)]]
                    for t in cpu:
                        t.requires_grad_(True)
                    gpu = [t.detach().cuda().requires_grad_(True) for t in cpu]
                    out_c, out_g = g(*cpu), g(*gpu)
                    assert out_g.is_cuda and out_g.dtype == dtype, (out_g.device, out_g.dtype)
                    w = torch.randn_like(out_c)
                    grads_c = torch.autograd.grad((out_c * w).sum(), cpu)
                    grads_g = torch.autograd.grad((out_g * w.cuda()).sum(), gpu)
                    assert all(gg.is_cuda for gg in grads_g)
                    err = max_error([out_g.detach().cpu().numpy()] + [x.cpu().numpy() for x in grads_g],
                                    [out_c.detach().numpy()] + [x.numpy() for x in grads_c], dname)
                    record(label, dname, "auto", err, err <= TOL[dname] * 10, time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    record(label, dname, "auto", float("nan"), False, time.perf_counter() - t0,
                           f"{type(e).__name__}: {e}")
        t0 = time.perf_counter()
        try:  # block-sparse: the forward and the gradients of i- and j-variables use the two halves
            g = Genred("Exp(-SqDist(x,y)) * b", ALIASES[1], "Sum", 1)
            cpu = [torch.randn(*s, dtype=dtype, requires_grad=True) for s in [(1001, 3), (2003, 3), (2003, 2)]]
            gpu = [t.detach().cuda().requires_grad_(True) for t in cpu]
            ranges = block_ranges(1001, 2003, np.random.default_rng(1))
            out_c, out_g = g(*cpu, ranges=ranges), g(*gpu, ranges=ranges)
            w = torch.randn_like(out_c)
            grads_c = torch.autograd.grad((out_c * w).sum(), cpu)
            grads_g = torch.autograd.grad((out_g * w.cuda()).sum(), gpu)
            err = max_error([out_g.detach().cpu().numpy()] + [x.cpu().numpy() for x in grads_g],
                            [out_c.detach().numpy()] + [x.numpy() for x in grads_c], dname)
            record("torch grad Sum with ranges", dname, "rng", err, err <= TOL[dname] * 10, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            record("torch grad Sum with ranges", dname, "rng", float("nan"), False, time.perf_counter() - t0,
                   f"{type(e).__name__}: {e}")
        # second order, in place, streams
        t0 = time.perf_counter()
        try:
            g = Genred("Exp(-SqDist(x,y)) * b", ALIASES[1], "Sum", 1)
            x = torch.randn(203, 3, dtype=dtype, device="cuda", requires_grad=True)
            y, b = torch.randn(401, 3, dtype=dtype, device="cuda"), torch.randn(401, 2, dtype=dtype, device="cuda")
            xc = x.detach().cpu().requires_grad_(True)
            (gx,) = torch.autograd.grad(g(x, y, b).square().sum(), [x], create_graph=True)
            (hx,) = torch.autograd.grad(gx.sum(), [x])
            (gxc,) = torch.autograd.grad(g(xc, y.cpu(), b.cpu()).square().sum(), [xc], create_graph=True)
            (hxc,) = torch.autograd.grad(gxc.sum(), [xc])
            err = max_error([hx.cpu().numpy()], [hxc.numpy()], dname)
            record("torch second order", dname, "auto", err, err <= TOL[dname] * 10, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            record("torch second order", dname, "auto", float("nan"), False, time.perf_counter() - t0,
                   f"{type(e).__name__}: {e}")
        t0 = time.perf_counter()
        try:
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                x = torch.randn(100003, 3, dtype=dtype, device="cuda")
                out = g(x, x, x[:, :2])
            s.synchronize()
            want = g(x.cpu(), x.cpu(), x[:, :2].cpu())
            err = max_error([out.cpu().numpy()], [want.numpy()], dname)
            record("torch on a side stream", dname, "auto", err, err <= TOL[dname] * 10, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001
            record("torch on a side stream", dname, "auto", float("nan"), False, time.perf_counter() - t0,
                   f"{type(e).__name__}: {e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one size per case, no 2-D sizes")
    parser.add_argument("--fast-math", action="store_true", help="float32 exp/log through ex2/lg2.approx")
    parser.add_argument("--simulate", action="store_true",
                        help="no GPU: run the kernels in the host simulator on small sizes (checks this script)")
    args = parser.parse_args(argv)
    if args.simulate:
        return simulate_main()
    if not cuda.available():
        print(f"gpu_check: no usable GPU: {cuda.unavailable_reason()}", file=sys.stderr)
        return 2
    cuda.runner.FAST_MATH = args.fast_math
    dev = cuda.device(0)
    print(f"GPU: {dev.name}, compute capability {dev.cc[0]}.{dev.cc[1]} ({dev.arch}), {dev.sm_count} SMs; "
          f"fast math {'on' if args.fast_math else 'off'}")
    print(f"{'case':<42} {'dtype':<8} {'plan':<5} {'max err':>10} {'':<5} {'time':>9}")
    rng = np.random.default_rng(0)
    try:
        check_reductions(rng, args.quick)
        check_special(rng)
        check_wide(rng, (17, 64) if args.quick else (17, 64, 300, 1024))
        check_block_sparse(rng, args.quick)
        check_torch(args.quick)
    except Exception:  # an error outside a case: say where
        traceback.print_exc()
        return 1
    failed = [r for r in rows if not r[4]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed")
    for r in failed:
        print(f"FAILED: {r[0]} {r[1]} {r[2]} {r[6]}")
    return 1 if failed else 0


SIMULATE = False


def simulate_main():
    """The reduction, block-sparse and wide checks through cuda.simulate (8 threads a block, small chunks)."""
    global SIMULATE
    SIMULATE = True

    def run_numpy(launch, args, device_id=-1, scheme="auto"):
        return cuda.simulate(launch, args, block=8, scheme="2d" if scheme == "2d" else "1d", chunk=16, fan=3)

    cuda.run_numpy = run_numpy
    print("host simulator (no GPU): reductions, block-sparse and wide formulas, small sizes")
    check_reductions(np.random.default_rng(0), True)
    check_block_sparse(np.random.default_rng(0), True)
    check_wide(np.random.default_rng(0), (17, 300))
    failed = [r for r in rows if not r[4]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
