"""Leading batch dimensions run as ONE block-sparse kernel call (no loop over the batch):
results equal a loop over the elements against a dense float64 NumPy oracle, indices
stay local to their element, parameters may vary over the batch, reduced rows that no
element changes are shared, and torch gradients flow back to every broadcast argument."""

import numpy as np
import pytest

from keomlir.backends import cpu
from keomlir.numpy import Genred

from conftest import assert_close


@pytest.fixture
def count_calls(monkeypatch):
    """How many kernel calls (dense or block-sparse) a piece of code makes."""
    calls = []
    dense, sparse = cpu.CpuKernel.__call__, cpu.CpuKernel.run_ranges
    monkeypatch.setattr(cpu.CpuKernel, "__call__", lambda self, *a: calls.append("dense") or dense(self, *a))
    monkeypatch.setattr(cpu.CpuKernel, "run_ranges", lambda self, *a: calls.append("ranges") or sparse(self, *a))
    return calls


def dense_gauss(x, y, b, p):
    return np.exp(-p * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b


@pytest.mark.parametrize("axis", [0, 1])
def test_batched_sum_is_one_call(axis, rng, count_calls):
    x = rng.standard_normal((2, 3, 7, 3))  # batch (2, 3)
    y = rng.standard_normal((1, 3, 9, 3))  # broadcast over the first batch dimension
    b = rng.standard_normal((9, 2))  # shared by every element
    p = rng.random((2, 1, 1)) + 0.5  # a parameter that varies over the first batch dimension
    i, j = ("Vi", "Vj") if axis == 1 else ("Vj", "Vi")
    g = Genred("Exp(-p * SqDist(x,y)) * b", [f"x = {i}(3)", f"y = {j}(3)", f"b = {j}(2)", "p = Pm(1)"], "Sum",
               axis=axis)
    out = g(x, y, b, p)
    assert count_calls == ["ranges"] and out.shape == (2, 3, 7, 2)
    for s in range(2):
        for t in range(3):
            assert_close(out[s, t], dense_gauss(x[s, t], y[0, t], b, p[s, 0, 0]), "float64")


def test_batched_indices_are_local(rng, count_calls):
    x, y = rng.standard_normal((4, 6, 2)), rng.standard_normal((4, 11, 2))
    knn = Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "KMin_ArgKMin", axis=1, opt_arg=3)
    values, indices = knn(x, y)
    assert count_calls == ["ranges"] and indices.shape == (4, 6, 3)
    d2 = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    want = np.argsort(d2, axis=-1, kind="stable")[..., :3]
    np.testing.assert_array_equal(indices, want)
    assert_close(values, np.take_along_axis(d2, want, -1), "float64")
    # shared y (no batch on the reduced side): the same indices, y not copied
    shared = knn(x, y[0])[1]
    np.testing.assert_array_equal(shared, np.argsort(((x[:, :, None] - y[0][None, None]) ** 2).sum(-1),
                                                     axis=-1, kind="stable")[..., :3])


def test_batched_logsumexp_and_argmin_axis_0(rng):
    x, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 8, 2))
    lse = Genred("-SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "LogSumExp", axis=0)(x, y)
    am = Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "ArgMin", axis=0)(x, y)
    d2 = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)  # (3, 5, 8)
    m = (-d2).max(1)
    assert_close(lse[..., 0], m + np.log(np.exp(-d2 - m[:, None]).sum(1)), "float64")
    np.testing.assert_array_equal(am[..., 0], d2.argmin(1))


def test_batched_torch_gradients(rng):
    torch = pytest.importorskip("torch")
    from keomlir.torch import Genred as TorchGenred

    x = torch.tensor(rng.standard_normal((3, 5, 3)), requires_grad=True)
    y = torch.tensor(rng.standard_normal((8, 3)), requires_grad=True)  # shared by the batch
    b = torch.tensor(rng.standard_normal((3, 8, 1)), requires_grad=True)
    p = torch.tensor(rng.random((3, 1)) + 0.5, requires_grad=True)  # one per element
    g = TorchGenred("Exp(-p * SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "p = Pm(1)"], "Sum", 1)
    out = g(x, y, b, p)
    want = torch.exp(-p[:, :, None] * ((x[:, :, None] - y[None, None]) ** 2).sum(-1)) @ b
    torch.testing.assert_close(out, want)
    cot = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, y, b, p], cot)
    theirs = torch.autograd.grad(want, [x, y, b, p], cot)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e)
