"""The helper modules pykeops ships and its tutorials, benchmarks and tests import, as
keomlir provides them: `keomlir.numpy.utils`, `keomlir.torch.utils`, `keomlir.common`
(`pykeops.numpy.utils`, ... after install_as_pykeops()), and pykeops's top-level helpers."""

import numpy as np
import pytest
import torch

import keomlir
from keomlir.backends import cuda
from keomlir.common import gpu_utils, lazy_tensor, utils
from keomlir.numpy import LazyTensor as NumpyLazyTensor
from keomlir.numpy import utils as np_utils
from keomlir.torch import ComplexLazyTensor, LazyTensor
from keomlir.torch import utils as torch_utils

from conftest import assert_close

RNG = np.random.default_rng(0)
X, Y = RNG.normal(size=(5, 3)), RNG.normal(size=(7, 3))
S = 0.8
# the squared distances and the kernels, pair by pair
D2 = np.array([[float(np.sum((a - b) ** 2)) for b in Y] for a in X])
KERNELS = {"gaussian": np.exp(-D2 / S ** 2), "laplacian": np.exp(-np.sqrt(D2) / S),
           "cauchy": 1 / (1 + D2 / S ** 2), "inverse_multiquadric": (1 + D2 / S ** 2) ** -0.5}


def test_numpy_reference_kernels():
    assert_close(np_utils.squared_distances(X, Y), D2, "float64")
    diff = np_utils.differences(X, Y)
    assert diff.shape == (3, 5, 7) and diff[1, 2, 4] == X[2, 1] - Y[4, 1]
    h = 1e-6
    for name, k in KERNELS.items():
        assert_close(np_utils.np_kernel(X, Y, S, name), k, "float64")
        assert_close(np_utils.log_np_kernel(X, Y, S, name), np.log(k), "float64")
        # the derivative in the squared distance, by central differences in D2
        r2 = D2 / S ** 2
        forms = {"gaussian": lambda r: np.exp(-r), "laplacian": lambda r: np.exp(-np.sqrt(r)),
                 "cauchy": lambda r: 1 / (1 + r), "inverse_multiquadric": lambda r: (1 + r) ** -0.5}
        numeric = (forms[name](r2 + h / S ** 2) - forms[name](r2 - h / S ** 2)) / (2 * h)
        assert_close(np_utils.grad_np_kernel(X, Y, S, name), numeric, "float64", rtol=1e-6, atol=1e-6)
    assert np_utils.np_kernel(X, Y, S, "unknown") is None


def test_numpy_sphere_kernels_and_chain_rule():
    a, b = X / np.linalg.norm(X, axis=1, keepdims=True), Y / np.linalg.norm(Y, axis=1, keepdims=True)
    prs = np.array([[float(u @ v) for v in b] for u in a])
    assert_close(np_utils.np_kernel_sphere(a, b, S, "binet"), prs ** 2, "float64")
    assert_close(np_utils.np_kernel_sphere(a, b, S, "gaussian_oriented"), np.exp((2 * prs - 2) / S ** 2), "float64")
    assert_close(np_utils.np_kernel_sphere(a, b, S, "gaussian_unoriented"),
                 np.exp((2 * prs ** 2 - 2) / S ** 2), "float64")
    q, p, aa = RNG.normal(size=(5, 2)), RNG.normal(size=(7, 2)), RNG.normal(size=(5, 7))
    expected = np.zeros((5, 3))
    for i in range(5):
        for d in range(3):
            m = 2 * (X[:, d][:, None] - Y[:, d][None, :]) * aa
            expected[i, d] = sum(q[i, e] * sum(m[i, j] * p[j, e] for j in range(7)) for e in range(2))
    out = np_utils.chain_rules(q, X, Y, aa, p)
    assert out.dtype == np.float32
    assert_close(out, expected, "float32")


def test_log_sum_exp_does_not_overflow():
    m = np.array([[1000.0, 1000.0], [-1000.0, 0.0]])
    assert_close(np_utils.log_sum_exp(m, axis=1), [1000 + np.log(2), np.log1p(np.exp(-1000.0))], "float64")
    assert_close(np_utils.log_sum_exp(m, axis=0), [1000.0, 1000 + np.log(1 + np.exp(-1000.0))], "float64")


def test_toolboxes():
    nt, tt = utils.get_tools("numpy"), utils.get_tools("pytorch")
    assert isinstance(nt, np_utils.numpytools) and isinstance(tt, torch_utils.torchtools)
    z = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert nt.view_as_complex(z).tolist() == [[1 + 2j, 3 + 4j]] and nt.view_as_real(nt.view_as_complex(z)) is not z
    assert tt.view_as_complex(torch.tensor(z)).tolist() == [[1 + 2j, 3 + 4j]]
    assert tt.view_as_real(tt.view_as_complex(torch.tensor(z))).tolist() == z.tolist()
    assert nt.dtypename(np.dtype("float32")) == "float32" and tt.dtypename(torch.float16) == "float16"
    assert nt.detect_complex([1.0, 2j]) and not tt.detect_complex(torch.ones(2))
    assert tt.array([1, 2], "int64", "cpu").dtype == torch.int64 and nt.Genred is keomlir.numpy.Genred
    with pytest.raises(ValueError, match="dtypename: torch.int8 is not a data type"):
        tt.dtypename(torch.int8)
    with pytest.raises(ValueError, match="get_tools: lang must be"):
        utils.get_tools("jax")


def test_torch_reference_kernels():
    x, y = torch.tensor(X), torch.tensor(Y)
    assert_close(torch_utils.squared_distances(x, y), D2, "float64")
    for name, k in KERNELS.items():
        assert_close(torch_utils.torch_kernel(x, y, S, name), k, "float64")
    with pytest.raises(KeyError):
        torch_utils.torch_kernel(x, y, S, "unknown")
    assert not torch_utils.is_on_device(x)
    a = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    assert_close(a @ torch_utils.torchsolve(a, torch.ones(2, 1, dtype=torch.float64)), np.ones((2, 1)), "float64")


def test_common_utils(capsys):
    assert [utils.axis2cat(0), utils.axis2cat(1), utils.cat2axis(0), utils.cat2axis(1)] == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="axis2cat: axis must be 0 or 1"):
        utils.axis2cat(2)
    assert utils.check_broadcasting((5, 1, 3), (4, 1)) == (5, 4, 3)
    assert utils.check_broadcasting(None, (2,)) == (2,)
    with pytest.raises(ValueError, match=r"Incompatible batch dimensions: \(2,\) and \(3,\)"):
        utils.check_broadcasting((2,), (3,))
    try:
        keomlir.set_verbose(True)
        utils.pyKeOps_Message("hello")
        utils.pyKeOps_Warning("careful")
        keomlir.set_verbose(False)
        assert keomlir.verbose is False
        utils.pyKeOps_Message("hidden")
    finally:
        keomlir.set_verbose(True)
    assert capsys.readouterr().out == "[pyKeOps] hello\n[pyKeOps] Warning : careful\n"
    assert gpu_utils.get_gpu_number() == cuda.device_count()
    assert lazy_tensor.is_complex_lazytensor(ComplexLazyTensor(torch.ones(3, 1, 2, dtype=torch.complex128)))
    assert not lazy_tensor.is_complex_lazytensor(LazyTensor(torch.ones(3, 1, 2)))
    assert isinstance(NumpyLazyTensor(np.ones((3, 1, 2))), lazy_tensor.GenericLazyTensor)
    utils.WarmUpGpu("numpy")  # compiles and runs a small reduction


def test_top_level_helpers(capsys):
    assert keomlir.default_device_id == 0 and keomlir.keops_get_build_folder() == keomlir.get_build_folder()
    keomlir.show_cuda_status()
    out = capsys.readouterr().out
    assert ("is available" if cuda.available() else "is not available") in out
    keomlir.check_health()
    out = capsys.readouterr().out
    assert "kernel cache in" in out and "keomlir is working with NumPy" in out
