"""keomlir side by side with pykeops 2.3 (CPU), dense PyTorch and faiss-cpu.

    pip install ".[bench]" && python bench/run.py            # writes bench/results.md, bench/results.png
    python bench/run.py --quick                               # smaller sizes, a minute or two

Every case runs its implementations in one process, alternating (A B C A B C
...), and reports the median of each and its ratio to keomlir.  Peers that are
not installed are reported as missing, never faked.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

# OpenMP threads (torch, pykeops) spin after each call by default, stealing the cores
# from whichever implementation runs next in the alternation: make them sleep instead
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keomlir.numpy import Genred as KGenred  # noqa: E402

from keomlir.numpy import KernelSolve as KKernelSolve  # noqa: E402
from machine import cpu_model  # noqa: E402

try:
    from pykeops.numpy import Genred as PGenred, KernelSolve as PKernelSolve
except ImportError:  # pragma: no cover - reported in the table
    PGenred = PKernelSolve = None
try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
try:
    import faiss
except ImportError:  # pragma: no cover
    faiss = None

GAUSS = "Exp(-SqDist(x,y)) * b"
ALIASES = lambda d: [f"x = Vi({d})", f"y = Vj({d})", "b = Vj(1)"]  # noqa: E731


def machine():
    cpu = cpu_model()
    import llvmlite.binding as llvm

    feats = llvm.get_host_cpu_features()
    simd = "AVX-512" if feats.get("avx512f") else "AVX2" if feats.get("avx2") else "SSE"
    return f"{cpu}, {os.cpu_count()} cores, {simd}, {platform.python_version()}, Linux"


def alternate(impls, reps):
    """Median seconds of each implementation, run in turns."""
    times = {name: [] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def data(m, n, d, seed=0):
    r = np.random.default_rng(seed)
    x, y = r.normal(size=(m, d)) / np.sqrt(d), r.normal(size=(n, d)) / np.sqrt(d)
    return x.astype(np.float32), y.astype(np.float32), r.normal(size=(n, 1)).astype(np.float32)


def warm(fn):
    fn()
    return fn


def gaussian_case(n, d, reps, dense_limit=20000, pykeops_limit=100000):
    x, y, b = data(n, n, d)
    impls = {"keomlir": warm(lambda g=KGenred(GAUSS, ALIASES(d), "Sum", axis=1): g(x, y, b))}
    if PGenred is not None and n <= pykeops_limit:
        pg = PGenred(GAUSS, ALIASES(d), reduction_op="Sum", axis=1)
        impls["pykeops"] = warm(lambda: pg(x, y, b, backend="CPU"))
    if torch is not None and n <= dense_limit:
        X, Y, B = (torch.from_numpy(a) for a in (x, y, b))
        impls["torch dense"] = warm(lambda: torch.exp(-torch.cdist(X, Y) ** 2) @ B)
    return alternate(impls, reps)


def gradient_case(n, reps):
    x, y, b = data(n, n, 3)
    e = np.ones((n, 1), np.float32)
    formula = "Grad(Exp(-SqDist(x,y)) * b, x, e)"
    aliases = ALIASES(3) + ["e = Vi(1)"]
    impls = {"keomlir": warm(lambda g=KGenred(formula, aliases, "Sum", axis=1): g(x, y, b, e))}
    if PGenred is not None:
        pg = PGenred(formula, aliases, reduction_op="Sum", axis=1)
        impls["pykeops"] = warm(lambda: pg(x, y, b, e, backend="CPU"))
    if torch is not None and n <= 20000:
        X = torch.from_numpy(x).requires_grad_()
        Y, B = torch.from_numpy(y), torch.from_numpy(b)

        def dense():
            out = torch.exp(-torch.cdist(X, Y) ** 2) @ B
            return torch.autograd.grad(out.sum(), [X])

        impls["torch dense"] = warm(dense)
    return alternate(impls, reps)


def lse_case(n, reps):
    x, y, _ = data(n, n, 3)
    impls = {"keomlir": warm(lambda g=KGenred("-SqDist(x,y)", ALIASES(3)[:2], "LogSumExp", axis=1): g(x, y))}
    if PGenred is not None:
        pg = PGenred("-SqDist(x,y)", ALIASES(3)[:2], reduction_op="LogSumExp", axis=1)
        impls["pykeops"] = warm(lambda: pg(x, y, backend="CPU"))
    if torch is not None and n <= 20000:
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        impls["torch dense"] = warm(lambda: torch.logsumexp(-torch.cdist(X, Y) ** 2, dim=1))
    return alternate(impls, reps)


def knn_case(n, reps, k=10):
    x, y, _ = data(n, n, 3)
    impls = {"keomlir": warm(lambda g=KGenred("SqDist(x,y)", ALIASES(3)[:2], "ArgKMin", axis=1, opt_arg=k): g(x, y))}
    if PGenred is not None:
        pg = PGenred("SqDist(x,y)", ALIASES(3)[:2], reduction_op="ArgKMin", axis=1, opt_arg=k)
        impls["pykeops"] = warm(lambda: pg(x, y, backend="CPU"))
    if faiss is not None:
        index = faiss.IndexFlatL2(3)
        index.add(y)
        impls["faiss-cpu"] = warm(lambda: index.search(x, k))
    if torch is not None and n <= 20000:
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        impls["torch dense"] = warm(lambda: torch.topk(torch.cdist(X, Y), k, dim=1, largest=False))
    return alternate(impls, reps)


def kernel_solve_case(n, reps, alpha=1.0):
    """(alpha Id + K) a = b for a Gaussian K on n points of R^3, by conjugate gradient."""
    x, _, b = data(n, n, 3)
    g = np.array([2.0], np.float32)
    formula, aliases = "Exp(-g * SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"]
    ks = KKernelSolve(formula, aliases, "b", axis=1)
    impls = {"keomlir": warm(lambda: ks(x, x, b, g, alpha=alpha))}
    if PKernelSolve is not None:
        pks = PKernelSolve(formula, aliases, "b", axis=1)
        impls["pykeops"] = warm(lambda: pks(x, x, b, g, alpha=alpha, backend="CPU"))
    if torch is not None and n <= 10000:
        X, B = torch.from_numpy(x), torch.from_numpy(b)
        impls["torch dense"] = warm(lambda: torch.linalg.solve(
            alpha * torch.eye(n) + torch.exp(-2.0 * torch.cdist(X, X) ** 2), B))
    return alternate(impls, reps)


def block_sparse_case(n, reps, sigma=0.02, voxel=0.1):
    """A narrow Gaussian (sigma) on n uniform points of the unit cube: points sorted
    into voxels, voxel pairs kept when their centroids are closer than 4 sigma plus a
    voxel diagonal (the pykeops tutorial's scheme), the same `ranges` given to keomlir
    and pykeops; keomlir's dense sum for comparison.  Returns (times, kept fraction,
    max relative difference sparse vs dense on 2000 rows, and keomlir vs pykeops)."""
    from keomlir.numpy.cluster import cluster_ranges_centroids, from_matrix, grid_cluster, sort_clusters

    r = np.random.default_rng(0)
    x = r.random((n, 3)).astype(np.float32)
    b = r.normal(size=(n, 1)).astype(np.float32)
    (x, b), lab = sort_clusters((x, b), grid_cluster(x, voxel))
    ranges, centroids, _ = cluster_ranges_centroids(x, lab)
    dist2 = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    keep = dist2 < (4 * sigma + voxel * np.sqrt(3)) ** 2
    block_ranges = from_matrix(ranges, ranges, keep)
    sizes = ranges[:, 1] - ranges[:, 0]
    kept = float((sizes[:, None] * sizes[None, :] * keep).sum()) / n ** 2
    g = np.array([1 / (2 * sigma ** 2)], np.float32)
    formula, aliases = "Exp(-g * SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"]
    kg = KGenred(formula, aliases, "Sum", axis=1)
    impls = {"keomlir": warm(lambda: kg(x, x, b, g, ranges=block_ranges))}
    if PGenred is not None:
        pg = PGenred(formula, aliases, reduction_op="Sum", axis=1)
        pranges = tuple(a.astype(np.int32) for a in block_ranges)
        impls["pykeops"] = warm(lambda: pg(x, x, b, g, backend="CPU", ranges=pranges))
    impls["keomlir dense"] = warm(lambda: kg(x, x, b, g))
    times = alternate(impls, reps)
    rows = slice(0, 2000)
    sparse = kg(x, x, b, g, ranges=block_ranges)[rows]
    dense = KGenred(formula, aliases, "Sum", axis=1)(x[rows], x, b, g)
    error = float(np.abs(sparse - dense).max() / np.abs(dense).max())
    agreement = None
    if PGenred is not None:
        theirs = pg(x, x, b, g, backend="CPU", ranges=pranges)
        ours = kg(x, x, b, g, ranges=block_ranges)
        agreement = float(np.abs(theirs - ours).max() / np.abs(theirs).max())
    return times, kept, error, agreement


def block_sparse_rows(n, reps):
    times, kept, error, agreement = block_sparse_case(n, reps)
    dense = times.pop("keomlir dense")
    check = "" if agreement is None else f"; keomlir vs pykeops: {agreement:.1e}"
    return [row(f"block-sparse Gaussian (ranges, {kept:.1%} of pairs kept), D=3, M=N={n}", times),
            f"|   (the same, dense keomlir: {dense * 1e3:.1f} ms, {dense / times['keomlir']:.1f}x the block-sparse "
            f"time; max difference sparse vs dense {error:.1e} of the largest value{check}) | | | | | |"]


def first_call_case():
    """An unseen formula (a fresh constant each run) compiled and run once, M = N = 1000."""
    salt = int(time.time() * 1000) % 100000 + 7
    formula = f"Exp(-SqDist(x,y) * IntCst({salt})) * b"
    x, y, b = data(1000, 1000, 3)
    out = {}
    t0 = time.perf_counter()
    KGenred(formula, ALIASES(3), "Sum", axis=1)(x, y, b)
    out["keomlir"] = time.perf_counter() - t0
    if PGenred is not None:
        t0 = time.perf_counter()
        PGenred(formula, ALIASES(3), reduction_op="Sum", axis=1)(x, y, b, backend="CPU")
        out["pykeops"] = time.perf_counter() - t0
    return out


def peak_memory_case(n):
    """Peak resident memory (VmHWM, which a new process does not inherit) of a fresh
    process running the Gaussian sum at M = N = n, and the high-water mark before the call."""
    code = (
        "import numpy as np, sys, time; sys.path.insert(0, %r)\n"
        "def hwm():\n"
        "    return [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024\n"
        "from keomlir.numpy import Genred\n"
        "r = np.random.default_rng(0); n = %d\n"
        "x, y, b = (r.normal(size=(n, 3)).astype(np.float32), r.normal(size=(n, 3)).astype(np.float32),"
        " r.normal(size=(n, 1)).astype(np.float32))\n"
        "g = Genred(%r, %r, 'Sum', axis=1); g(x[:10], y[:10], b[:10])\n"
        "before = hwm(); t = time.perf_counter(); g(x, y, b); t = time.perf_counter() - t\n"
        "print(before, hwm(), t)\n"
    ) % (os.path.dirname(HERE), n, GAUSS, ALIASES(3))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def row(label, times, unit_pairs=None):
    base = times.get("keomlir")
    cells = []
    for name in ("keomlir", "pykeops", "torch dense", "faiss-cpu"):
        if name in times:
            ratio = "" if name == "keomlir" else f" ({times[name] / base:.1f}x)"
            cells.append(f"{times[name] * 1e3:.1f} ms{ratio}")
        else:
            cells.append("—")
    rate = f"{unit_pairs / base / 1e9:.2f}" if unit_pairs else ""
    return f"| {label} | " + " | ".join(cells) + f" | {rate} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--block-sparse", action="store_true",
                        help="only the block-sparse case (printed, results.md not rewritten)")
    args = parser.parse_args()
    if args.block_sparse:
        print(f"Machine: {machine()}")
        for line in block_sparse_rows(20000 if args.quick else 200000, 1 if args.quick else 3):
            print(line, flush=True)
        return
    sizes = [1000, 3000, 10000] if args.quick else [1000, 3000, 10000, 20000, 100000]
    reps = 3 if args.quick else 5
    lines = [f"Machine: {machine()}", "",
             "Medians of alternating runs in one process; (Nx) = time / keomlir's time, so 10x means keomlir is 10 times faster.",
             "", "| case | keomlir | pykeops 2.3 CPU | dense torch | faiss-cpu | keomlir Gpairs/s |",
             "|---|---|---|---|---|---|"]
    curve = {}
    for n in sizes:
        r = gaussian_case(n, 3, 1 if n >= 100000 else reps)
        curve[n] = r
        lines.append(row(f"Gaussian sum D=3, M=N={n}", r, n * n))
        print(lines[-1], flush=True)
    for n in sizes[:3] if args.quick else [1000, 10000, 20000]:
        lines.append(row(f"Gaussian sum D=50, M=N={n}", gaussian_case(n, 50, reps), n * n))
        print(lines[-1], flush=True)
    n = 10000 if args.quick else 20000
    for label, case in [("gradient in x", gradient_case), ("LogSumExp", lse_case), ("ArgKMin K=10", knn_case)]:
        lines.append(row(f"{label}, D=3, M=N={n}", case(n, reps), n * n))
        print(lines[-1], flush=True)
    lines += block_sparse_rows(20000 if args.quick else 200000, 1 if args.quick else 3)
    print(lines[-2], lines[-1], sep="\n", flush=True)
    n = 2000 if args.quick else 5000
    lines.append(row(f"KernelSolve Gaussian, alpha=1, D=3, N={n}", kernel_solve_case(n, 1 if args.quick else 3)))
    print(lines[-1], flush=True)
    x, y, b = data(100, 100, 3)
    tiny_impls = {"keomlir": warm(lambda g=KGenred(GAUSS, ALIASES(3), "Sum", axis=1): g(x, y, b))}
    if PGenred is not None:
        pg = PGenred(GAUSS, ALIASES(3), reduction_op="Sum", axis=1)
        tiny_impls["pykeops"] = warm(lambda: pg(x, y, b, backend="CPU"))
    tiny = alternate(tiny_impls, 200)
    lines.append(row("per-call overhead, M=N=100", tiny))
    first = first_call_case()
    lines.append(row("first call, unseen formula (compile + run, M=N=1000)", first))
    print(lines[-2], lines[-1], sep="\n", flush=True)
    if not args.quick:
        before, after, seconds = peak_memory_case(200000)
        lines += ["", f"M = N = 200000 Gaussian sum: {seconds:.1f} s; peak resident memory {after:.0f} MiB, "
                      f"{before:.0f} MiB before the call (with the kernel compiled): the call adds "
                      f"{after - before:.1f} MiB, memory linear in N (inputs 200000 x 7 floats = 5.3 MiB)."]
        print(lines[-1], flush=True)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    _plot(curve, args.out + ".png")
    print(f"wrote {args.out}.md and {args.out}.png")


def _plot(curve, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("keomlir", "pykeops", "torch dense"):
        pts = [(n, r[name]) for n, r in curve.items() if name in r]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=name)
    ax.set_xlabel("M = N")
    ax.set_ylabel("seconds")
    ax.set_title("Gaussian kernel sum, D = 3, float32, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, machine()[:90], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
