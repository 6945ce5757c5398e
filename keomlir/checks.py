"""pykeops's top-level helpers under keomlir (`import keomlir as pykeops` keeps such calls working):
`test_numpy_bindings()` / `test_torch_bindings()` check an installation by running one
Gaussian kernel sum and comparing it with a dense evaluation; `clean_pykeops()` empties the
kernel cache; `show_cuda_status()` and `check_health()` report what keomlir can use here."""

from __future__ import annotations

import numpy as np

from . import config
from .backends import cache
from .backends.cuda import driver
from .numpy import Genred as NumpyGenred

_FORMULA = "Exp(-SqDist(x,y)) * b"
_ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((100, 3)), rng.standard_normal((150, 3)), rng.standard_normal((150, 1))


def _report(error, front_end):
    if not error < 1e-10:
        raise RuntimeError(f"keomlir's {front_end} bindings disagree with a dense evaluation: max error {error:.3g}")
    print(f"keomlir is working with {front_end} (max error {error:.1e} against a dense evaluation).")


def test_numpy_bindings():
    """Compile and run a Gaussian sum on NumPy arrays; raise unless it matches NumPy."""
    x, y, b = _data()
    got = NumpyGenred(_FORMULA, _ALIASES, reduction_op="Sum", axis=1)(x, y, b)
    want = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    _report(float(np.abs(got - want).max()), "NumPy")


def test_torch_bindings():
    """The same on torch tensors (on the GPU when torch has CUDA and keomlir a driver)."""
    import torch  # optional: only this check needs it

    from .torch import Genred as TorchGenred

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y, b = (torch.from_numpy(a).to(device) for a in _data())
    got = TorchGenred(_FORMULA, _ALIASES, reduction_op="Sum", axis=1)(x, y, b)
    want = torch.exp(-torch.cdist(x, y) ** 2) @ b
    _report(float((got - want).abs().max()), f"torch ({device})")


def clean_pykeops():
    """Delete the compiled kernels of keomlir's disk cache (kernels already loaded stay
    usable); returns how many were deleted."""
    return cache.clear()


def show_cuda_status():
    """Print whether keomlir's GPU backend is usable here, and why not when it is not."""
    if driver.available():
        print(f"keomlir: the GPU backend is available ({driver.device_count()} device(s), driver {driver.library_name()}).")
    else:
        print(f"keomlir: the GPU backend is not available ({driver.unavailable_reason()}); reductions run on the CPU.")


def check_health():
    """Print the set-up (kernel cache, front ends, GPU) and run the binding checks of the
    installed front ends; raises if a check disagrees with its dense evaluation."""
    print(f"keomlir: kernel cache in {config.get_build_folder()}")
    show_cuda_status()
    test_numpy_bindings()
    if config.torch_found:
        test_torch_bindings()
