"""torch.func's transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) on keomlir
reductions against the same transforms of the dense float64 torch formula: reverse
mode through keomlir's backward, forward mode through Diff reductions, vmap through
keomlir's batch dimensions."""

import pytest

torch = pytest.importorskip("torch")
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap  # noqa: E402

from keomlir.torch import Genred  # noqa: E402

M, N = 6, 8
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(M, 3, generator=g, dtype=torch.float64), torch.randn(N, 3, generator=g, dtype=torch.float64)
    b, t = torch.randn(N, 2, generator=g, dtype=torch.float64), torch.randn(M, 3, generator=g, dtype=torch.float64)
    return x, y, b, t


def sqdist(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1)


# (name, keomlir Genred arguments, dense torch function of (x, y, b))
CASES = {
    "Sum": (("Exp(-SqDist(x,y)) * b", "Sum", {}), lambda x, y, b: torch.exp(-sqdist(x, y)) @ b),
    "LogSumExp": (("-SqDist(x,y) + (b|b)", "LogSumExp", {}),
                  lambda x, y, b: torch.logsumexp(-sqdist(x, y) + (b * b).sum(-1)[None], 1, keepdim=True)),
    "weighted LogSumExp": (("-SqDist(x,y)", "LogSumExp", {"formula2": "Exp(b)"}),
                           lambda x, y, b: torch.log(torch.exp(-sqdist(x, y)) @ torch.exp(b))),
    "SumSoftMaxWeight": (("-SqDist(x,y)", "SumSoftMaxWeight", {"formula2": "b"}),
                         lambda x, y, b: torch.softmax(-sqdist(x, y), 1) @ b),
    "Min": (("SqDist(x,y) + Elem(b, 0)", "Min", {}),
            lambda x, y, b: (sqdist(x, y) + b[None, :, 0]).min(1, keepdim=True).values),
    "KMin": (("SqDist(x,y) + Elem(b, 1)", "KMin", {"opt_arg": 3}),
             lambda x, y, b: torch.topk(sqdist(x, y) + b[None, :, 1], 3, dim=1, largest=False).values),
}


def _pair(name):
    (formula, op, kw), dense = CASES[name]
    g = Genred(formula, ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], op, axis=1, **kw)
    return (lambda x, y, b: g(x, y, b)), dense


@pytest.mark.parametrize("name", CASES)
def test_reverse_mode_transforms(name, data):
    x, y, b, _ = data
    ours, dense = _pair(name)
    torch.testing.assert_close(grad(lambda x: ours(x, y, b).sum())(x), grad(lambda x: dense(x, y, b).sum())(x), **TOL)
    out, pull = vjp(lambda y, b: ours(x, y, b), y, b)
    out_d, pull_d = vjp(lambda y, b: dense(x, y, b), y, b)
    cot = torch.randn_like(out)
    torch.testing.assert_close(out, out_d, **TOL)
    for a, e in zip(pull(cot), pull_d(cot)):
        torch.testing.assert_close(a, e, **TOL)
    torch.testing.assert_close(jacrev(lambda x: ours(x, y, b))(x), jacrev(lambda x: dense(x, y, b))(x), **TOL)


@pytest.mark.parametrize("name", CASES)
def test_forward_mode_transforms(name, data):
    x, y, b, t = data
    ours, dense = _pair(name)
    tb = torch.randn_like(b)
    got = jvp(lambda x, b: ours(x, y, b), (x, b), (t, tb))
    want = jvp(lambda x, b: dense(x, y, b), (x, b), (t, tb))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOL)
    torch.testing.assert_close(jacfwd(lambda y: ours(x, y, b))(y), jacfwd(lambda y: dense(x, y, b))(y), **TOL)


@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "SumSoftMaxWeight"])
def test_hessian(name, data):
    x, y, b, _ = data
    ours, dense = _pair(name)
    torch.testing.assert_close(hessian(lambda x: ours(x, y, b).sum())(x),
                               hessian(lambda x: dense(x, y, b).sum())(x), **TOL)


@pytest.mark.parametrize("name", ["Sum", "LogSumExp", "Min"])
def test_vmap_over_points_and_weights(name, data):
    x, y, b, _ = data
    ours, dense = _pair(name)
    xs, bs = torch.randn(4, M, 3, dtype=torch.float64), torch.randn(4, N, 2, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda x: ours(x, y, b))(xs), vmap(lambda x: dense(x, y, b))(xs), **TOL)
    # batch along another dimension, and two batched arguments
    torch.testing.assert_close(vmap(lambda x, b: ours(x, y, b), in_dims=(1, 0))(xs.movedim(0, 1), bs),
                               vmap(lambda x, b: dense(x, y, b), in_dims=(1, 0))(xs.movedim(0, 1), bs), **TOL)


def test_parameters_and_axis_0(data):
    x, y, b, _ = data
    g = Genred("Exp(-p * SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vi(2)", "p = Pm(1)"], "Sum", axis=0)
    bi = torch.randn(M, 2, dtype=torch.float64)

    def dense(y, p):
        return torch.exp(-p * sqdist(x, y)).T @ bi

    p = torch.tensor([0.7], dtype=torch.float64)
    torch.testing.assert_close(jacfwd(lambda p: g(x, y, bi, p))(p), jacfwd(lambda p: dense(y, p))(p), **TOL)
    torch.testing.assert_close(jacrev(lambda y: g(x, y, bi, p))(y), jacrev(lambda y: dense(y, p))(y), **TOL)
    ps = torch.rand(5, 1, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda p: g(x, y, bi, p))(ps), vmap(lambda p: dense(y, p))(ps), **TOL)


def test_transforms_run_keomlir_kernels(data):
    """The derivatives are keomlir reductions, not a fallback: forward mode builds Diff kernels."""
    x, y, b, t = data
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], "Sum", axis=1)
    jvp(lambda x: g(x, y, b), (x,), (t,))
    (tangent, extras, _), = [v for k, v in g.derivatives.cache.items() if k[0] == "jvp"]
    assert extras == [] and "Diff" in tangent.reduction.parsed.text() and "Diff" not in tangent.program.text()


def test_kernel_solve_transforms(data):
    """A Gaussian KernelSolve: grad, jvp, jacrev, jacfwd and vmap against torch.linalg.solve."""
    from keomlir.torch import KernelSolve

    x = data[0]
    g = torch.tensor([0.8], dtype=torch.float64)
    b = torch.randn(M, 2, dtype=torch.float64)
    solver = KernelSolve("Exp(-g * SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "g = Pm(1)"], "b",
                         axis=1)
    tight = dict(alpha=0.5, eps=1e-13)

    def ours(x, b, g):
        return solver(x, x, b, g, **tight)

    def dense(x, b, g):
        return torch.linalg.solve(0.5 * torch.eye(M, dtype=torch.float64) + torch.exp(-g * sqdist(x, x)), b)

    tol = dict(rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(ours(x, b, g), dense(x, b, g), **tol)
    torch.testing.assert_close(grad(lambda x: ours(x, b, g).sum())(x), grad(lambda x: dense(x, b, g).sum())(x), **tol)
    tx, tb, tg = torch.randn_like(x), torch.randn_like(b), torch.randn_like(g)
    for a, e in zip(jvp(ours, (x, b, g), (tx, tb, tg)), jvp(dense, (x, b, g), (tx, tb, tg))):
        torch.testing.assert_close(a, e, **tol)
    torch.testing.assert_close(jacrev(lambda g: ours(x, b, g))(g), jacrev(lambda g: dense(x, b, g))(g), **tol)
    torch.testing.assert_close(jacfwd(lambda b: ours(x, b, g))(b), jacfwd(lambda b: dense(x, b, g))(b), **tol)
    bs = torch.randn(3, M, 2, dtype=torch.float64)
    torch.testing.assert_close(vmap(lambda b: ours(x, b, g))(bs), vmap(lambda b: dense(x, b, g))(bs), **tol)
