"""Reference kernels in plain NumPy and the array toolbox, as `pykeops.numpy.utils`
offers them to tutorials, benchmarks and tests (`install_as_pykeops()` maps that name
here): dense matrices (`squared_distances`, `np_kernel`...), a stable `log_sum_exp`,
and `numpytools`, the NumPy side of `pykeops.common.utils.get_tools("numpy")`.
Everything here builds dense (M, N) arrays: they are oracles for small problems."""

from __future__ import annotations

import numpy as np

from .. import config
from . import Genred, KernelSolve
from .cluster import swap_axes

KERNELS = ("gaussian", "laplacian", "cauchy", "inverse_multiquadric")


class numpytools:  # noqa: N801  (pykeops's name)
    """Array operations under one name for NumPy (`torchtools` is the torch twin)."""

    norm = staticmethod(np.linalg.norm)
    arraysum = staticmethod(np.sum)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    Genred = Genred
    KernelSolve = KernelSolve
    swap_axes = staticmethod(swap_axes)
    arraytype = np.ndarray
    float_types = [float, np.float16, np.float32, np.float64]

    @staticmethod
    def is_tensor(x):
        return isinstance(x, np.ndarray)

    @staticmethod
    def copy(x):
        return np.copy(x)

    @staticmethod
    def eq(x, y):
        return np.equal(x, y)

    @staticmethod
    def transpose(x):
        return x.T

    @staticmethod
    def permute(x, *axes):
        return x.transpose(*axes)

    @staticmethod
    def contiguous(x):
        return np.ascontiguousarray(x)

    @staticmethod
    def numpy(x):
        return x

    @staticmethod
    def tile(*args):
        return np.tile(*args)

    @staticmethod
    def solve(a, b):
        return np.linalg.solve(a, b)

    @staticmethod
    def size(x):
        return x.size

    @staticmethod
    def view(x, shape):
        return np.reshape(x, shape)

    @staticmethod
    def long(x):
        return x.astype("int64")

    @staticmethod
    def dtype(x):
        return x.dtype

    @staticmethod
    def detect_complex(x):
        """Is x complex: a complex array, a complex number, or a list holding one."""
        if isinstance(x, list):
            return any(isinstance(v, complex) for v in x)
        if isinstance(x, np.ndarray):
            return np.iscomplexobj(x)
        return isinstance(x, complex)

    @staticmethod
    def view_as_complex(x):
        """Interleaved real pairs (..., 2D) as a complex array (..., D), without a copy."""
        return x.view({"float32": "complex64", "float64": "complex128"}[x.dtype.name])

    @staticmethod
    def view_as_real(x):
        return x.view({"complex64": "float32", "complex128": "float64"}[x.dtype.name])

    @staticmethod
    def dtypename(dtype):
        return np.dtype(dtype).name

    @staticmethod
    def rand(m, n, dtype):
        return np.random.rand(m, n).astype(dtype)

    @staticmethod
    def randn(m, n, dtype):
        return np.random.randn(m, n).astype(dtype)

    @staticmethod
    def zeros(shape, dtype, device=None, requires_grad=None):
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def empty(shape, dtype, device=None, requires_grad=None):
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def eye(n, dtype):
        return np.eye(n, dtype=dtype)

    @staticmethod
    def array(x, dtype, device=None):
        return np.array(x, dtype=dtype)

    @staticmethod
    def get_pointer(x):
        return x.__array_interface__["data"][0]

    @staticmethod
    def device(x):
        return "cpu"

    @staticmethod
    def device_type_index(x):
        return "cpu", None

    @staticmethod
    def device_dict(x):
        return {"cat": "cpu"}


def squared_distances(x, y):
    """|x_i - y_j|^2 for x (M, D) and y (N, D), by the expansion |x|^2 + |y|^2 - 2 <x, y>."""
    return (x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2.0 * (x @ y.T)


def differences(x, y):
    """x_i - y_j, coordinate first: an array (D, M, N)."""
    return x.T[:, :, None] - y.T[:, None, :]


def _scaled(x, y, s):
    return squared_distances(x, y) / (s * s)


def np_kernel(x, y, s, kernel):
    """The (M, N) kernel matrix k(|x_i - y_j| / s) of a radial kernel named in KERNELS."""
    r2 = _scaled(x, y, s)
    if kernel == "gaussian":
        return np.exp(-r2)
    if kernel == "laplacian":
        return np.exp(-np.sqrt(r2))
    if kernel == "cauchy":
        return 1.0 / (1 + r2)
    if kernel == "inverse_multiquadric":
        return 1.0 / np.sqrt(1 + r2)
    return None  # as pykeops: an unknown name gives None


def log_np_kernel(x, y, s, kernel):
    """log np_kernel(x, y, s, kernel), computed without the exponential."""
    r2 = _scaled(x, y, s)
    if kernel == "gaussian":
        return -r2
    if kernel == "laplacian":
        return -np.sqrt(r2)
    if kernel == "cauchy":
        return -np.log(1 + r2)
    if kernel == "inverse_multiquadric":
        return -0.5 * np.log(1.0 + r2)
    return None


def grad_np_kernel(x, y, s, kernel):
    """The derivative of the kernel with respect to the squared distance |x_i - y_j|^2."""
    r2 = _scaled(x, y, s)
    if kernel == "gaussian":
        return -np.exp(-r2) / (s * s)
    if kernel == "laplacian":
        r = np.sqrt(r2)
        return -np.exp(-r) / (2 * s * s * r)
    if kernel == "cauchy":
        return -1.0 / (s * (r2 + 1)) ** 2
    if kernel == "inverse_multiquadric":
        return -0.5 / ((s ** 2) * (r2 + 1) ** 1.5)
    return None


def np_kernel_sphere(nalpha, nbeta, s, kernel):
    """Kernels on unit vectors (normals) from their scalar products <a_i, b_j>."""
    prs = nalpha @ nbeta.T
    if kernel == "binet":
        return prs ** 2
    if kernel == "linear":
        return prs
    if kernel == "gaussian_unoriented":
        return np.exp((2.0 * prs * prs - 2.0) / (s * s))
    if kernel == "gaussian_oriented":
        return np.exp((2.0 * prs - 2.0) / (s * s))
    return None


def chain_rules(q, ax, by, Aa, p):
    """Σ_j q_ij (2 (x_i - y_j) Aa_ij) @ p, coordinate by coordinate: the gradient in x of a
    kernel with derivative matrix Aa, in float32 (as pykeops's reference)."""
    res = np.zeros(ax.shape, dtype="float32")
    for d in range(ax.shape[1]):
        diff = ax[:, d][:, None] - by[:, d][None, :]
        res[:, d] = np.sum(q * ((2 * diff * Aa) @ p), axis=1)
    return res


def log_sum_exp(mat, axis=0):
    """log Σ exp(mat) along `axis`, shifted by the maximum so that no exponential overflows."""
    top = mat.max(axis=axis)
    return top + np.log(np.sum(np.exp(mat - np.expand_dims(top, axis=axis)), axis=axis))


def WarmUpGpu():  # noqa: N802  (pykeops's name)
    """Run a small kernel twice before timings (compiles it, wakes the GPU when there is one)."""
    if config.verbose:
        print("[pyKeOps] Warming up the Gpu (numpy bindings) !!!")
    if config.gpu_available:
        routine = Genred("Exp(-oos2*SqDist(x,y))*b", ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)", "oos2 = Pm(1)"],
                         reduction_op="Sum", axis=1)
        x, b = np.random.rand(10, 1), np.random.rand(10, 1)
        for _ in range(2):
            routine(x, x, b, np.array([1.0]))
