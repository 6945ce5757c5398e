"""A real client side by side: GeomLoss's Sinkhorn divergence on keomlir and on pykeops 2.3.

    python bench/geomloss_bench.py [--n 20000] [--rounds 2] [--reps 2] [--pykeops-python PATH]

`SamplesLoss("sinkhorn", p=2, blur=0.01, backend="online")` between two clouds of n
points in 3-D (float32, uniform weights): its value and its gradient in x (one
forward and one backward call, the loss as GeomLoss computes it: the Sinkhorn
iterations and the softmins of its symmetric debiasing, every one a LogSumExp
reduction).  keomlir runs it through `keomlir.install_as_pykeops()` (GeomLoss unchanged),
pykeops 2.3 (CPU) from a Python that has it (`--pykeops-python`, default: the first of
$PYKEOPS_PYTHON and /tmp/pkvenv/bin/python that imports it).  Each library runs in its
own process (both cannot be pykeops in one), the processes alternating, each warmed up
by one call (which compiles) and then timed; the medians of the wall clock and of the
process's CPU time (all its threads) are reported, with the agreement of the two values
and gradients.  Prints a row for bench/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASE = r"""
import json, os, sys, time
lib, data, out, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if lib == "keomlir":
    sys.path.insert(0, sys.argv[5])
    import keomlir
    keomlir.install_as_pykeops()
import numpy as np
import torch
from geomloss import SamplesLoss
arrays = np.load(data)
x0, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
loss = SamplesLoss("sinkhorn", p=2, blur=0.01, backend="online")

def run():
    x = x0.clone().requires_grad_(True)
    value = loss(x, y)
    (grad,) = torch.autograd.grad(value, [x])
    return value.detach(), grad

t, c = time.perf_counter(), time.process_time()
value, grad = run()
first = time.perf_counter() - t
wall, cpu = [], []
for _ in range(reps):
    t, c = time.perf_counter(), time.process_time()
    value, grad = run()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
np.savez(out, value=value.numpy(), grad=grad.numpy())
print(json.dumps({"wall": wall, "cpu": cpu, "first": first, "threads": torch.get_num_threads()}))
"""


def _has_pykeops(python):
    if not python or not os.path.exists(python):
        return False
    return subprocess.run([python, "-c", "import pykeops"], capture_output=True).returncode == 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2, help="processes per library, alternating")
    parser.add_argument("--reps", type=int, default=2, help="timed calls per process, after the first")
    parser.add_argument("--pykeops-python", default=None)
    args = parser.parse_args(argv)
    pk_python = next((p for p in (args.pykeops_python, os.environ.get("PYKEOPS_PYTHON"), "/tmp/pkvenv/bin/python")
                      if _has_pykeops(p)), None)
    r = np.random.default_rng(0)
    work = tempfile.mkdtemp(prefix="keomlir-geomloss-")
    data = os.path.join(work, "data.npz")
    # two clouds of the unit cube's scale: blur 0.01 makes GeomLoss anneal from the diameter down
    np.savez(data, x=r.random((args.n, 3), dtype=np.float32), y=(r.random((args.n, 3), dtype=np.float32) * 0.8 + 0.15))
    libs = {"keomlir": sys.executable}
    if pk_python:
        libs["pykeops"] = pk_python
    else:
        print("pykeops 2.3 not found (--pykeops-python, $PYKEOPS_PYTHON, /tmp/pkvenv): keomlir alone")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    runs = {lib: {"wall": [], "cpu": [], "first": []} for lib in libs}
    for _ in range(args.rounds):
        for lib, python in libs.items():
            out = os.path.join(work, f"{lib}.npz")
            res = subprocess.run([python, "-c", CASE, lib, data, out, str(args.reps), ROOT], capture_output=True,
                                 text=True, env=env)
            if res.returncode:
                raise RuntimeError(f"{lib} failed:\n{res.stderr[-3000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            for key in ("wall", "cpu"):
                runs[lib][key] += got[key]
            runs[lib]["first"].append(got["first"])
            print(f"{lib}: wall {[round(t, 2) for t in got['wall']]} s, CPU {[round(t, 2) for t in got['cpu']]} s, "
                  f"first call {got['first']:.1f} s, {got['threads']} threads", flush=True)
    med = {lib: {k: statistics.median(v) for k, v in r.items()} for lib, r in runs.items()}
    k = med["keomlir"]
    row = f"| GeomLoss Sinkhorn (p=2, blur=0.01, online), value + gradient, D=3, M=N={args.n} | {k['wall']:.2f} s"
    if "pykeops" in med:
        p = med["pykeops"]
        ours, theirs = np.load(os.path.join(work, "keomlir.npz")), np.load(os.path.join(work, "pykeops.npz"))
        dv = abs(float(ours["value"]) - float(theirs["value"])) / abs(float(theirs["value"]))
        dg = float(np.abs(ours["grad"] - theirs["grad"]).max() / np.abs(theirs["grad"]).max())
        row += f" | {p['wall']:.2f} s ({p['wall'] / k['wall']:.1f}x) | — | — |  |"
        print(f"value {float(ours['value']):.7g} (pykeops {float(theirs['value']):.7g}): relative difference "
              f"{dv:.1e}; gradients: largest difference {dg:.1e} of the largest component")
        print(f"CPU time (all threads): keomlir {k['cpu']:.2f} s, pykeops {p['cpu']:.2f} s "
              f"({p['cpu'] / k['cpu']:.1f}x); first calls (compile): keomlir {k['first']:.1f} s, "
              f"pykeops {p['first']:.1f} s")
    else:
        row += " | — | — | — |  |"
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(row)


if __name__ == "__main__":
    main()
