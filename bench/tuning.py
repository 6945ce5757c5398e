"""`keomlir tune` on the rows of bench/run.py and on the Gaussian and ArgKMin of
bench/dimension.py at D = 16, 64, 256, 1024: the default schedule against the tuned one.

    python bench/tuning.py [--budget 20] [--long-budget 60] [--reps 5] [--only gauss3-1000,lse]
                           [--out bench/tuning]

Each row is tuned as `keomlir tune` tunes it (keomlir.tune.tune, budget in seconds,
compiling included, kernels compiled afresh: an empty kernel cache), then the row's call
runs with the default schedule and with the tuned one in one process, alternating
(default, tuned, default, ...), medians of `--reps` samples.  The two sides differ only in
the kernel cache folder, which holds the tuning database (`KEOMLIR_CACHE_DIR`): the tuned
side is what a user's later calls get.  Writes OUT.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import dimension  # noqa: E402
from run import data, machine  # noqa: E402
from keomlir import tune  # noqa: E402
from keomlir.numpy import Genred, KernelSolve  # noqa: E402
from keomlir.schedule import space  # noqa: E402

GAUSS = "Exp(-SqDist(x,y)) * b"
FINDING = 0.10  # a gain over this is reported as a candidate default
LONG = (0.25, 3.0)  # seconds of a call that a 20 s budget leaves few candidates for, and that a longer one helps


def aliases(d, width=1):
    return [f"x = Vi({d})", f"y = Vj({d})", f"b = Vj({width})"]


def rows():
    """(name, label, Genred whose program is tuned, its arguments, the call to time)."""
    found = []
    for n in (1000, 3000, 10000, 20000, 100000):
        g = Genred(GAUSS, aliases(3), "Sum", axis=1)
        args = data(n, n, 3)
        found.append((f"gauss3-{n}", f"Gaussian sum D=3, M=N={n}", g, args, lambda g=g, a=args: g(*a)))
    for n in (1000, 10000, 20000):
        g = Genred(GAUSS, aliases(50), "Sum", axis=1)
        args = data(n, n, 50)
        found.append((f"gauss50-{n}", f"Gaussian sum D=50, M=N={n}", g, args, lambda g=g, a=args: g(*a)))
    n = 20000
    x, y, b = data(n, n, 3)
    e = np.ones((n, 1), np.float32)
    g = Genred(f"Grad({GAUSS}, x, e)", aliases(3) + ["e = Vi(1)"], "Sum", axis=1)
    found.append(("grad", f"gradient in x, D=3, M=N={n}", g, (x, y, b, e), lambda g=g, a=(x, y, b, e): g(*a)))
    g = Genred("-SqDist(x,y)", aliases(3)[:2], "LogSumExp", axis=1)
    found.append(("lse", f"LogSumExp, D=3, M=N={n}", g, (x, y), lambda g=g, a=(x, y): g(*a)))
    g = Genred("SqDist(x,y)", aliases(3)[:2], "ArgKMin", axis=1, opt_arg=10)
    found.append(("knn10", f"ArgKMin K=10, D=3, M=N={n}", g, (x, y), lambda g=g, a=(x, y): g(*a)))
    n = 5000
    x, _, b = data(n, n, 3)
    p = np.array([2.0], np.float32)
    ks = KernelSolve("Exp(-g * SqDist(x,y)) * b", aliases(3) + ["g = Pm(1)"], "b", axis=1)
    found.append(("solve", f"KernelSolve Gaussian, alpha=1, D=3, N={n} (its Genred tuned at {n} x {n})",
                  ks.core.genred, (x, x, b, p), lambda a=(x, x, b, p): ks(*a, alpha=1.0)))
    x, y, b = data(100, 100, 3)
    g = Genred(GAUSS, aliases(3), "Sum", axis=1)
    found.append(("overhead", "per-call overhead, M=N=100", g, (x, y, b), lambda g=g, a=(x, y, b): g(*a)))
    for d in (16, 64, 256, 1024):
        n = dimension.sizes(d)[0]
        g = Genred(GAUSS, aliases(d, 4), "Sum", axis=1)
        args = (dimension.points(n, d, 0), dimension.points(n, d, 1), dimension.points(n, 4, 2))
        found.append((f"dim-gauss{d}", f"Gaussian sum D={d}, b of dim 4, M=N={n}", g, args,
                      lambda g=g, a=args: g(*a)))
    for d in (16, 64, 256, 1024):
        n = dimension.sizes(d)[1]
        g = Genred("SqDist(x,y)", aliases(d)[:2], "ArgKMin", axis=1, opt_arg=dimension.K)
        args = (dimension.points(n // 10, d, 3), dimension.points(n, d, 4))
        found.append((f"dim-knn{d}", f"ArgKMin K={dimension.K}, D={d}, M={n // 10}, N={n}", g, args,
                      lambda g=g, a=args: g(*a)))
    return found


def in_folder(folder, fn):
    """fn run with the kernel cache (and its tuning database) in `folder`."""
    def call():
        os.environ["KEOMLIR_CACHE_DIR"] = folder
        return fn()

    return call


def alternate(impls, reps):
    """Median seconds per call of each implementation, run in turns; a sample repeats a call
    shorter than 50 ms (as the tuner's do)."""
    times = {name: [] for name in impls}
    first = next(iter(impls.values()))
    t = time.perf_counter()
    first()
    calls = max(1, int(0.05 / (time.perf_counter() - t)))
    for _ in range(reps):
        for name, fn in impls.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def notes(path):
    """The '## Notes' section of an earlier OUT.md (written by hand: kept across reruns)."""
    try:
        text = open(path).read()
    except OSError:
        return []
    if "\n## Notes\n" not in text:
        return []
    section = text.split("\n## Notes\n", 1)[1].split("\n## ", 1)[0]
    return ["## Notes", *section.rstrip("\n").split("\n"), ""]


def tune_row(label, genred, call_args, call, budget, reps):
    """(table row, the tuner's report, its Result) of one row tuned with `budget`."""
    plain, tuned_dir = tempfile.mkdtemp(prefix="keomlir-plain-"), tempfile.mkdtemp(prefix="keomlir-tuned-")
    default, tuned = in_folder(plain, call), in_folder(tuned_dir, call)
    os.environ["KEOMLIR_CACHE_DIR"] = tuned_dir
    lines = []
    found = tune.tune(genred.reduction.launch(list(call_args)), budget, out=lines.append)
    print("\n".join(lines), flush=True)
    if found.overrides:
        default()  # (compiled, warm)
        tuned()
        t = alternate({"default": default, "tuned": tuned}, reps if found.default_seconds < 2 else 2)
        cells = f"{t['default']:.4g} | {t['tuned']:.4g} | {t['tuned'] / t['default']:.3f}"
    else:  # (the same kernel on both sides: the tuner's time of the default)
        cells = f"{found.default_seconds:.4g} (tuner's) | = default | 1"
    counts = f"{len(found.candidates) - 1} tried, {found.same} same code, {found.untried} over the budget"
    row = (f"| {label} | {budget:g} | {cells} | {space.text(found.overrides)} | {found.ratio:.2f} | "
           f"{found.tuning_s:.1f} | {counts} |")
    print(row, flush=True)
    gain = t["tuned"] / t["default"] if found.overrides else 1.0
    return row, lines, found, gain


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=tune.BUDGET)
    ap.add_argument("--long-budget", type=float, default=60.0,
                    help=f"rows whose call takes {LONG[0]}-{LONG[1]} s are tuned again with this budget (0: not)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", help="comma-separated row names (gauss3-1000, dim-knn64, ...)")
    ap.add_argument("--out", default=os.path.join(HERE, "tuning"))
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    load_before = os.getloadavg()
    table, logs, findings = [], [], []
    for name, label, genred, call_args, call in rows():
        if wanted and name not in wanted:
            continue
        budgets = [args.budget]
        while budgets:
            budget = budgets.pop()
            row, lines, found, gain = tune_row(label, genred, call_args, call, budget, args.reps)
            table.append(row)
            logs.append((f"{label}, budget {budget:g} s", lines))
            if gain < 1 - FINDING:
                findings.append(f"- {label}: `{space.text(found.overrides)}` took {gain:.2f}x the default's time "
                                f"(budget {budget:g} s)")
            if budget == args.budget and args.long_budget and LONG[0] < found.default_seconds < LONG[1]:
                budgets.append(args.long_budget)
    load_after = os.getloadavg()
    out = ["# keomlir tune: the default schedule against the tuned one", "",
           f"Machine: {machine()}.", "",
           f"Load average (1/5/15 min) before: {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, "
           f"after: {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f}: the 2 cores were shared with "
           f"other work the whole time, so every number here is noisy (a rerun on an idle machine may differ).",
           "",
           f"Each row: `keomlir tune` (keomlir.tune.tune) at the row's sizes with the budget shown, compiling "
           "included (kernels this process has not compiled yet: the second tuning of a row, with "
           f"{args.long_budget:g} s for calls of {LONG[0]}-{LONG[1]} s, finds the first one's compiled), then "
           "the row's call with the default schedule and with the tuned one in this process, alternating, "
           f"medians of {args.reps} samples (2 for calls over 2 s); seconds per call (where the default was kept, "
           "both sides run the same kernel: the tuner's own median of the default is shown). 'tuner's ratio': "
           "the tuned schedule's time over the default's in the tuner's confirmation rounds. Block-sparse calls "
           "(ranges) are not tuned (the tuner measures dense calls) and the first-call row of bench/run.py "
           "compiles an unseen formula, which nothing tunes: both are left out.", "",
           "| case | budget s | default s | tuned s | tuned / default | tuned schedule | tuner's ratio | "
           "tuning s | candidates |", "|---|---|---|---|---|---|---|---|---|"] + table + [
               "", f"Rows where the tuned schedule took under {1 - FINDING:.2f}x the default's time here (candidate "
               f"defaults for this target class if a rerun agrees):", ""] + (findings or ["- none"]) + [""]
    out += notes(args.out + ".md") + ["## The tuner's reports", ""]
    for label, lines in logs:
        out += [f"### {label}", "", "```"] + lines + ["```", ""]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
