"""A short tour: a Gaussian kernel sum and a K-nearest-neighbour search on a
few thousand random points, checked against dense NumPy, with timings.

    python -m keomlir.demo
"""

from __future__ import annotations

import time

import numpy as np

from keomlir.numpy import Genred


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main():
    rng = np.random.default_rng(0)
    M, N, D = 4000, 5000, 3
    x = rng.normal(size=(M, D)).astype(np.float32)
    y = rng.normal(size=(N, D)).astype(np.float32)
    b = rng.normal(size=(N, 1)).astype(np.float32)
    print(f"keomlir demo: M={M} points x_i, N={N} points y_j, D={D}, float32\n")

    gauss = Genred("Exp(-SqDist(x, y) * g) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"],
                   reduction_op="Sum", axis=1)
    gamma = np.array([0.5], np.float32)
    out, first = _timed(gauss, x, y, b, gamma)
    out, cached = _timed(gauss, x, y, b, gamma)
    d2 = ((x[:, None, :].astype(np.float64) - y[None]) ** 2).sum(-1)
    dense, t_dense = _timed(lambda: np.exp(-0.5 * d2) @ b.astype(np.float64))
    err = np.abs(out - dense).max() / np.abs(dense).max()
    print("Gaussian kernel sum  a_i = sum_j exp(-g |x_i - y_j|^2) b_j")
    print(f"  a[:4] = {np.array2string(out[:4, 0], precision=5)}")
    print(f"  first call {first * 1e3:8.1f} ms (parse, passes, LLVM, or the disk cache)")
    print(f"  next call  {cached * 1e3:8.1f} ms    dense NumPy float64: {t_dense * 1e3:.1f} ms")
    print(f"  max relative error vs dense float64: {err:.1e}\n")

    knn = Genred("SqDist(x, y)", ["x = Vi(3)", "y = Vj(3)"], reduction_op="ArgKMin", axis=1, opt_arg=5)
    idx, first = _timed(knn, x, y)
    idx, cached = _timed(knn, x, y)
    expected = np.argsort(d2, axis=1, kind="stable")[:, :5]
    agree = (idx == expected).mean()
    print("K nearest neighbours (ArgKMin, K=5)")
    print(f"  neighbours of x_0: {idx[0].tolist()}")
    print(f"  first call {first * 1e3:8.1f} ms, next call {cached * 1e3:.1f} ms")
    print(f"  agreement with a dense float64 argsort: {agree * 100:.2f}% of indices")


if __name__ == "__main__":
    main()
