"""pykeops's generic_sum / generic_logsumexp / generic_argmin / generic_argkmin (as GeomLoss calls
them): the axis from the output alias, against dense NumPy / torch."""

import numpy as np
import pytest
import torch

import keomlir.numpy as kn
import keomlir.torch as kt


def test_numpy_generic_reductions():
    rng = np.random.default_rng(0)
    x, y, b = rng.standard_normal((30, 3)), rng.standard_normal((40, 3)), rng.standard_normal((40, 1))
    D = ((x[:, None] - y[None]) ** 2).sum(-1)
    conv = kn.generic_sum("Exp(-SqDist(x,y)) * b", "a = Vi(1)", "x = Vi(3)", "y = Vj(3)", "b = Vj(1)")
    np.testing.assert_allclose(conv(x, y, b), np.exp(-D) @ b, rtol=1e-12)
    lse = kn.generic_logsumexp("-SqDist(x,y)", "a = Vj(1)", "x = Vi(3)", "y = Vj(3)")  # over i
    np.testing.assert_allclose(lse(x, y)[:, 0], np.log(np.exp(-D).sum(0)), rtol=1e-12)
    nn = kn.generic_argmin("SqDist(x,y)", "a = Vi(1)", "x = Vi(3)", "y = Vj(3)")
    np.testing.assert_array_equal(nn(x, y)[:, 0], D.argmin(1))
    knn = kn.generic_argkmin("SqDist(x,y)", "a = Vi(4)", "x = Vi(3)", "y = Vj(3)")
    np.testing.assert_array_equal(knn(x, y), np.argsort(D, axis=1, kind="stable")[:, :4])


def test_torch_generic_logsumexp_is_differentiable():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randn(25, 2, dtype=torch.float64, generator=gen)
    b = torch.randn(25, 1, dtype=torch.float64, generator=gen)
    p = torch.tensor([0.7], dtype=torch.float64)
    log_conv = kt.generic_logsumexp("(B - (P * SqDist(X, Y)))", "A = Vi(1)", "X = Vi(2)", "Y = Vj(2)", "B = Vj(1)",
                                    "P = Pm(1)")
    out = log_conv(x, y, b, p)
    ref = torch.logsumexp(b.T - p * ((x[:, None] - y[None]) ** 2).sum(-1), dim=1, keepdim=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])


def test_generic_output_alias_is_checked():
    with pytest.raises(ValueError, match=r"output 'a = Pm\(1\)'.*Vi\(...\) or Vj"):
        kn.generic_sum("SqDist(x,y)", "a = Pm(1)", "x = Vi(3)", "y = Vj(3)")
    with pytest.raises(ValueError, match=r"output 'a = Vi\(2\)': the Sum reduction of this formula has dimension 3"):
        kn.generic_sum("x - y", "a = Vi(2)", "x = Vi(3)", "y = Vj(3)")
    with pytest.raises(TypeError, match="output must be a string"):
        kn.generic_sum("x - y", 3, "x = Vi(3)", "y = Vj(3)")
