"""The torch front end: values, gradients to any order, checks of its inputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keomlir.torch import Genred  # noqa: E402

ALIASES = {1: ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "p = Pm(1)"],
           0: ["x = Vj(3)", "y = Vi(3)", "b = Vi(2)", "p = Pm(1)"]}
CASES = [("Sum", "Exp(-p*SqDist(x,y)) * b", None),
         ("LogSumExp", "-p*SqDist(x,y)", None),
         ("LogSumExp", "-p*SqDist(x,y)", "Exp(b)"),
         ("SumSoftMaxWeight", "-p*SqDist(x,y)", "b*p")]


def _inputs(seed=0, m=5, n=6):
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    return t(m, 3), t(n, 3), t(n, 2), torch.tensor([0.7], dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("reduction,formula,formula2", CASES)
def test_gradcheck_and_gradgradcheck(reduction, formula, formula2, axis):
    g = Genred(formula, ALIASES[axis], reduction, axis=axis, formula2=formula2)
    args = _inputs()
    assert torch.autograd.gradcheck(lambda *a: g(*a), args)
    assert torch.autograd.gradgradcheck(lambda *a: g(*a), args)


@pytest.mark.parametrize("reduction,formula,formula2", CASES)
def test_matches_dense_torch(reduction, formula, formula2):
    x, y, b, p = _inputs(1, 7, 9)
    out = Genred(formula, ALIASES[1], reduction, axis=1, formula2=formula2)(x, y, b, p)
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    if reduction == "Sum":
        dense = torch.exp(-p * d2) @ b
    elif formula2 is None:
        dense = torch.logsumexp(-p * d2, dim=1, keepdim=True)
    elif reduction == "LogSumExp":
        dense = torch.log(torch.exp(-p * d2) @ torch.exp(b))
    else:
        dense = torch.softmax(-p * d2, dim=1) @ (b * p)
    torch.testing.assert_close(out, dense)
    grads = torch.autograd.grad(out.sum(), [x, y, b, p])
    dense_grads = torch.autograd.grad(dense.sum(), [x, y, b, p], allow_unused=True)
    for a, e in zip(grads, dense_grads):
        torch.testing.assert_close(a, e if e is not None else torch.zeros_like(a))


def test_seed_case_logsumexp_gradient_in_y():
    """LogSumExp of Square(p-a)*Exp(x+y) over j, M=3000, N=5000, float32, and its
    gradient in y, against a float64 dense reference."""
    r = np.random.default_rng(0)
    M, N = 3000, 5000
    x, y = r.normal(size=(M, 1)), r.normal(size=(N, 1))
    a, p = r.normal(size=(N, 1)), r.normal(size=1)
    g = Genred("Square(p-a)*Exp(x+y)", ["p = Pm(1)", "a = Vj(1)", "x = Vi(1)", "y = Vj(1)"],
               reduction_op="LogSumExp", axis=1)
    P, A, X = (torch.tensor(v, dtype=torch.float32) for v in (p, a, x))
    Y = torch.tensor(y, dtype=torch.float32, requires_grad=True)
    out = g(P, A, X, Y)
    (gy,) = torch.autograd.grad(out.sum(), [Y])

    Pd, Ad, Xd = (torch.tensor(v) for v in (p, a, x))
    Yd = torch.tensor(y, requires_grad=True)
    dense = torch.logsumexp(((Pd - Ad) ** 2).T * torch.exp(Xd + Yd.T), dim=1, keepdim=True)
    (gyd,) = torch.autograd.grad(dense.sum(), [Yd])
    rel = lambda u, v: (torch.linalg.norm(u.double() - v) / torch.linalg.norm(v)).item()  # noqa: E731
    assert rel(out, dense) < 1e-5
    assert rel(gy, gyd) < 1e-4


def test_indices_are_int64_and_not_differentiable():
    x, y, b, p = _inputs()
    idx = Genred("SqDist(x,y)", ALIASES[1], "ArgKMin", axis=1, opt_arg=3)(x, y, b, p)
    assert idx.dtype == torch.int64 and idx.shape == (5, 3) and not idx.requires_grad
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    assert torch.equal(idx, torch.argsort(d2, dim=1, stable=True)[:, :3])


def test_bad_inputs():
    x, y, b, p = _inputs()
    g = Genred("SqDist(x,y)", ALIASES[1], "Sum", axis=1)
    with pytest.raises(TypeError, match="expected a torch tensor"):
        g(x.detach().numpy(), y, b, p)
    with pytest.raises(TypeError, match="one dtype"):
        g(x.float(), y, b, p)
    with pytest.raises(ValueError, match="expected 3 columns"):
        g(x[:, :2], y, b, p)
    with pytest.raises(ValueError, match="backend"):
        g(x, y, b, p, backend="TPU")
    assert not Genred("SqDist(x,y)", ALIASES[1], "ArgMin", axis=1)(x, y, b, p).requires_grad


def test_backward_fuses_gradients_sharing_an_index():
    x, y, b, p = _inputs(2)
    g = Genred("Exp(-p*SqDist(x,y)) * b", ALIASES[1], "Sum", axis=1)
    out = g(x, y, b, p)
    grads = torch.autograd.grad(out.sum(), [x, y, b, p])
    # x and p reduce over j, y and b over i: two fused kernels instead of four
    assert sorted(g.derivatives.cache) == [(0, 3), (1, 2)]
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    dense = torch.autograd.grad((torch.exp(-p * d2) @ b).sum(), [x, y, b, p])
    for a, e in zip(grads, dense):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("formula", ["p*SqDist(x,y)", "p*(x-y)"])
@pytest.mark.parametrize("reduction", ["Min", "Max", "Min_ArgMin", "Max_ArgMax", "KMin", "KMin_ArgKMin"])
def test_gradients_through_selected_indices(reduction, formula, axis):
    """As torch.min / torch.topk: the derivative of F at the selected pairs."""
    x, y, _, p = _inputs(3)
    al = ["x = Vi(3)", "y = Vj(3)", "p = Pm(1)"] if axis == 1 else ["x = Vj(3)", "y = Vi(3)", "p = Pm(1)"]
    K = 3 if "K" in reduction else None
    g = Genred(formula, al, reduction, axis=axis, opt_arg=K)
    values = lambda *a: (lambda o: o[0] if isinstance(o, tuple) else o)(g(*a))  # noqa: E731
    out = values(x, y, p)
    d = p * ((x[:, None] - y[None]) ** 2).sum(-1) if "Sq" in formula else p * (x[:, None] - y[None])
    if K:
        dense = torch.topk(d, K, dim=1, largest=False).values
    else:
        dense = d.min(1).values if "Min" in reduction else d.max(1).values
    dense = dense.reshape(out.shape)
    torch.testing.assert_close(out, dense)
    w = torch.randn_like(dense)
    for a, e in zip(torch.autograd.grad((out * w).sum(), [x, y, p]), torch.autograd.grad((dense * w).sum(), [x, y, p])):
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradcheck(values, (x, y, p))


def test_softmax_gradient_with_a_weight_written_inline():
    g = Genred("-SqDist(Var(0,2,0),Var(1,2,1))", [], "SumSoftMaxWeight", axis=1, formula2="Var(2,3,1)")
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    y, b = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: g(x, y, b), (x,))
