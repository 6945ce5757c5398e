"""GPU speed, keomlir against pykeops, side by side in one run; writes bench/gpu_results.md.

    python bench/gpu_bench.py [--repeat 5] [--out bench/gpu_results.md] [--no-pykeops]

Cases (float32, torch CUDA tensors, times are medians of alternating runs after
a warm-up call that compiles):
  gauss      a_i = sum_j exp(-|x_i - y_j|^2) b_j, D = 3, M = N = 1e6
  gauss grad its gradient in x (the backward kernel keomlir's autodiff builds)
  argkmin    the K = 10 nearest y_j of every x_i, D = 3, M = N = 1e6
  gauss 2-D  the Gaussian sum with M = 100, N = 1e7 (keomlir's 2-D scheme)
For the Gaussian sum it also reports the fraction of the GPU's FP32 issue rate
(instructions of the inner loop, counted in the PTX, per pair) and of its exp
rate (one MUFU ex2 per pair, 16 per SM per clock) that keomlir reaches.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keomlir.backends import cuda  # noqa: E402
from keomlir.backends.llvm.nvptx import render_ptx  # noqa: E402
from keomlir.compile import CompiledReduction  # noqa: E402

FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
                     (10, 0): 128, (12, 0): 128}
MUFU_PER_SM = 16
_CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13  # kHz


def inner_loop_stats(ptx, j_row):
    """(instructions, float32 instructions, MUFU instructions) per pair in keomlir_1d's
    inner j loop: the basic block with the most shared-memory loads, divided by the
    pairs it handles (LLVM may unroll: its shared words loaded / `j_row`, the words of
    one j row)."""
    body = ptx.split(".entry keomlir_1d(", 1)[1].split(".entry ", 1)[0]
    blocks = re.split(r"\n\$L__BB\d+_\d+:", body)

    def shared_words(blk):
        return sum(int(m.group(1) or 1) for m in re.finditer(r"ld\.shared(?:\.v(\d))?", blk))

    best = max(blocks, key=shared_words)
    pairs = max(1, shared_words(best) // j_row)
    instrs = [ln.strip() for ln in best.splitlines()
              if ln.strip().endswith(";") and not ln.strip().startswith((".", "//"))]
    fp32 = [i for i in instrs if ".f32" in i.split()[0]]
    mufu = [i for i in instrs if re.match(r"(ex2|lg2|sin|cos|rsqrt|rcp)\.approx", i)]
    return len(instrs) / pairs, len(fp32) / pairs, len(mufu) / pairs


def timed(fn, repeat, sync):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_results.md"))
    parser.add_argument("--no-pykeops", action="store_true")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (e.g. 0.1 for a quick run)")
    args = parser.parse_args(argv)
    if not cuda.available():
        print(f"gpu_bench: no usable GPU: {cuda.unavailable_reason()}", file=sys.stderr)
        return 2
    import torch

    from keomlir.torch import Genred as KGenred

    pk = None
    if not args.no_pykeops:
        try:
            import pykeops.torch as pk  # noqa: F811
        except Exception as e:  # noqa: BLE001 - any failure: keomlir alone
            print(f"pykeops unavailable: {type(e).__name__}: {e}")
    dev = cuda.device(0)
    clock_hz = dev.attribute(_CU_DEVICE_ATTRIBUTE_CLOCK_RATE) * 1e3
    sync = torch.cuda.synchronize
    torch.manual_seed(0)
    s = args.scale
    M = N = int(1e6 * s)
    cases = []
    gauss = ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", None)

    def data(m, n):
        return (torch.randn(m, 3, device="cuda") * 0.5, torch.randn(n, 3, device="cuda") * 0.5,
                torch.randn(n, 1, device="cuda"))

    cases.append(("gauss", gauss, data(M, N), False))
    cases.append(("gauss grad", gauss, data(M, N), True))
    cases.append(("argkmin K=10", ("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", 10), data(M, N)[:2], False))
    cases.append(("gauss 2-D M=100 N=1e7", gauss, data(100, int(1e7 * s)), False))
    rows = []
    for label, (formula, aliases, red, k), tensors, grad in cases:
        m, n = tensors[0].shape[0], tensors[1].shape[0]
        res = {}
        for lib_name, G in [("keomlir", KGenred)] + ([("pykeops", pk.Genred)] if pk is not None else []):
            try:
                g = G(formula, aliases, reduction_op=red, axis=1, opt_arg=k) if k else \
                    G(formula, aliases, reduction_op=red, axis=1)
                if grad:
                    x = tensors[0].clone().requires_grad_(True)
                    rest = tensors[1:]

                    def run(g=g, x=x, rest=rest):
                        out = g(x, *rest)
                        torch.autograd.grad(out.sum(), [x])
                else:
                    def run(g=g):
                        g(*tensors)
                t0 = time.perf_counter()
                run()
                sync()
                first = time.perf_counter() - t0
                res[lib_name] = (timed(run, args.repeat, sync), first)
            except Exception as e:  # noqa: BLE001
                res[lib_name] = (float("nan"), float("nan"))
                print(f"{label} {lib_name}: {type(e).__name__}: {e}")
        rows.append((label, m, n, res))
        print(label, {k: f"{v[0] * 1e3:.2f} ms (first call {v[1]:.2f} s)" for k, v in res.items()}, flush=True)

    # the Gaussian sum's share of the GPU's throughput
    r = CompiledReduction(gauss[0], gauss[1], "Sum", 1)
    ptx = render_ptx(r.program, "float32", dev.arch, fast_math=cuda.runner.FAST_MATH)
    n_instr, n_fp32, n_mufu = inner_loop_stats(ptx, 4)
    t_gauss = rows[0][3]["keomlir"][0]
    pairs_per_s = rows[0][1] * rows[0][2] / t_gauss
    lanes = FP32_LANES_PER_SM.get(dev.cc, 128)
    issue_peak = dev.sm_count * lanes * clock_hz  # fp32 instructions per second
    mufu_peak = dev.sm_count * MUFU_PER_SM * clock_hz
    lines = [f"# GPU benchmark: {dev.name} (compute capability {dev.cc[0]}.{dev.cc[1]}, {dev.sm_count} SMs, "
             f"{clock_hz / 1e9:.2f} GHz)", "",
             "float32, torch CUDA tensors; median of alternating runs after a compiling first call.", "",
             "| case | M | N | keomlir (ms) | pykeops (ms) | speed-up | first call keomlir / pykeops (s) |",
             "|---|---|---|---|---|---|---|"]
    for label, m, n, res in rows:
        kt, kf = res.get("keomlir", (float("nan"),) * 2)
        pt, pf = res.get("pykeops", (float("nan"),) * 2)
        lines.append(f"| {label} | {m:.0e} | {n:.0e} | {kt * 1e3:.2f} | {pt * 1e3:.2f} | {pt / kt:.2f}x | "
                     f"{kf:.2f} / {pf:.2f} |")
    lines += ["", f"Gaussian sum: {pairs_per_s / 1e9:.1f} G pairs/s; inner loop {n_instr:.1f} PTX instructions per "
                  f"pair ({n_fp32:.1f} float32, {n_mufu:.1f} MUFU).",
              f"- float32 issue rate reached: {pairs_per_s * n_fp32 / issue_peak:.1%} of {issue_peak / 1e12:.1f} T "
              f"instructions/s ({lanes} lanes x {dev.sm_count} SMs x clock)",
              f"- exp rate: {pairs_per_s / mufu_peak:.1%} of the MUFU ex2 peak {mufu_peak / 1e12:.2f} T/s "
              f"(keomlir's accurate exp is FMA polynomial code, not MUFU; KEOMLIR_GPU_FAST_MATH=1 uses ex2.approx)"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
