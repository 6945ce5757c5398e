"""keomlir.dask on a LocalCluster of worker processes (1 thread each): scaling from 1
to 2 workers at M = N = 1e6 (D = 3), and the overhead of the Dask path against a
keomlir.numpy call using as many threads as the cluster has workers at M = N = 1e5.

    python bench/dask_bench.py                      # writes bench/dask_results.md
    python bench/dask_bench.py --size 200000        # a smaller scaling case (minutes instead of ~20)

The points are made on the workers (dask.array.random) and persisted before any
timing, so the times are those of the reductions: graph, scheduling, kernels,
merges and gathering the (M, 1) or (M, K) result.  Every kernel is compiled on every
worker before timing.  Each time is the best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import dask.array as da  # noqa: E402
from dask.distributed import Client, LocalCluster, wait  # noqa: E402

import keomlir.dask as kd  # noqa: E402
import keomlir.numpy as kn  # noqa: E402
from keomlir.backends import cpu  # noqa: E402

CASES = {  # name: (formula, aliases, reduction_op, K)
    "Gaussian sum": ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", None),
    "ArgKMin K=10": ("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", 10),
}


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def inputs(client, n, chunk, chunk_j=None, seed=0):
    """x (chunks of `chunk` rows), y and b (of `chunk_j`, default `chunk`) of n rows
    each, made and kept on the workers."""
    rng = da.random.default_rng(seed)
    chunk_j = chunk_j or chunk
    x = rng.standard_normal((n, 3), dtype=np.float32, chunks=(chunk, 3))
    y = rng.standard_normal((n, 3), dtype=np.float32, chunks=(chunk_j, 3))
    b = rng.standard_normal((n, 1), dtype=np.float32, chunks=(chunk_j, 1))
    x, y, b = client.persist([x, y, b])
    wait([x, y, b])
    return x, y, b


def dask_run(client, case, x, y, b):
    formula, aliases, op, k = CASES[case]
    args = (x, y, b) if len(aliases) == 3 else (x, y)
    return client.compute(kd.Genred(formula, aliases, op, 1, opt_arg=k)(*args), sync=True)


def compile_everywhere(client):
    """Every case run once inside every worker process (its own synchronous scheduler):
    each worker compiles, or loads from its disk cache, the kernels before any timing."""
    def warm():
        tiny = np.zeros((20, 3), np.float32), np.zeros((20, 3), np.float32), np.zeros((20, 1), np.float32)
        for formula, aliases, op, k in CASES.values():
            kd.Genred(formula, aliases, op, 1, opt_arg=k)(*tiny[:len(aliases)]).compute(scheduler="sync")
    client.run(warm)


def cluster(n_workers):
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        env={"KEOMLIR_NUM_THREADS": "1"})


def scaling(size, chunk, repeat, workers=(1, 2)):
    """{(case, workers): (best wall time, [CPU seconds of each worker process per run],
    the 5-minute load average after it)}.  On a machine shared with other jobs the wall
    time measures them too; the workers' CPU time measures the work each one did."""
    rows = {}
    for n_workers in workers:
        with cluster(n_workers) as c, Client(c) as client:
            client.wait_for_workers(n_workers)
            compile_everywhere(client)
            x, y, b = inputs(client, size, chunk)
            for case in CASES:
                before = client.run(time.process_time)
                wall = best(lambda: dask_run(client, case, x, y, b), repeat)
                after = client.run(time.process_time)
                cpu_s = sorted((after[w] - before[w]) / repeat for w in after)
                rows[(case, n_workers)] = (wall, cpu_s, os.getloadavg()[1])
                print(f"  {case}, M=N={size:.0e}, {n_workers} worker(s): {wall:.2f} s, worker CPU "
                      f"{' + '.join(f'{t:.1f}' for t in cpu_s)} s (5-min load average then: "
                      f"{rows[(case, n_workers)][2]:.2f})", flush=True)
    return rows


def overhead(size, repeat, n_workers=2):
    """{(case, blocks): (keomlir.numpy time, keomlir.dask time)} for x in 4 chunks and y
    in 4 chunks (every j block its own partial states, merged) or in one."""
    rows = {}
    with cluster(n_workers) as c, Client(c) as client:
        client.wait_for_workers(n_workers)
        compile_everywhere(client)
        cpu.set_num_threads(n_workers)
        for blocks, chunk_j in (("4 x 4", size // 4), ("4 x 1", size)):
            x, y, b = inputs(client, size, size // 4, chunk_j)
            xn, yn, bn = client.compute([x, y, b], sync=True)
            for case in CASES:
                formula, aliases, op, k = CASES[case]
                g = kn.Genred(formula, aliases, reduction_op=op, axis=1, opt_arg=k)
                args = (xn, yn, bn) if len(aliases) == 3 else (xn, yn)
                ref = g(*args)
                got = dask_run(client, case, x, y, b)
                if got.dtype.kind == "i":
                    np.testing.assert_array_equal(got, ref)
                else:
                    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
                t_numpy, t_dask = [], []
                for _ in range(repeat):  # alternating, so that load from elsewhere hits both alike
                    t_numpy.append(best(lambda: g(*args), 1))
                    t_dask.append(best(lambda: dask_run(client, case, x, y, b), 1))
                rows[(case, blocks)] = (min(t_numpy), min(t_dask))
                print(f"  {case}, M=N={size:.0e}, {blocks} blocks: keomlir.numpy ({n_workers} threads) "
                      f"{rows[(case, blocks)][0]:.3f} s, keomlir.dask ({n_workers} workers) "
                      f"{rows[(case, blocks)][1]:.3f} s", flush=True)
        cpu.set_num_threads(None)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=1e6, help="M = N of the scaling case (default 1e6)")
    ap.add_argument("--chunk", type=float, default=None, help="rows per chunk (default size/8)")
    ap.add_argument("--overhead-size", type=float, default=1e5, help="M = N of the overhead case (default 1e5)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per scaling time (best kept; default 1)")
    ap.add_argument("--no-overhead", action="store_true", help="skip the overhead case")
    ap.add_argument("--no-scaling", action="store_true", help="skip the scaling case (prints, writes nothing)")
    ap.add_argument("--out", default=os.path.join(HERE, "dask_results.md"))
    args = ap.parse_args()
    size, osize = int(args.size), int(args.overhead_size)
    chunk = int(args.chunk or size // 8)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()
    over = {}
    if not args.no_overhead:
        print(f"overhead at M=N={osize}:", flush=True)
        over = overhead(osize, 5)
    if args.no_scaling:
        return
    print(f"scaling at M=N={size}, chunks of {chunk} rows:", flush=True)
    scale = scaling(size, chunk, args.repeat)
    lines = [
        "# keomlir.dask benchmark",
        "",
        f"`python bench/dask_bench.py` on {cpu_model()} ({os.cpu_count()} cores), {started}; load average "
        f"{load[0]:.2f} when it started (the machine is shared: other jobs may have run meanwhile).",
        "LocalCluster of worker processes, 1 thread each (`KEOMLIR_NUM_THREADS=1`); float32, D = 3; inputs made "
        "and persisted on the workers before timing.",
        "",
        f"## Scaling, M = N = {size:.0e} ({size // chunk} x {size // chunk} blocks of {chunk} rows)",
        "",
        "The wall-time speed-up is what this machine gave with whatever else ran on it; the CPU-bound speed-up "
        "(1 worker's CPU time over the busier worker's CPU time with 2) estimates what two otherwise idle cores "
        "would give, if the workers never waited.",
        "",
        "| case | 1 worker: wall, CPU | 2 workers: wall, CPU per worker | wall speed-up | CPU-bound speed-up "
        "| Gpairs per worker CPU second (2 workers) | 5-min load average after 1 / 2 workers |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        (t1, c1, l1), (t2, c2, l2) = scale[(case, 1)], scale[(case, 2)]
        lines.append(f"| {case} | {t1:.1f} s, {sum(c1):.1f} s | {t2:.1f} s, {' + '.join(f'{t:.1f}' for t in c2)} s "
                     f"| {t1 / t2:.2f}x | {sum(c1) / max(c2):.2f}x | {size * size / sum(c2) / 1e9:.2f} "
                     f"| {l1:.1f} / {l2:.1f} |")
    lines += [] if not over else [
        "",
        f"## Overhead, M = N = {osize:.0e}, best of 5 alternating runs",
        "",
        "x in 4 chunks; y (and b) in 4 chunks (4 x 4 blocks: states continued from j block to j block, in chains) or in one (4 x 1); blocks of rows cut into pieces so that each worker thread has about four chains.",
        "",
        "| case | blocks | keomlir.numpy, 2 threads | keomlir.dask, 2 workers | overhead |",
        "|---|---|---|---|---|",
    ]
    for (case, blocks), (tn, td) in over.items():
        lines.append(f"| {case} | {blocks} | {tn:.3f} s | {td:.3f} s | {100 * (td / tn - 1):+.1f}% |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
