"""keomlir against another checkout of itself: did a change move any benchmark row?

    python bench/ab.py /path/to/other/checkout [--rounds 5] [--quick] [--cpu] [--only argkmin,lse]

Each case runs in a fresh process per tree, the two trees alternating (A B A B
...), so both see the same machine state; a process warms the kernel up, then
times repeated calls (by the wall clock; --cpu: one thread, by its CPU time, which holds on
a loaded machine).  Reports the median of each tree and the ratio this/other.
The cases are bench/run.py's keomlir rows (kernels from each tree's own cache
directory, so neither reuses the other's object code).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CASE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from keomlir.numpy import Genred, KernelSolve
case, n, reps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
clock = time.process_time if sys.argv[5] == "cpu" else time.perf_counter
r = np.random.default_rng(0)
def pts(m, d):
    return (r.normal(size=(m, d)) / np.sqrt(d)).astype(np.float32)
G = "Exp(-SqDist(x,y)) * b"
A = lambda d: [f"x = Vi({d})", f"y = Vj({d})", "b = Vj(1)"]
if case.startswith("gauss"):
    d = int(case[5:]); x, y, b = pts(n, d), pts(n, d), pts(n, 1)
    g = Genred(G, A(d), "Sum", axis=1); fn = lambda: g(x, y, b)
elif case == "grad":
    x, y, b, e = pts(n, 3), pts(n, 3), pts(n, 1), np.ones((n, 1), np.float32)
    g = Genred("Grad(" + G + ", x, e)", A(3) + ["e = Vi(1)"], "Sum", axis=1); fn = lambda: g(x, y, b, e)
elif case == "lse":
    x, y = pts(n, 3), pts(n, 3)
    g = Genred("-SqDist(x,y)", A(3)[:2], "LogSumExp", axis=1); fn = lambda: g(x, y)
elif case.startswith("softmin") or case.startswith("wsoftmin"):  # GeomLoss's Sinkhorn softmin, D = 2, at e = 1 / blur^2
    x, y, f = pts(n, 2), pts(n, 2), (r.normal(size=(n, 1)) * 0.1).astype(np.float32)
    e = np.array([float(case.lstrip("w")[7:])], np.float32)
    if case.startswith("w"):  # weighted (its far terms are not flushed)
        w = r.normal(size=(n, 1)).astype(np.float32)
        g = Genred("-SqDist(x,y) * e + f", ["x = Vi(2)", "y = Vj(2)", "e = Pm(1)", "f = Vj(1)", "w = Vj(1)"],
                   "LogSumExp", axis=1, formula2="w")
        fn = lambda: g(x, y, e, f, w)
    else:
        g = Genred("-SqDist(x,y) * e + f", ["x = Vi(2)", "y = Vj(2)", "e = Pm(1)", "f = Vj(1)"], "LogSumExp", axis=1)
        fn = lambda: g(x, y, e, f)
elif case == "argkmin":
    x, y = pts(n, 3), pts(n, 3)
    g = Genred("SqDist(x,y)", A(3)[:2], "ArgKMin", axis=1, opt_arg=10); fn = lambda: g(x, y)
elif case == "solve":
    x, b, p = pts(n, 3), pts(n, 1), np.array([2.0], np.float32)
    ks = KernelSolve("Exp(-g * SqDist(x,y)) * b", A(3) + ["g = Pm(1)"], "b", axis=1)
    fn = lambda: ks(x, x, b, p, alpha=1.0)
elif case == "sparse":
    from keomlir.numpy.cluster import cluster_ranges_centroids, from_matrix, grid_cluster, sort_clusters
    x = r.random((n, 3)).astype(np.float32); b = pts(n, 1)
    (x, b), lab = sort_clusters((x, b), grid_cluster(x, 0.1))
    ranges, c, _ = cluster_ranges_centroids(x, lab)
    keep = ((c[:, None] - c[None]) ** 2).sum(-1) < (0.08 + 0.1 * np.sqrt(3)) ** 2
    rg, p = from_matrix(ranges, ranges, keep), np.array([1 / (2 * 0.02 ** 2)], np.float32)
    g = Genred("Exp(-g * SqDist(x,y)) * b", A(3) + ["g = Pm(1)"], "Sum", axis=1)
    fn = lambda: g(x, x, b, p, ranges=rg)
elif case == "first":  # an unseen formula, compiled and run once per rep
    x, y, b = pts(n, 3), pts(n, 3), pts(n, 1)
    salt = iter(range(1000 + os.getpid() % 1000 * 1000, 10 ** 9))
    fn = lambda: Genred(f"Exp(-SqDist(x,y) * IntCst({next(salt)})) * b", A(3), "Sum", axis=1)(x, y, b)
elif case == "overhead":  # a small call, timed over many calls
    x, y, b = pts(n, 3), pts(n, 3), pts(n, 1)
    g = Genred(G, A(3), "Sum", axis=1); g(x, y, b)
    def fn():
        for _ in range(1000):
            g(x, y, b)
if case != "first":
    fn()
ts = []
for _ in range(reps):
    t = clock(); fn(); ts.append(clock() - t)
if case == "overhead":
    ts = [t / 1000 for t in ts]
print(json.dumps(ts))
"""

CASES = [  # (label, case, n, timed calls per process)
    ("Gaussian sum D=3, M=N=20000", "gauss3", 20000, 5),
    ("Gaussian sum D=50, M=N=20000", "gauss50", 20000, 3),
    ("its gradient in x, M=N=20000", "grad", 20000, 5),
    ("LogSumExp, M=N=20000", "lse", 20000, 5),
    ("softmin e=1 (LogSumExp of -SqDist*e+f, D=2), M=N=20000", "softmin1", 20000, 5),
    ("softmin e=100, M=N=20000", "softmin100", 20000, 5),
    ("softmin e=400, M=N=20000", "softmin400", 20000, 5),
    ("weighted softmin e=1 (LogSumExp, weights w), M=N=20000", "wsoftmin1", 20000, 5),
    ("weighted softmin e=100, M=N=20000", "wsoftmin100", 20000, 5),
    ("ArgKMin K=10, M=N=20000", "argkmin", 20000, 5),
    ("block-sparse Gaussian, M=N=200000", "sparse", 200000, 3),
    ("KernelSolve Gaussian, N=5000", "solve", 5000, 3),
    ("first call, unseen formula, M=N=1000", "first", 1000, 3),
    ("per-call overhead, M=N=100", "overhead", 100, 7),
]


def run(tree, case, n, reps, cache, cpu=False):
    env = dict(os.environ, KEOMLIR_CACHE_DIR=cache, OMP_WAIT_POLICY="PASSIVE")
    if cpu:
        env["KEOMLIR_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CASE, tree, case, str(n), str(reps), "cpu" if cpu else "wall"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="the other checkout (its root folder)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree and case, alternating")
    parser.add_argument("--quick", action="store_true", help="sizes divided by 4 (2 for the overhead row)")
    parser.add_argument("--cpu", action="store_true",
                        help="one thread, timed by its CPU time (steadier than the wall clock on a loaded machine)")
    parser.add_argument("--only", help="comma-separated case names (gauss3, grad, lse, argkmin, ...)")
    args = parser.parse_args()
    trees = {"this": os.path.dirname(HERE), "other": os.path.abspath(args.other)}
    caches = {name: tempfile.mkdtemp(prefix=f"keomlir-ab-{name}-") for name in trees}
    wanted = set(args.only.split(",")) if args.only else None
    print(f"this: {trees['this']}\nother: {trees['other']}\n"
          + ("one thread, CPU time; " if args.cpu else "all threads, wall clock; ") + f"load {os.getloadavg()[0]:.1f}\n")
    print("| case | this | other | this / other |\n|---|---|---|---|")
    for label, case, n, reps in CASES:
        if wanted and case not in wanted:
            continue
        if args.quick and case != "overhead":
            n //= 4
        times = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                times[name] += run(tree, case, n, reps, caches[name], args.cpu)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        unit = 1e6 if case == "overhead" else 1e3
        sym = "us" if case == "overhead" else "ms"
        print(f"| {label} | {med['this'] * unit:.1f} {sym} | {med['other'] * unit:.1f} {sym} | "
              f"{med['this'] / med['other']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
