"""One array adapter per array library: the few calls that differ between NumPy
arrays and torch tensors, for the code written once over both (LazyTensor,
KernelSolve, the block-sparse `cluster` helpers).

`NUMPY`, `TORCH` and `JAX` are the adapters; `adapter_for(x)` picks one for an array.
Dtypes may be given as names ("float64") or as the library's own dtype objects.
torch and jax are optional: their adapters import them on first use, never this module.
"""

from __future__ import annotations

import numpy as np

from .backends.launch import numpy_dtype

__all__ = ["JAX", "NUMPY", "TORCH", "adapter_for"]


class NumpyArrays:
    """NumPy arrays (CPU only: no device)."""

    name = "NumPy"
    array_word = "a NumPy array"

    # ---- what an array is --------------------------------------------------------------------
    def is_array(self, x):
        return isinstance(x, np.ndarray)

    def dtype(self, x):
        """The dtype's name: 'float32', 'int64'..."""
        return str(x.dtype)

    def kind(self, a):
        """'b' (bool), 'i' (integer), 'f' (real floating), 'c' (complex) or '?'."""
        return {"b": "b", "i": "i", "u": "i", "f": "f", "c": "c"}.get(a.dtype.kind, "?")

    def is_complex(self, x):
        return isinstance(x, np.ndarray) and x.dtype.kind == "c"

    def device(self, x):
        return None

    def size(self, a):
        return a.size

    # ---- making and converting arrays ------------------------------------------------------------
    def array(self, values, dtype, device=None):
        return np.asarray(values, dtype=numpy_dtype(dtype) if isinstance(dtype, str) else dtype)

    def as_array(self, value, like):
        """`value` (an array, a list...) as an array of this library, on `like`'s device."""
        return np.asarray(value)

    def astype(self, a, dtype):
        return a.astype(numpy_dtype(dtype) if isinstance(dtype, str) else dtype, copy=False)

    def int64(self, a):
        return a.astype(np.int64, copy=False)

    def to_int(self, scalar):
        return int(scalar)

    def plain(self, a):
        """`a` without autograd history (labels and indices are not differentiable)."""
        return a

    def float_dtype(self, *arrays):
        """The promoted floating dtype of the arrays (float64 when none is floating)."""
        dtypes = [a.dtype for a in arrays if a.dtype.kind == "f"]
        return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)

    def complex_to_real(self, z):
        """(..., D) complex -> (..., 2D) interleaved real pairs."""
        return np.ascontiguousarray(z).view(np.float32 if z.dtype == np.complex64 else np.float64)

    def real_to_complex(self, a):
        """(..., 2D) interleaved real pairs -> (..., D) complex."""
        return np.ascontiguousarray(a).view(np.complex64 if a.dtype == np.float32 else np.complex128)

    # ---- computing -------------------------------------------------------------------------------------
    def broadcast_to(self, a, shape):
        """A view of `a` repeated along dimensions of size 1 (reshaping it copies)."""
        return np.broadcast_to(a, shape)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def stack(self, arrays):
        return np.stack(arrays)

    def concat(self, arrays):
        return np.concatenate(arrays)

    def stack_columns(self, a, b):
        return np.stack((a, b), axis=1)

    def zeros_int64(self, n, like):
        return np.zeros(n, dtype=np.int64)

    def zeros_like(self, a):
        return np.zeros_like(a)

    def ranges_array(self, values):
        """The int64 array of a block-sparse `ranges` entry made from Python integers."""
        return np.asarray(values, dtype=np.int64)

    def all_finite(self, a):
        return bool(np.isfinite(a).all())

    def column_min(self, a):
        return a.min(axis=0)

    def floor_int64(self, a):
        return np.floor(a).astype(np.int64)

    def unique_rows_inverse(self, a):
        """The index of each row among the distinct rows, sorted lexicographically (first column first)."""
        return np.unique(a, axis=0, return_inverse=True)[1].reshape(-1)

    def stable_argsort(self, a):
        return np.argsort(a, kind="stable")

    def counts(self, lab, n):
        """int64 number of occurrences of each label 0..max(n, max(lab)+1)-1."""
        return np.bincount(lab.astype(np.int64, copy=False), minlength=n).astype(np.int64)

    def segment_sum(self, values, lab, n):
        """(n, ...) sums of the rows of `values` sharing a label."""
        out = np.zeros((n,) + values.shape[1:], dtype=values.dtype)
        np.add.at(out, lab, values)
        return out

    def divide(self, num, den):
        """num / den, where 0 / 0 is NaN without a warning."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return num / den

    def clamp_min(self, a, low):
        return np.where(a <= low, np.asarray(low, dtype=a.dtype), a)

    def cumsum_int64(self, a):
        return np.cumsum(a, axis=0, dtype=np.int64)

    def nonzero(self, mask):
        return np.nonzero(mask)

    # ---- pykeops's conventions for the cluster helpers, which differ between its front ends -------
    grid_anchor_at_min = False  # grid_cluster measures voxels from the origin

    def label_dtype(self, like):
        return np.int64

    def ranges_out(self, r):
        return np.asarray(r, dtype=np.int64)

    def slices_out(self, s, like):
        return np.asarray(s, dtype=np.int64)


class TorchArrays(NumpyArrays):
    """torch tensors: results stay on the inputs' device."""

    name = "torch"
    array_word = "a torch tensor"

    @property
    def torch(self):
        import torch  # optional dependency: imported when a torch array is first met

        return torch

    def is_array(self, x):
        return isinstance(x, self.torch.Tensor)

    def dtype(self, x):
        return str(x.dtype).replace("torch.", "")

    def kind(self, a):
        if a.dtype == self.torch.bool:
            return "b"
        if a.is_complex():
            return "c"
        if a.is_floating_point():
            return "f"
        return "i"

    def is_complex(self, x):
        return isinstance(x, self.torch.Tensor) and x.is_complex()

    def device(self, x):
        return x.device

    def size(self, a):
        return a.numel()

    def _dtype(self, dtype):
        return getattr(self.torch, dtype) if isinstance(dtype, str) else dtype

    def array(self, values, dtype, device=None):
        return self.torch.tensor(values, dtype=self._dtype(dtype), device=device)

    def as_array(self, value, like):
        if isinstance(value, self.torch.Tensor):
            return value.to(like.device)
        return self.torch.as_tensor(np.asarray(value), device=like.device)

    def astype(self, a, dtype):
        return a.to(self._dtype(dtype))

    def int64(self, a):
        return a.to(self.torch.int64)

    def to_int(self, scalar):
        return int(scalar.item()) if isinstance(scalar, self.torch.Tensor) else int(scalar)

    def plain(self, a):
        return a.detach()

    def float_dtype(self, *arrays):
        dtypes = [a.dtype for a in arrays if a.is_floating_point()]
        if not dtypes:
            return self.torch.get_default_dtype()
        out = dtypes[0]
        for d in dtypes[1:]:
            out = self.torch.promote_types(out, d)
        return out

    def complex_to_real(self, z):
        return self.torch.view_as_real(z).reshape(tuple(z.shape[:-1]) + (2 * z.shape[-1],))

    def real_to_complex(self, a):
        return self.torch.view_as_complex(a.reshape(tuple(a.shape[:-1]) + (-1, 2)).contiguous())

    def where(self, cond, a, b):
        return self.torch.where(cond, a, b)

    def broadcast_to(self, a, shape):
        return a.expand(shape)

    def stack(self, arrays):
        return self.torch.stack(arrays)

    def concat(self, arrays):
        return self.torch.cat(arrays)

    def stack_columns(self, a, b):
        return self.torch.stack((a, b), dim=1)

    def zeros_int64(self, n, like):
        return self.torch.zeros(n, dtype=self.torch.int64, device=like.device)

    def zeros_like(self, a):
        return self.torch.zeros_like(a)

    def ranges_array(self, values):
        return self.torch.tensor(values, dtype=self.torch.int64)

    def all_finite(self, a):
        return bool(self.torch.isfinite(a).all())

    def column_min(self, a):
        return a.min(dim=0).values

    def floor_int64(self, a):
        return self.torch.floor(a).to(self.torch.int64)

    def unique_rows_inverse(self, a):
        return self.torch.unique(a, dim=0, return_inverse=True)[1].reshape(-1)

    def stable_argsort(self, a):
        return self.torch.sort(a, stable=True).indices

    def counts(self, lab, n):
        return self.torch.bincount(lab, minlength=n).to(self.torch.int64)

    def segment_sum(self, values, lab, n):
        out = self.torch.zeros((n,) + tuple(values.shape[1:]), dtype=values.dtype, device=values.device)
        return out.index_add(0, lab.to(self.torch.int64), values)  # differentiable in values

    def divide(self, num, den):
        return num / den

    def clamp_min(self, a, low):
        return self.torch.where(a <= low, self.torch.full_like(a, low), a)

    def cumsum_int64(self, a):
        return self.torch.cumsum(a, dim=0, dtype=self.torch.int64)

    def nonzero(self, mask):
        return self.torch.nonzero(mask, as_tuple=True)

    grid_anchor_at_min = True  # grid_cluster measures voxels from the per-coordinate minimum

    def label_dtype(self, like):
        return self.torch.int32

    def ranges_out(self, r):
        return r  # pykeops.torch keeps the dtype of the given ranges

    def slices_out(self, s, like):
        return s.to(self.torch.int32)


class JaxArrays(NumpyArrays):
    """jax.Arrays, traced or not (CPU only).  Dtypes are JAX's canonical ones: without
    `jax_enable_x64`, int64 means int32 and float64 float32.  The block-sparse helpers
    (`keomlir.numpy.cluster`) have no JAX counterpart: their methods are NumPy's."""

    name = "JAX"
    array_word = "a jax.Array"

    @property
    def jnp(self):
        import jax.numpy  # optional dependency: imported when a JAX array is first met

        return jax.numpy

    def _dtype(self, dtype):
        import jax

        return jax.dtypes.canonicalize_dtype(numpy_dtype(str(dtype)))

    def is_array(self, x):
        import jax

        return isinstance(x, jax.Array)

    def is_complex(self, x):
        return self.is_array(x) and x.dtype.kind == "c"

    def size(self, a):
        return a.size

    def array(self, values, dtype, device=None):
        return self.jnp.asarray(values, dtype=self._dtype(dtype))

    def as_array(self, value, like):
        return self.jnp.asarray(value)

    def astype(self, a, dtype):
        return a.astype(self._dtype(dtype))

    def int64(self, a):
        return self.astype(a, "int64")

    def plain(self, a):
        import jax

        return jax.lax.stop_gradient(a)

    def float_dtype(self, *arrays):
        dtypes = [a.dtype for a in arrays if a.dtype.kind == "f"]
        return self.jnp.result_type(*dtypes) if dtypes else self._dtype("float64")

    def complex_to_real(self, z):
        pairs = self.jnp.stack((z.real, z.imag), axis=-1)
        return pairs.reshape(tuple(z.shape[:-1]) + (2 * z.shape[-1],))

    def real_to_complex(self, a):
        pairs = a.reshape(tuple(a.shape[:-1]) + (-1, 2))
        return self.jnp.asarray(pairs[..., 0] + 1j * pairs[..., 1])

    def broadcast_to(self, a, shape):
        return self.jnp.broadcast_to(a, shape)

    def where(self, cond, a, b):
        return self.jnp.where(cond, a, b)

    def stack(self, arrays):
        return self.jnp.stack(arrays)

    def concat(self, arrays):
        return self.jnp.concatenate(arrays)

    def stack_columns(self, a, b):
        return self.jnp.stack((a, b), axis=1)

    def zeros_like(self, a):
        return self.jnp.zeros_like(a)

    def all_finite(self, a):
        return bool(self.jnp.isfinite(a).all())

    def clamp_min(self, a, low):
        return self.jnp.maximum(a, low)

    def ranges_array(self, values):
        return np.asarray(values, dtype=np.int64)  # static: a keomlir call's ranges are known when JAX traces it


NUMPY, TORCH, JAX = NumpyArrays(), TorchArrays(), JaxArrays()


def adapter_for(x):
    """The adapter of array `x`: NUMPY for NumPy arrays (and anything neither a torch tensor
    nor a JAX array)."""
    module = type(x).__module__
    return TORCH if module.startswith("torch") else JAX if module.startswith(("jax", "jaxlib")) else NUMPY
