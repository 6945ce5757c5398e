"""Reference kernels in plain torch and the tensor toolbox, as `pykeops.torch.utils`
offers them (`install_as_pykeops()` maps that name here): `squared_distances`,
`torch_kernel` (dense (M, N) matrices, for checks on small problems) and `torchtools`,
the torch side of `pykeops.common.utils.get_tools("torch")`."""

from __future__ import annotations

import torch

from . import Genred, KernelSolve
from .cluster import swap_axes

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
           "int32": torch.int32, "int64": torch.int64}


def is_on_device(x):
    """Is the tensor on a CUDA device."""
    return x.is_cuda


def torchsolve(A, B):
    """The solution X of A X = B."""
    return torch.linalg.solve(A, B)


class torchtools:  # noqa: N801  (pykeops's name)
    """Tensor operations under one name for torch (`numpytools` is the NumPy twin)."""

    copy = staticmethod(torch.clone)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    norm = staticmethod(torch.norm)
    swap_axes = staticmethod(swap_axes)
    Genred = Genred
    KernelSolve = KernelSolve
    arraytype = torch.Tensor
    float_types = [float]

    @staticmethod
    def eq(x, y):
        return torch.eq(x, y)

    @staticmethod
    def transpose(x):
        return x.t()

    @staticmethod
    def permute(x, *dims):
        return x.permute(*dims)

    @staticmethod
    def contiguous(x):
        return x.contiguous()

    @staticmethod
    def solve(A, b):
        return torchsolve(A, b).contiguous()

    @staticmethod
    def arraysum(x, axis=None):
        return x.sum() if axis is None else x.sum(dim=axis)

    @staticmethod
    def long(x):
        return x.long()

    @staticmethod
    def size(x):
        return x.numel()

    @staticmethod
    def tile(*args):
        return torch.Tensor.repeat(*args)

    @staticmethod
    def numpy(x):
        return x.detach().cpu().numpy()

    @staticmethod
    def view(x, shape):
        return x.view(shape)

    @staticmethod
    def is_tensor(x):
        return isinstance(x, torch.Tensor)

    @staticmethod
    def dtype(x):
        return x.dtype if hasattr(x, "dtype") else type(x)

    @staticmethod
    def detect_complex(x):
        """Is x complex: a complex tensor, a complex number, or a list holding one."""
        if isinstance(x, list):
            return any(isinstance(v, complex) for v in x)
        if isinstance(x, torch.Tensor):
            return torch.is_complex(x)
        return isinstance(x, complex)

    @staticmethod
    def view_as_complex(x):
        """Interleaved real pairs (..., 2D) as a complex tensor (..., D), without a copy."""
        return torch.view_as_complex(x.view(*x.shape[:-1], x.shape[-1] // 2, 2))

    @staticmethod
    def view_as_real(x):
        return torch.view_as_real(x).view(*x.shape[:-1], 2 * x.shape[-1])

    @staticmethod
    def dtypename(dtype):
        """'float16' / 'bfloat16' / 'float32' / 'float64' for a torch dtype (int stays int, a list is float32)."""
        names = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                 torch.bfloat16: "bfloat16", int: int, list: "float32"}
        if dtype not in names:
            raise ValueError(f"dtypename: {dtype} is not a data type keomlir computes with "
                             "(torch.float16, torch.bfloat16, torch.float32 or torch.float64)")
        return names[dtype]

    @staticmethod
    def rand(m, n, dtype, device):
        return torch.rand(m, n, dtype=dtype, device=device)

    @staticmethod
    def randn(m, n, dtype, device):
        return torch.randn(m, n, dtype=dtype, device=device)

    @staticmethod
    def zeros(shape, dtype, device, requires_grad=False):
        return torch.zeros(*shape, dtype=dtype, device=device, requires_grad=requires_grad)

    @staticmethod
    def empty(shape, dtype, device, requires_grad=False):
        return torch.empty(*shape, dtype=dtype, device=device, requires_grad=requires_grad)

    @staticmethod
    def eye(n, dtype, device):
        return torch.eye(n, dtype=dtype, device=device)

    @staticmethod
    def array(x, dtype, device):
        """A tensor of x; dtype named as a string ('float32', 'int64'...)."""
        if dtype not in _DTYPES:
            raise ValueError(f"array: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        return torch.tensor(x, dtype=_DTYPES[dtype], device=device)

    @staticmethod
    def device(x):
        return x.device if isinstance(x, torch.Tensor) else None

    @staticmethod
    def get_pointer(x):
        return x.data_ptr()

    @staticmethod
    def device_type_index(x):
        return (x.device.type, x.device.index) if isinstance(x, torch.Tensor) else (None, None)

    @staticmethod
    def pointer(x):
        return x.data.data_ptr()


def squared_distances(x, y):
    """|x_i - y_j|^2 for x (M, D) and y (N, D), by the expansion |x|^2 + |y|^2 - 2 <x, y>."""
    return (x ** 2).sum(1).reshape(-1, 1) + (y ** 2).sum(1).reshape(1, -1) - 2.0 * (x @ y.t())


def torch_kernel(x, y, s, kernel):
    """The (M, N) kernel matrix of 'gaussian', 'laplacian', 'cauchy' or 'inverse_multiquadric'
    at scale s (a KeyError for another name, as pykeops)."""
    r2 = squared_distances(x, y) / (s * s)
    forms = {"gaussian": lambda: torch.exp(-r2), "laplacian": lambda: torch.exp(-torch.sqrt(r2)),
             "cauchy": lambda: 1.0 / (1 + r2), "inverse_multiquadric": lambda: torch.rsqrt(1 + r2)}
    return forms[kernel]()
