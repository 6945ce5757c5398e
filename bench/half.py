"""Half precision on the CPU: the Gaussian sum at D = 128 and ArgKMin at D = 64 with float16 and
bfloat16 inputs against float32, side by side in one run (the dtypes alternate: A B C A B C ...).

Half data is read in 16 bits and computed in float32 (keomlir/backends/llvm/halfconv.py): the
inputs' bytes halve.  Times are CPU seconds of one thread (time.process_time, medians), which
the load of other processes on the machine disturbs less than wall time; the accuracy column is
the largest error of 256 rows against float64 NumPy on the same (half-rounded) inputs, over the
largest value (Gaussian sum), or the share of neighbours whose distance is not among the K
least (ArgKMin).  bfloat16 needs ml_dtypes (installed with JAX).

    PYTHONPATH=$PWD python bench/half.py [--quick] [--write]   # --write: rows appended to bench/results.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ["KEOMLIR_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keomlir.backends.launch import float_values, rounded  # noqa: E402
from keomlir.numpy import Genred  # noqa: E402
from keomlir.schedule import host  # noqa: E402

DTYPES = ("float32", "float16", "bfloat16")
K = 10


def cases(quick):
    n = 4000 if quick else 20000
    gauss = ("Gaussian sum", 128, n, Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(128)", "y = Vj(128)", "b = Vj(1)"],
                                             "Sum", axis=1))
    knn = (f"ArgKMin K={K}", 64, n, Genred("SqDist(x,y)", ["x = Vi(64)", "y = Vj(64)"], "ArgKMin", axis=1,
                                            opt_arg=K))
    return [gauss, knn]


def inputs(d, n, dtype, rng_seed=0):
    """x (n, d), y (n, d) of norm about 1, b (n, 1), rounded once to `dtype`."""
    rng = np.random.default_rng(rng_seed)
    x, y = (rng.standard_normal((n, d)) / np.sqrt(d) for _ in range(2))
    b = rng.standard_normal((n, 1))
    return [rounded(a, dtype) for a in (x, y, b)]


def accuracy(name, args, out, dtype):
    """The largest error of the first 256 rows against float64 NumPy, over the largest value; ArgKMin:
    the share of neighbours found whose distance is not among the K least."""
    x, y, b = (float_values(a, dtype) for a in args)
    d2 = ((x[:256, None] - y[None]) ** 2).sum(-1)
    if name == "Gaussian sum":
        exact = np.exp(-d2) @ b
        return float(np.abs(float_values(out[:256], dtype) - exact).max() / np.abs(exact).max())
    kth = np.sort(d2, 1)[:, K - 1:K]
    return float((np.take_along_axis(d2, out[:256], 1) > kth).mean())


def measure(quick, repeat):
    rows = []
    for name, d, n, g in cases(quick):
        data = {dt: inputs(d, n, dt) for dt in DTYPES}
        calls = {dt: (lambda a=data[dt]: g(*a[:len(g.reduction.arguments)])) for dt in DTYPES}
        outs = {dt: f() for dt, f in calls.items()}  # (compiled here, not timed)
        times = {dt: [] for dt in DTYPES}
        for _ in range(repeat):
            for dt, f in calls.items():
                t = time.process_time()
                f()
                times[dt].append(time.process_time() - t)
        for dt in DTYPES:
            s = statistics.median(times[dt])
            args = data[dt][:len(g.reduction.arguments)]
            rows.append((f"{name}, D={d}, M=N={n}", dt, s, n * n / s / 1e9, sum(a.nbytes for a in args),
                         accuracy(name, data[dt], outs[dt], dt), times["float32"]))
    return rows


def table(rows, load):
    lines = [f"Half precision inputs (bench/half.py): one thread's CPU time, medians of {REPEAT} alternating runs; "
             f"{platform.processor() or platform.machine()} ({host().cpu}), load {load:.1f} "
             "(other processes: CPU times, not wall times).",
             "",
             "| case | dtype | CPU time | Gpairs/s | input bytes | vs float32 | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for case, dt, s, rate, nbytes, acc, base in rows:
        ratio = statistics.median(base) / s
        lines.append(f"| {case} | {dt} | {s * 1e3:.0f} ms | {rate:.2f} | {nbytes / 2 ** 20:.1f} MiB | {ratio:.2f}x | "
                     f"{acc:.1e} |")
    return "\n".join(lines)


REPEAT = 3

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = N = 4000")
    parser.add_argument("--write", action="store_true", help="append the table to bench/results.md")
    opts = parser.parse_args()
    load = os.getloadavg()[0]
    text = table(measure(opts.quick, REPEAT), (load + os.getloadavg()[0]) / 2)
    print(text)
    if opts.write:
        with open(os.path.join(HERE, "results.md"), "a") as f:
            f.write("\n## Half precision\n\n" + text + "\n")
