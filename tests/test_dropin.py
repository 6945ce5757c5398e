"""What pykeops code and the libraries built on it expect of keomlir beyond Genred's
numbers: out=, K given as any integer, pykeops.config / keopscore.config, and
install_as_pykeops() mapping the module names."""

import subprocess
import sys

import numpy as np
import pytest

import keomlir
from keomlir import config
from keomlir.backends import registry
from keomlir.numpy import Genred, LazyTensor

from conftest import assert_close

ALIASES = ["x = Vi(3)", "y = Vj(3)"]


def _points(rng, m=30, n=40):
    return rng.standard_normal((m, 3)), rng.standard_normal((n, 3))


def _dense_sqdist(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1)


@pytest.mark.parametrize("make_k", [int, np.int64, np.int32, lambda k: np.array(k)], ids=["int", "int64", "int32", "0-d"])
def test_k_as_any_integer(make_k, rng):
    x, y = _points(rng)
    want = np.argsort(_dense_sqdist(x, y), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(Genred("SqDist(x,y)", ALIASES, "ArgKMin", axis=1, opt_arg=make_k(4))(x, y), want)
    lazy = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)
    np.testing.assert_array_equal(lazy.argKmin(make_k(4), dim=1), want)


@pytest.mark.parametrize("bad", [4.0, True, "4", np.array([4])])
def test_k_that_is_not_an_integer_is_refused(bad, rng):
    with pytest.raises(ValueError, match="opt_arg"):
        Genred("SqDist(x,y)", ALIASES, "ArgKMin", axis=1, opt_arg=bad)


def test_torch_k_and_out(rng):
    torch = pytest.importorskip("torch")
    from keomlir.torch import Genred as TorchGenred

    x, y = (torch.from_numpy(a) for a in _points(rng))
    want = torch.from_numpy(np.argsort(_dense_sqdist(x.numpy(), y.numpy()), axis=1, kind="stable")[:, :3])
    knn = TorchGenred("SqDist(x,y)", ALIASES, "ArgKMin", axis=1, opt_arg=torch.tensor(3))
    assert torch.equal(knn(x, y), want)
    gauss = TorchGenred("Exp(-SqDist(x,y))", ALIASES, "Sum", axis=1)
    out = torch.full((30, 1), float("nan"), dtype=torch.float64)
    assert gauss(x, y, out=out) is out
    assert_close(out.numpy(), np.exp(-_dense_sqdist(x.numpy(), y.numpy())).sum(1, keepdims=True), "float64")
    with pytest.raises(ValueError, match="out: expected a tensor of shape"):
        gauss(x, y, out=torch.empty(30, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="out: reduction KMin_ArgKMin returns 2 outputs"):
        TorchGenred("SqDist(x,y)", ALIASES, "KMin_ArgKMin", axis=1, opt_arg=2)(x, y, out=out)
    with pytest.raises(RuntimeError, match="not differentiable"):
        gauss(x.clone().requires_grad_(), y, out=out)
    with torch.no_grad():
        assert gauss(x.clone().requires_grad_(), y, out=out) is out


def test_config_use_cuda_keeps_auto_on_the_cpu(monkeypatch, rng):
    """With a (pretended) GPU that 'auto' would pick, use_cuda = False runs on the CPU."""
    x, y = _points(rng)
    calls = []
    gpu = registry.get("GPU")
    monkeypatch.setattr(gpu, "wants", lambda launch: True)
    monkeypatch.setattr(gpu, "run", lambda launch, arrays, device_id: calls.append(launch) or [None])
    monkeypatch.setattr(gpu, "available", lambda: True)
    g = Genred("Exp(-SqDist(x,y))", ALIASES, "Sum", axis=1)
    assert "use_cuda" not in vars(config) and config.use_cuda  # unset: the driver's answer
    assert g(x, y) is None and len(calls) == 1  # 'auto' went to the (fake) GPU
    config.use_cuda = False
    try:
        assert_close(g(x, y), np.exp(-_dense_sqdist(x, y)).sum(1, keepdims=True), "float64")
        assert len(calls) == 1
    finally:
        del config.use_cuda
    assert config.use_cuda


def test_config_build_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("KEOMLIR_CACHE_DIR", raising=False)
    config.set_build_folder(tmp_path / "kernels")
    try:
        assert keomlir.get_build_folder() == str(tmp_path / "kernels")
    finally:
        config.set_build_folder(None)
    assert keomlir.get_build_folder() != str(tmp_path / "kernels")


INSTALL = """
import sys, keomlir
mapping = keomlir.install_as_pykeops()
import pykeops, keopscore
import pykeops.numpy, pykeops.numpy.cluster, pykeops.config, keopscore.config
from pykeops.numpy import Genred, LazyTensor, Vi, Vj, Pm, generic_sum, KernelSolve
from pykeops.numpy.cluster import grid_cluster, from_matrix
import keomlir.numpy, keomlir.numpy.cluster, keomlir.config
assert pykeops is keomlir and keopscore is keomlir
assert pykeops.numpy is keomlir.numpy and pykeops.numpy.cluster is keomlir.numpy.cluster
assert pykeops.config is keomlir.config and keopscore.config.config is keomlir.config
assert Genred is keomlir.numpy.Genred and grid_cluster is keomlir.numpy.cluster.grid_cluster
import pykeops.numpy.utils, pykeops.common.utils, pykeops.common.gpu_utils, keomlir.common
from pykeops.numpy.utils import squared_distances, np_kernel, log_sum_exp
from pykeops.numpy.operations import KernelSolve as KS
from pykeops.common.utils import pyKeOps_Message
from pykeops.common.lazy_tensor import GenericLazyTensor
assert pykeops.numpy.utils is keomlir.numpy.utils and pykeops.common is keomlir.common
assert pykeops.common.gpu_utils.get_gpu_number is keomlir.common.gpu_utils.get_gpu_number
assert KS is KernelSolve and isinstance(LazyTensor(1.0), GenericLazyTensor)
if keomlir.torch_found:
    import pykeops.torch, pykeops.torch.cluster, keomlir.torch, keomlir.torch.utils
    from pykeops.torch.utils import torch_kernel
    from pykeops.torch.operations import KernelSolve as TKS
    from pykeops.torch.lazytensor.LazyTensor import LazyTensor as TLT
    assert pykeops.torch is keomlir.torch and pykeops.torch.cluster is keomlir.torch.cluster
    assert torch_kernel is keomlir.torch.utils.torch_kernel
    assert TKS is keomlir.torch.KernelSolve and TLT is keomlir.torch.LazyTensor
keopscore.config.config.use_cuda = False
assert keomlir.config.use_cuda is False
print(sorted(mapping))
"""


def test_install_as_pykeops_maps_the_names():
    done = subprocess.run([sys.executable, "-c", INSTALL], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    names = eval(done.stdout.strip().splitlines()[-1])  # a printed list of strings, from our own script
    assert {"pykeops", "pykeops.numpy", "pykeops.numpy.cluster", "pykeops.config", "keopscore",
            "keopscore.config", "pykeops.numpy.utils", "pykeops.common", "pykeops.common.utils",
            "pykeops.common.gpu_utils", "pykeops.common.lazy_tensor"} <= set(names)


def test_install_as_pykeops_warns_about_an_earlier_import():
    code = ("import sys, types, warnings; sys.modules['pykeops'] = types.ModuleType('pykeops')\n"
            "import keomlir\nwith warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always')\n"
            "    keomlir.install_as_pykeops()\nprint([str(x.message) for x in w])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "pykeops had already been imported" in done.stdout
