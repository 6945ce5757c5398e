"""Throughput against the dimension D: keomlir, pykeops 2.3 (CPU), chunked torch and faiss.

    python bench/dimension.py [--dims 1,3,...] [--reps 3] [--out bench/dimension]

Two cases per D, float32: the Gaussian sum Exp(-SqDist(x,y)) * b (b of dimension 4,
M = N) and the 16 nearest neighbours (ArgKMin, M = N / 10; faiss IndexFlatL2). Sizes
shrink with D so each call takes about 0.1-2 s; implementations run in turns (medians
of `--reps`), throughput in pairs (i, j) per second. pykeops runs a slice of the rows
(its throughput is per pair all the same) and is skipped above the D where its first
call (compilation) took over a minute. Writes OUT.md (table) and OUT.png (plot).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/run.py: idle OpenMP threads sleep

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from run import PGenred, alternate, faiss, machine, torch  # noqa: E402
from keomlir.numpy import Genred as KGenred  # noqa: E402

DIMS = (1, 3, 8, 16, 32, 64, 128, 256, 512, 1024)
K = 16
PYKEOPS_COMPILE_LIMIT = 60.0
PYKEOPS_ROWS = 1000  # rows pykeops computes (its CPU code is ~10x slower: a slice keeps each call short)
TORCH_CHUNK_PAIRS = 2 * 10 ** 7  # pairs per chunk of torch's dense (cdist) blocks


def sizes(d):
    """M = N of the Gaussian case and N of the K-NN case, for ~1e10 / (D + 30) pairs."""
    n = int(min(20000, max(2000, np.sqrt(1e10 / (d + 30)))))
    return n, min(100000, 5 * n)


def points(n, d, seed):
    r = np.random.default_rng(seed)
    return (r.normal(size=(n, d)) / np.sqrt(d)).astype(np.float32)


def torch_chunks(x, y, fn):
    """fn over chunks of rows of x, against all of y (BLAS cdist), concatenated."""
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    step = max(1, TORCH_CHUNK_PAIRS // len(y))
    return lambda: torch.cat([fn(torch.cdist(X[i:i + step], Y)) for i in range(0, len(x), step)])


def timed_first(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def gaussian(d, reps, pykeops_ok):
    n = sizes(d)[0]
    x, y, b = points(n, d, 0), points(n, d, 1), points(n, 4, 2)
    aliases = [f"x = Vi({d})", f"y = Vj({d})", "b = Vj(4)"]
    g = KGenred("Exp(-SqDist(x,y)) * b", aliases, "Sum", axis=1)
    impls, pairs = {"keomlir": lambda: g(x, y, b)}, {"keomlir": n * n}
    if torch is not None:
        B = torch.from_numpy(b)
        impls["torch"], pairs["torch"] = torch_chunks(x, y, lambda D: torch.exp(-D ** 2) @ B), n * n
    first = {}
    if PGenred is not None and pykeops_ok:
        p = PGenred("Exp(-SqDist(x,y)) * b", aliases, "Sum", axis=1)
        xs = x[:PYKEOPS_ROWS]
        impls["pykeops"], pairs["pykeops"] = (lambda: p(xs, y, b)), len(xs) * n
    for name, fn in impls.items():
        first[name] = timed_first(fn)
    return n, n, run(impls, pairs, reps), first


def knn(d, reps, pykeops_ok):
    n = sizes(d)[1]
    m = n // 10
    x, y = points(m, d, 3), points(n, d, 4)
    aliases = [f"x = Vi({d})", f"y = Vj({d})"]
    g = KGenred("SqDist(x,y)", aliases, "ArgKMin", axis=1, opt_arg=K)
    impls, pairs = {"keomlir": lambda: g(x, y)}, {"keomlir": m * n}
    if torch is not None:
        impls["torch"], pairs["torch"] = torch_chunks(x, y, lambda D: D.topk(K, largest=False).indices), m * n
    if faiss is not None:
        def search():
            index = faiss.IndexFlatL2(d)
            index.add(y)
            return index.search(x, K)[1]
        impls["faiss"], pairs["faiss"] = search, m * n
    first = {}
    if PGenred is not None and pykeops_ok:
        p = PGenred("SqDist(x,y)", aliases, "ArgKMin", axis=1, opt_arg=K)
        xs = x[:PYKEOPS_ROWS]
        impls["pykeops"], pairs["pykeops"] = (lambda: p(xs, y)), len(xs) * n
    for name, fn in impls.items():
        first[name] = timed_first(fn)
    return m, n, run(impls, pairs, reps), first


def run(impls, pairs, reps):
    """{name: (median seconds, pairs per second)}."""
    secs = alternate(impls, reps)
    return {name: (s, pairs[name] / s) for name, s in secs.items()}


def table(title, rows):
    names = sorted({k for _, _, _, r, _ in rows for k in r}, key=["keomlir", "torch", "faiss", "pykeops"].index)
    head = f"| D | M | N | " + " | ".join(f"{k}: s (Gpairs/s, keomlir x)" for k in names) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (3 + len(names))]
    for d, m, n, r, _ in rows:
        cells = []
        for k in names:
            if k not in r:
                cells.append("skipped")
                continue
            s, tp = r[k]
            ratio = "" if k == "keomlir" else f", {r['keomlir'][1] / tp:.1f}x"
            cells.append(f"{s:.3g} ({tp / 1e9:.3g}{ratio})")
        lines.append(f"| {d} | {m} | {n} | " + " | ".join(cells) + " |")
    return lines


def plot(cases, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, rows) in zip(axes, cases):
        for name in ("keomlir", "torch", "faiss", "pykeops"):
            pts = [(d, r[name][1] * d) for d, _, _, r, _ in rows if name in r]
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("D")
        ax.set_ylabel("pair-components per second (pairs/s x D)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.text(0.01, 0.01, machine()[:120], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default=",".join(map(str, DIMS)))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "dimension"))
    args = ap.parse_args()
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
    cases = {"Gaussian sum Exp(-SqDist(x,y)) * b, b of dim 4, float32": (gaussian, []),
             f"ArgKMin K = {K} (faiss IndexFlatL2), M = N / 10, float32": (knn, [])}
    for title, (case, rows) in cases.items():
        pykeops_ok = True
        for d in map(int, args.dims.split(",")):
            m, n, r, first = case(d, args.reps, pykeops_ok)
            if first.get("pykeops", 0) > PYKEOPS_COMPILE_LIMIT:
                pykeops_ok = False
            rows.append((d, m, n, r, first))
            print(title[:20], d, m, n, {k: f"{s:.3g}s" for k, (s, _) in r.items()},
                  {k: f"{s:.2g}s" for k, s in first.items()}, flush=True)
    up = os.getloadavg()
    lines = ["# keomlir against the dimension D", "", machine(), "",
             f"Load average during the run (another engineer's tests shared the machine): "
             f"{up[0]:.1f} / {up[1]:.1f} / {up[2]:.1f}. Medians of {args.reps} alternating runs; "
             f"pykeops computes {PYKEOPS_ROWS} rows (a slice: throughput per pair is what compares); "
             "'skipped': pykeops's compilation took over a minute at a lower D. Nx: keomlir's throughput over the other's (> 1: keomlir faster).", ""]
    for title, (_, rows) in cases.items():
        lines += table(title, rows) + [""]
        lines.append("first call (s): " + "; ".join(
            f"D={d}: " + ", ".join(f"{k} {s:.2g}" for k, s in first.items()) for d, _, _, _, first in rows))
        lines.append("")
    lines.append("![throughput against D](dimension.png)")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    plot([(t, rows) for t, (_, rows) in cases.items()], args.out + ".png")
    print(f"wrote {args.out}.md and {args.out}.png")


if __name__ == "__main__":
    main()
