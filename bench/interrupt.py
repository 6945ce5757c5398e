"""The cost of interruptible calls (issue 19): kernel calls cut into chunks that Ctrl-C
stops, against the same calls unchunked, in one process, and how soon the work stops.

    python bench/interrupt.py [--repeats 15]    # prints the markdown of bench/interrupt.md

Each case runs chunked (`threads.CHUNK_SECONDS` as shipped) and unchunked (None: one
kernel call per thread, the runtime before chunks) alternately; the table gives the
medians, the ratio of medians and the median of the ratios of each alternating pair.
Then a SIGINT is sent to this process 1 s into a reduction of M = N = 250000 and the
time until the call has raised (its threads stopped) is measured.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import numpy as np

from keomlir.backends import cpu, threads
from keomlir.numpy import Genred
from machine import cpu_model

ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]
CASES = {  # name: (formula, reduction, K, M, N)
    "Gaussian Exp(-SqDist(x,y)) * b, D=3, M = N = 20000": ("Exp(-SqDist(x,y)) * b", "Sum", None, 20000, 20000),
    "ArgKMin K=10, D=3, M = N = 20000": ("SqDist(x,y)", "ArgKMin", 10, 20000, 20000),
    "Gaussian, few rows (j over threads), M = 64, N = 2000000": ("Exp(-SqDist(x,y)) * b", "Sum", None, 64, 2000000),
}


def _timed(f, args):
    """(wall seconds, CPU seconds of every thread of the process): on a loaded machine the
    CPU time, what the work itself costs, varies less than the wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    f(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def cost(repeats):
    rng = np.random.default_rng(0)
    rows = []
    for name, (formula, red, k, m, n) in CASES.items():
        x, y, b = (rng.standard_normal(s).astype(np.float32) for s in ((m, 3), (n, 3), (n, 1)))
        g = Genred(formula, ALIASES, red, axis=1, opt_arg=k)
        args = (x, y, b)
        g(*args)  # compiled (every variant it uses) and warm
        shipped, times = threads.CHUNK_SECONDS, {"on": [], "off": []}
        try:
            for r in range(repeats):
                for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    threads.CHUNK_SECONDS = shipped if mode == "on" else None
                    times[mode].append(_timed(g, args))
        finally:
            threads.CHUNK_SECONDS = shipped
        cells = []
        for k in (0, 1):  # wall, CPU
            on, off = (statistics.median(t[k] for t in times[mode]) for mode in ("on", "off"))
            paired = statistics.median(a[k] / b[k] for a, b in zip(times["on"], times["off"]))
            cells.append(f"{off:.4f} | {on:.4f} | {on / off:.4f} | {paired:.4f}")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return rows


def stop_latency(n_threads):
    """Seconds from a SIGINT 1 s into an M = N = 250000 Gaussian to the call's KeyboardInterrupt."""
    rng = np.random.default_rng(1)
    x, y, b = (rng.standard_normal((250000, d)).astype(np.float32) for d in (3, 3, 1))
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, "Sum", axis=1)
    g(x[:100], y[:100], b[:100])
    cpu.set_num_threads(n_threads)
    sent = []
    timer = threading.Timer(1.0, lambda: sent.append(time.perf_counter()) or os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        g(x, y, b)
        raise RuntimeError("the reduction ended before the signal")
    except KeyboardInterrupt:
        stopped = time.perf_counter()
    finally:
        cpu.set_num_threads(None)
    busy0 = time.process_time()
    time.sleep(0.2)
    return stopped - sent[0], time.process_time() - busy0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    load_before = os.getloadavg()
    rows = cost(repeats)
    latencies = [(n, *stop_latency(n)) for n in (2, 1)]
    load_after = os.getloadavg()
    print("# Interruptible reductions: cost and stop time\n")
    print(f"{cpu_model()}, {os.cpu_count()} cores, keomlir on {cpu.num_threads()} threads, float32. Load average "
          f"(1/5/15 min) before: {'/'.join(f'{v:.1f}' for v in load_before)}, after: "
          f"{'/'.join(f'{v:.1f}' for v in load_after)}. {repeats} alternating runs of each; chunks of about "
          f"{threads.CHUNK_SECONDS * 1000:.0f} ms.\n")
    print("Wall: elapsed seconds; CPU: CPU seconds of all the process's threads. Ratio: chunked / unchunked "
          "(of the medians; paired: the median of the ratios of the runs made one after the other).\n")
    print("| case | wall unchunked | wall chunked | ratio | paired | CPU unchunked | CPU chunked | ratio | paired |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nCtrl-C (SIGINT 1 s into `Exp(-SqDist(x,y)) * b`, M = N = 250000, about a minute's work on 2 threads):\n")
    print("| threads | signal to KeyboardInterrupt, s | CPU time of the process in the 0.2 s after, s |")
    print("|---|---|---|")
    for n, latency, busy in latencies:
        print(f"| {n} | {latency:.3f} | {busy:.3f} |")


if __name__ == "__main__":
    main()
