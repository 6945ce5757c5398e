"""Real pykeops client libraries, unmodified, on keomlir through install_as_pykeops():
GeomLoss (optimal transport) and GPyTorch (Gaussian processes).  Each runs in a fresh
interpreter (the libraries look pykeops up when they are imported) and reports its
errors against dense float64 references as JSON."""

import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
# each imports a client library and torch in a fresh interpreter: run by .ci/run
pytestmark = pytest.mark.slow
CLIENTS = pathlib.Path(__file__).resolve().parent / "clients"
ROOT = CLIENTS.parent.parent


def _run(script):
    done = subprocess.run([sys.executable, str(CLIENTS / script)], capture_output=True, text=True, timeout=900,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_geomloss_samples_loss_online_and_multiscale():
    pytest.importorskip("geomloss")
    results = _run("geomloss_on_keomlir.py")
    assert results.pop("pykeops is keomlir") and results.pop("geomloss sees keops")
    assert results.pop("kernels compiled") >= 8
    assert results.pop("block-sparse kernels") >= 1  # multiscale ran keomlir's ranges kernels
    cases = {"sinkhorn", "energy", "gaussian", "laplacian"}
    assert {k.split()[0] for k in results} == cases and any("batched" in k for k in results)
    for case, error in results.items():
        # Sinkhorn against GeomLoss's own dense backend (its iterations are the oracle's too);
        # the kernel norms against an exact float64 formula
        assert error < (1e-6 if case.startswith("sinkhorn") else 1e-12), (case, error)


def test_gpytorch_exact_gp_with_keops_kernels():
    pytest.importorskip("gpytorch")
    results = _run("gpytorch_on_keomlir.py")
    assert results.pop("pykeops is keomlir")
    for case in ("rbf exact", "matern exact", "rbf fast", "matern fast"):
        assert results[case + " kernels compiled"] >= 1, case
        scale = results[case + " scale"]
        # exact: dense solves on the same matrix; fast: CG/Lanczos with the same probes
        assert results[case] < (1e-12 if "exact" in case else 1e-6) * max(scale, 1), (case, results[case])
