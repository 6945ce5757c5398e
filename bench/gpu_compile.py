"""Compile time of the GPU kernels against the width W of the variables (no GPU needed).

    python bench/gpu_compile.py [W ...]     # default: 3 16 64 512 4096

For `Exp(-SqDist(x,y)) * b` with x = Vi(W), y = Vj(W), b = Vj(W), float32: the time to
generate the PTX (render, LLVM O3, NVPTX codegen), the time ptxas (from $KEOMLIR_PTXAS
or the PATH) takes to assemble it for sm_80, the PTX size, and ptxas's report of
the 1-D kernel (registers, local memory frame, spills).  Wide formulas are loops
over components, so the times should not grow with W.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keomlir.backends.llvm import nvptx  # noqa: E402
from keomlir.compile import CompiledReduction  # noqa: E402


def measure(w, ptxas, arch="sm_80"):
    r = CompiledReduction("Exp(-SqDist(x,y)) * b", [f"x = Vi({w})", f"y = Vj({w})", f"b = Vj({w})"], "Sum", 1)
    t0 = time.perf_counter()
    ptx = nvptx.render_ptx(r.program, "float32", arch)
    t1 = time.perf_counter()
    info = nvptx.KernelInfo.from_header(ptx.split("\n", 1)[0])
    row = {"W": w, "ptx_s": t1 - t0, "lines": ptx.count("\n"), "block": info.block, "tile": info.tile}
    if ptxas:
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "k.ptx")
            with open(src, "w") as f:
                f.write(ptx)
            res = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", os.path.join(d, "k.cubin")],
                                 capture_output=True, text=True, check=True)
        row["ptxas_s"] = time.perf_counter() - t1
        one_d = res.stderr.split("entry function 'keomlir_1d'")[1]
        frame, stores, loads = map(int, re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                                  r"(\d+) bytes spill loads", one_d).groups())
        row.update(regs=int(re.search(r"Used (\d+) registers", one_d).group(1)), frame=frame, spills=stores + loads)
    return row


def main(argv=None):
    widths = [int(a) for a in (argv if argv is not None else sys.argv[1:])] or [3, 16, 64, 512, 4096]
    ptxas = os.environ.get("KEOMLIR_PTXAS") or shutil.which("ptxas")
    print(f"{'W':>6} {'PTX s':>7} {'ptxas s':>8} {'lines':>6} {'block':>5} {'tile':>5} "
          f"{'regs':>5} {'local B':>8} {'spill B':>8}  (keomlir_1d, sm_80, float32)")
    for w in widths:
        r = measure(w, ptxas)
        print(f"{r['W']:>6} {r['ptx_s']:>7.2f} {r.get('ptxas_s', float('nan')):>8.2f} {r['lines']:>6} "
              f"{r['block']:>5} {r['tile']:>5} {r.get('regs', '-'):>5} {r.get('frame', '-'):>8} "
              f"{r.get('spills', '-'):>8}", flush=True)


if __name__ == "__main__":
    main()
