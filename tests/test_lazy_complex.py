"""Complex LazyTensors (pykeops's ComplexLazyTensor) against dense complex NumPy / torch."""

import numpy as np
import pytest
import torch

import keomlir.numpy as kn
import keomlir.torch as kt


def _data(rng, dtype, m=40, n=57, d=3):
    real = np.float32 if dtype == np.complex64 else np.float64
    x, y = rng.standard_normal((m, 2)).astype(real), rng.standard_normal((n, 2)).astype(real)
    z = (rng.standard_normal((n, d)) + 1j * rng.standard_normal((n, d))).astype(dtype)
    w = (rng.standard_normal((m, d)) + 1j * rng.standard_normal((m, d))).astype(dtype)
    return x, y, z, w


def _close(a, b, dtype):
    assert a.dtype == np.dtype(dtype)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_fourier_sum_both_axes(dtype):
    rng = np.random.default_rng(0)
    x, y, z, w = _data(rng, dtype)
    phase = ((kn.Vi(x) - kn.Vj(y)) ** 2).sum(-1).exp1j()  # exp(i |x_i - y_j|^2), complex of dimension 1
    assert isinstance(phase, kn.ComplexLazyTensor) and phase.ndim == 1
    P = np.exp(1j * ((x[:, None] - y[None]) ** 2).sum(-1).astype(np.float64))
    _close((phase * kn.Vj(z)).sum(dim=1), (P[:, :, None] * z[None]).sum(1), dtype)
    _close((phase * kn.Vi(w)).sum(dim=0), (P[:, :, None] * w[:, None]).sum(0), dtype)
    _close(phase @ z, P @ z, dtype)  # K @ v with a complex K and v


def test_arithmetic_broadcasting_and_real_parts():
    rng = np.random.default_rng(1)
    x, y, z, w = _data(rng, np.complex128)
    zi, zj = kn.Vi(w), kn.Vj(z)
    s = kn.Vi(x[:, :1]).exp1j()  # a complex scalar per i
    r = kn.Vj(y)  # real, dimension 2
    cases = [
        (zi * zj + s, w[:, None] * z[None] + np.exp(1j * x[:, None, :1])),  # a complex scalar broadcast by +
        (zi / zj - 2.5j, w[:, None] / z[None] - 2.5j),
        (1 / zj + zi.conj(), 1 / z[None] + np.conj(w[:, None])),
        ((zi - zj).exp() * 3, np.exp(w[:, None] - z[None]) * 3),
        (zj * (2 - 1j), z[None] * (2 - 1j)),
        (-zi + r.sum(-1), -w[:, None] + y.sum(-1)[None, :, None]),  # a real scalar LazyTensor made complex
        (r.sum(-1) * zj, y.sum(-1)[None, :, None] * z[None]),  # real * complex: the real side promoted
    ]
    for lazy, dense in cases:
        assert isinstance(lazy, kn.ComplexLazyTensor)
        out = lazy.sum(dim=1)  # (1, 3) when no i-variable is involved, as pykeops
        np.testing.assert_allclose(out, np.broadcast_to(dense, (out.shape[0], 57, 3)).sum(1), rtol=1e-12)
    real_parts = [
        ((zi * zj).real, (w[:, None] * z[None]).real),
        ((zi * zj).imag, (w[:, None] * z[None]).imag),
        ((zi + zj).abs(), np.abs(w[:, None] + z[None])),
        (abs(zi + zj), np.abs(w[:, None] + z[None])),
        ((zi * zj).angle(), np.angle(w[:, None] * z[None])),
        ((zi - zj).sqnorm2(), (np.abs(w[:, None] - z[None]) ** 2).sum(-1, keepdims=True)),
    ]
    for lazy, dense in real_parts:
        assert isinstance(lazy, kn.LazyTensor) and not isinstance(lazy, kn.ComplexLazyTensor)
        np.testing.assert_allclose(lazy.sum(dim=1), dense.sum(1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((zi * zj).sum(-1).sum(dim=1), (w[:, None] * z[None]).sum(-1).sum(1)[:, None],
                               rtol=1e-12)


def test_torch_complex_gradients_match_dense_autograd():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randn(45, 2, dtype=torch.float64, generator=gen)
    z = torch.randn(45, 2, dtype=torch.complex128, generator=gen).requires_grad_()
    out = (((kt.Vi(x) - kt.Vj(y)) ** 2).sum(-1).exp1j() * kt.Vj(z)).sum(dim=1)
    assert out.dtype == torch.complex128 and out.shape == (30, 2)
    P = torch.exp(1j * ((x[:, None] - y[None]) ** 2).sum(-1))
    ref = P @ z
    torch.testing.assert_close(out, ref)
    loss, loss_ref = (out.abs() ** 2).sum(), (ref.abs() ** 2).sum()
    torch.testing.assert_close(torch.autograd.grad(loss, [x, z]), torch.autograd.grad(loss_ref, [x, z]))


def test_operations_without_a_complex_meaning_are_refused():
    rng = np.random.default_rng(2)
    _, _, z, w = _data(rng, np.complex128)
    k = kn.Vi(w) * kn.Vj(z)
    for bad in (lambda: k.min(dim=1), lambda: k.logsumexp(dim=1), lambda: k.log(), lambda: k ** 2,
                lambda: k.sqrt(), lambda: k < 1, lambda: k.argKmin(3, dim=1)):
        with pytest.raises(TypeError, match="complex"):
            bad()
    with pytest.raises(ValueError, match="complex dimensions 3 and 2"):
        kn.Vi(w) + kn.Vj(z[:, :2])


def test_construction_from_complex_arrays():
    z = np.arange(12).reshape(4, 3) * (1 + 2j)
    lz = kn.LazyTensor(z[:, None, :])
    assert isinstance(lz, kn.ComplexLazyTensor) and lz.shape == (4, 1, 3) and lz.ndim == 3
    assert isinstance(kn.LazyTensor(z.real[:, None, :]), kn.LazyTensor)
    assert isinstance(kt.LazyTensor(torch.from_numpy(z)[None]), kt.ComplexLazyTensor)
    with pytest.raises(TypeError, match="ComplexLazyTensor: expected a complex array"):
        kn.ComplexLazyTensor(z.real)
