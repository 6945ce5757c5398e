"""First call of unseen wide formulas on a cold kernel cache (issue 11's compile-time goals).

    python bench/first_call.py            # prints a table; each case in a fresh process and build folder

Cases: `Exp(-SqDist(x,y)) * b` with b = Vj(W) (W = 512, 4096; x, y of dimension 3), the 16 nearest
neighbours and the Gaussian with x, y of dimension W = 512 and 4096, and GPyTorch's exact GP
(gpytorch.kernels.keops.RBFKernel through `keomlir.install_as_pykeops()`, n = 1000, with
max_cholesky_size(0): CG and Lanczos, or with Cholesky of the dense K that its KeOps kernel
computes as K @ I): its first marginal log likelihood and gradient.  Times include parsing, passes, LLVM, loading and the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


CASES = {
    "Gaussian, b = Vj(512), D = 3": ("gauss", 3, 512),
    "Gaussian, b = Vj(4096), D = 3": ("gauss", 3, 4096),
    "Gaussian, x, y of D = 512, b = Vj(4)": ("gauss", 512, 4),
    "Gaussian, x, y of D = 4096, b = Vj(4)": ("gauss", 4096, 4),
    "ArgKMin K=16, D = 512": ("knn", 512, 0),
    "ArgKMin K=16, D = 4096": ("knn", 4096, 0),
    "GPyTorch exact GP, keops RBF, n = 1000, max_cholesky_size(0): MLL + gradient": ("gpytorch", 1000, 0),
    "the same with Cholesky (dense K from K @ I, I = Vj(1000)): MLL + gradient": ("gpytorch", 1000, 1),
}

CHILD = r"""
import sys, time
kind, d, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
if kind == "gpytorch":
    import keomlir
    keomlir.install_as_pykeops()  # gpytorch.kernels.keops then runs on keomlir, not an installed pykeops
    import torch, gpytorch
    x = torch.rand(d, 3, dtype=torch.float64); y = torch.sin(6 * x.sum(1))
    t0 = time.perf_counter()
    lik = gpytorch.likelihoods.GaussianLikelihood()
    class GP(gpytorch.models.ExactGP):
        def __init__(s):
            super().__init__(x, y, lik)
            s.mean = gpytorch.means.ConstantMean()
            s.cov = gpytorch.kernels.ScaleKernel(gpytorch.kernels.keops.RBFKernel())
        def forward(s, z):
            return gpytorch.distributions.MultivariateNormal(s.mean(z), s.cov(z))
    model = GP().double(); model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    with gpytorch.settings.max_cholesky_size(0 if w == 0 else 10 ** 6):
        loss = -mll(model(x), y)
        loss.backward()
    print(time.perf_counter() - t0)
    raise SystemExit
from keomlir.numpy import Genred
from keomlir.backends import cpu
n = 2000
x = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
y = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
if kind == "gauss":
    b = rng.standard_normal((n, w)).astype(np.float32)
    g = Genred("Exp(-SqDist(x,y)) * b", [f"x = Vi({d})", f"y = Vj({d})", f"b = Vj({w})"], "Sum", axis=1)
    t0 = time.perf_counter(); g(x, y, b)
else:
    g = Genred("SqDist(x,y)", [f"x = Vi({d})", f"y = Vj({d})"], "ArgKMin", axis=1, opt_arg=16)
    t0 = time.perf_counter(); g(x, y)
print(time.perf_counter() - t0)
"""


def main():
    print(f"# first calls, cold cache ({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")
    for label, (kind, d, w) in CASES.items():
        with tempfile.TemporaryDirectory() as build:
            env = dict(os.environ, KEOMLIR_CACHE_DIR=build)
            out = subprocess.run([sys.executable, "-c", CHILD, kind, str(d), str(w)], env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                print(f"| {label} | failed: {out.stderr.strip().splitlines()[-1]} |")
            else:
                print(f"| {label} | {float(out.stdout.split()[-1]):.2f} s |", flush=True)


if __name__ == "__main__":
    main()
