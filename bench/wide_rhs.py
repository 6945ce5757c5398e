"""K @ B with a wide B on one core: keomlir's Sum of Exp(-SqDist(x,y)) * b against dense
torch (cdist, exp, matmul; one thread), CPU time (time.process_time, best of 3).

    PYTHONPATH=$PWD python bench/wide_rhs.py [D ...]
"""

import os
import sys
import time

os.environ["KEOMLIR_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from keomlir.numpy import Genred  # noqa: E402

torch.set_num_threads(1)
M = N = 4000


def best(f, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return min(times)


def main(dims):
    rng = np.random.default_rng(0)
    print(f"M = N = {M}, float32, one thread; load {os.getloadavg()[0]:.2f}")
    for d in dims:
        x = (rng.standard_normal((M, d)) / np.sqrt(d)).astype(np.float32)
        y = (rng.standard_normal((N, d)) / np.sqrt(d)).astype(np.float32)
        for w in [int(w) for w in os.environ.get("WIDTHS", "64,256,1000,4000").split(",")]:
            b = rng.standard_normal((N, w)).astype(np.float32)
            g = Genred("Exp(-SqDist(x,y))*b", [f"x=Vi({d})", f"y=Vj({d})", f"b=Vj({w})"], "Sum", axis=1)
            g(x, y, b)
            xt, yt, bt = map(torch.from_numpy, (x, y, b))

            def dense():
                return torch.exp(-torch.cdist(xt, yt) ** 2) @ bt

            dense()
            k, t = best(lambda: g(x, y, b)), best(dense)
            print(f"D={d:3d} W={w:5d}  keomlir {k:.3f} s  torch {t:.3f} s  speedup {t / k:.2f}x  "
                  f"keomlir {M * N * w / k / 1e9:.1f} G column-FMA/s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [3, 64])
