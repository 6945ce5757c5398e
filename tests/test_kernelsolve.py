"""KernelSolve (NumPy and torch) and LazyTensor.solve: conjugate gradient on
(alpha Id + K) a = b against dense solves, gradients, errors."""

import io
from contextlib import redirect_stdout

import numpy as np
import pytest

from keomlir.numpy import KernelSolve, LazyTensor, Vi, Vj
from keomlir.solve import ConvergenceError, NotPositiveDefiniteError, conjugate_gradient

from conftest import needs_torch, optional

torch, kt = optional("torch"), optional("keomlir.torch")

GAUSS = "Exp(- g * SqDist(x,y)) * b"
ALIASES = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"]


# ---- the issue's cases ------------------------------------------------------------------------------


@needs_torch
def test_issue_case_lazytensor_solve_float32_with_gradient():
    """K_xx.solve(b_i, alpha=0.1) for a Gaussian K_xx, M = 1000, b with 4 columns,
    float32: residual and gradient in x against a dense float64 torch.linalg.solve."""
    g = torch.Generator().manual_seed(0)
    M, alpha = 1000, 0.1
    x = torch.randn(M, 3, generator=g, requires_grad=True)
    b_i = torch.randn(M, 4, generator=g)
    x_i, x_j = kt.LazyTensor(x[:, None, :]), kt.LazyTensor(x[None, :, :])
    K_xx = (-((x_i - x_j) ** 2).sum(-1)).exp()
    a = K_xx.solve(b_i, alpha=alpha)
    assert a.shape == (M, 4) and a.dtype == torch.float32
    c = alpha * a + K_xx @ a
    assert ((c - b_i) ** 2).mean().item() < 1e-4
    (grad,) = torch.autograd.grad((a ** 2).sum(), [x])

    x64 = x.detach().double().requires_grad_()
    K = torch.exp(-((x64[:, None] - x64[None]) ** 2).sum(-1))
    a64 = torch.linalg.solve(alpha * torch.eye(M, dtype=torch.float64) + K, b_i.double())
    (grad64,) = torch.autograd.grad((a64 ** 2).sum(), [x64])
    assert ((a.double() - a64).norm() / a64.norm()).item() < 1e-4
    assert ((grad.double() - grad64).norm() / grad64.norm()).item() < 1e-2
    assert ((grad.double() - grad64).abs().max() / grad64.abs().max()).item() < 1e-2


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_issue_case_kernelsolve_string_against_torch_linalg_solve(dtype):
    """KernelSolve("Exp(- g * SqDist(x,y)) * b", ..., "b", axis=1), N = 500, D = 2,
    against torch.linalg.solve, and its gradient in x."""
    dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(1)
    N, alpha = 500, 0.1
    x = torch.rand(N, 2, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(N, 1, generator=gen, dtype=dtype)
    g = torch.tensor([10.0], dtype=dtype)
    Kinv = kt.KernelSolve(GAUSS, ALIASES, "b", axis=1)
    eps = 1e-6 if dtype == torch.float32 else 1e-12
    c = Kinv(x, x, b, g, alpha=alpha, eps=eps)
    assert c.shape == (N, 1) and c.dtype == dtype

    x64 = x.detach().double().requires_grad_()
    K = torch.exp(-g.double() * ((x64[:, None] - x64[None]) ** 2).sum(-1))
    c64 = torch.linalg.solve(alpha * torch.eye(N, dtype=torch.float64) + K, b.double())
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    assert ((c.double() - c64).norm() / c64.norm()).item() < tol
    e = torch.randn(N, 1, generator=gen, dtype=dtype)
    (u,) = torch.autograd.grad(c, x, e)
    (u64,) = torch.autograd.grad(c64, x64, e.double())
    assert ((u.double() - u64).norm() / u64.norm()).item() < (1e-3 if dtype == torch.float32 else 1e-8)


# ---- NumPy KernelSolve and LazyTensor.solve ----------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1])
def test_numpy_kernelsolve_both_axes(axis):
    r = np.random.default_rng(2)
    N = 60
    x = r.uniform(0, 1, (N, 2))
    b = r.standard_normal((N, 3))
    g = np.array([5.0])
    aliases = (["x = Vi(2)", "y = Vj(2)", "b = Vj(3)", "g = Pm(1)"] if axis == 1
               else ["x = Vj(2)", "y = Vi(2)", "b = Vi(3)", "g = Pm(1)"])
    Kinv = KernelSolve(GAUSS, aliases, "b", axis=axis)
    assert Kinv.core.separable  # scalar kernel * b: one CG per column, one kernel call for all
    a = Kinv(x, x, b, g, alpha=0.5, eps=1e-12)
    K = np.exp(-g[0] * ((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(a, np.linalg.solve(0.5 * np.eye(N) + K, b), rtol=1e-8, atol=1e-10)
    # float32 data: the kernel runs in float32, the recurrences in float64
    a32 = Kinv(x.astype(np.float32), x.astype(np.float32), b.astype(np.float32), g.astype(np.float32), alpha=0.5)
    assert a32.dtype == np.float32
    np.testing.assert_allclose(a32, a, rtol=1e-4, atol=1e-4)


def test_coupled_columns_use_one_global_cg():
    """A formula mixing the unknown's components (K_ij A b_j, A symmetric positive
    definite): the columns are not separate systems; the whole array is one unknown."""
    r = np.random.default_rng(3)
    N = 40
    x = r.uniform(0, 1, (N, 2))
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    b = r.standard_normal((N, 2))
    Kinv = KernelSolve("Exp(-SqDist(x,y)) * MatVecMult(A, v)", ["x = Vi(2)", "y = Vj(2)", "v = Vj(2)", "A = Pm(4)"],
                       "v", axis=1)
    assert not Kinv.core.separable
    a = Kinv(x, x, b, A.ravel(), alpha=0.3, eps=1e-12)
    K = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1))
    big = 0.3 * np.eye(2 * N) + np.kron(K, A)
    np.testing.assert_allclose(a.ravel(), np.linalg.solve(big, b.ravel()), rtol=1e-8, atol=1e-10)


def test_lazytensor_solve_numpy_forms():
    r = np.random.default_rng(4)
    N = 50
    x = r.standard_normal((N, 3))
    K = (-LazyTensor(x[:, None]).sqdist(LazyTensor(x[None]))).exp()
    Kd = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1))
    A = 0.2 * np.eye(N) + Kd
    b = r.standard_normal((N, 2))
    np.testing.assert_allclose(K.solve(b, alpha=0.2, eps=1e-12), np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    b1 = b[:, 0]
    a1 = K.solve(b1, alpha=0.2, eps=1e-12)  # a 1-d right-hand side gives a 1-d solution
    assert a1.shape == (N,)
    np.testing.assert_allclose(a1, np.linalg.solve(A, b1), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(K.solve(Vi(b), alpha=0.2, eps=1e-12), np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    # var=: a system written with its own unknown, linear in it
    v = Vj(0, 2)
    np.testing.assert_allclose((K * v).solve(b, var=v, alpha=0.2, eps=1e-12), np.linalg.solve(A, b),
                               rtol=1e-8, atol=1e-10)
    # symbolic variables left: a callable
    Ks = (-Vi(0, 3).sqdist(Vj(1, 3))).exp()
    sol = Ks.solve(b, alpha=0.2, eps=1e-12)
    assert "Solve" in str(sol)
    np.testing.assert_allclose(sol(x, x), np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)


def test_batched_solves():
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 30, 1, 2))
    K = (-LazyTensor(x).sqdist(LazyTensor(x.transpose(0, 2, 1, 3)))).exp()
    b = r.standard_normal((2, 30, 3))
    a = K.solve(b, alpha=0.5, eps=1e-12)
    assert a.shape == (2, 30, 3)
    for k in range(2):
        Kd = np.exp(-((x[k, :, 0][:, None] - x[k, :, 0][None]) ** 2).sum(-1))
        np.testing.assert_allclose(a[k], np.linalg.solve(0.5 * np.eye(30) + Kd, b[k]), rtol=1e-8, atol=1e-10)
    if torch is None:
        return
    tx = torch.from_numpy(x[:, :, 0]).requires_grad_()
    tb = torch.from_numpy(b)
    ta = kt.KernelSolve(GAUSS, ["x = Vi(2)", "y = Vj(2)", "b = Vj(3)", "g = Pm(1)"], "b", axis=1)(
        tx, tx, tb, torch.ones(1, dtype=torch.float64), alpha=0.5, eps=1e-12)
    np.testing.assert_allclose(ta.detach().numpy(), a, rtol=1e-8, atol=1e-10)
    assert torch.autograd.grad(ta.sum(), tx)[0].shape == tx.shape


def test_warm_start_and_verbose():
    r = np.random.default_rng(6)
    x = r.standard_normal((40, 2))
    b = r.standard_normal((40, 1))
    Kinv = KernelSolve(GAUSS, ALIASES, "b", axis=1)
    g = np.array([1.0])
    a = Kinv(x, x, b, g, alpha=1.0, eps=1e-10)
    out = io.StringIO()
    with redirect_stdout(out):
        a2 = Kinv(x, x, b, g, alpha=1.0, eps=1e-8, x0=a, verbose=True)
    assert "'niter': 0" in out.getvalue() and "'x0_provided': True" in out.getvalue()
    np.testing.assert_allclose(a2, a)


def test_conjugate_gradient_core_on_a_dense_matrix():
    r = np.random.default_rng(7)
    Q = r.standard_normal((30, 30))
    A = Q @ Q.T + 30 * np.eye(30)
    b = r.standard_normal((30, 3))
    for columns in (True, False):
        a = conjugate_gradient(lambda p: A @ p, b, eps=1e-12, columns=columns)
        np.testing.assert_allclose(a, np.linalg.solve(A, b), rtol=1e-9, atol=1e-12)
    b[:, 1] = 0  # a zero right-hand side column stays zero
    a = conjugate_gradient(lambda p: A @ p, b, eps=1e-12)
    assert not a[:, 1].any()


# ---- torch: differentiable with respect to every input -------------------------------------------------


@needs_torch
def test_torch_kernelsolve_gradcheck_every_input():
    gen = torch.Generator().manual_seed(8)
    N = 12
    x = torch.rand(N, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (x.detach() + 0.0).requires_grad_()  # the same points, as a separate input
    b = torch.randn(N, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    Kinv = kt.KernelSolve(GAUSS, ["x = Vi(2)", "y = Vj(2)", "b = Vj(2)", "g = Pm(1)"], "b", axis=1)

    def f(x, y, b, g, alpha):
        return Kinv(x, y, b, g, alpha=alpha, eps=1e-14)

    assert torch.autograd.gradcheck(f, (x, y, b, g, alpha), atol=1e-6)
    # the same gradients as a dense solve
    K = torch.exp(-g * ((x[:, None] - y[None]) ** 2).sum(-1))
    dense = torch.linalg.solve(alpha * torch.eye(N, dtype=torch.float64) + K, b)
    w = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad((f(x, y, b, g, alpha) * w).sum(), (x, y, b, g, alpha))
    want = torch.autograd.grad((dense * w).sum(), (x, y, b, g, alpha))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-9)


@needs_torch
def test_torch_kernelsolve_second_order():
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(8, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    Kinv = kt.KernelSolve("Exp(-SqDist(x,y)) * b", ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], "b", axis=1)
    assert torch.autograd.gradgradcheck(lambda x: Kinv(x, x, b, alpha=1.0, eps=1e-14), (x,), atol=1e-6)


# ---- errors -------------------------------------------------------------------------------------------


def test_kernelsolve_errors():
    r = np.random.default_rng(10)
    x = r.standard_normal((30, 2))
    b = r.standard_normal((30, 1))
    g = np.array([0.1])
    Kinv = KernelSolve(GAUSS, ALIASES, "b", axis=1)
    with pytest.raises(ConvergenceError, match="did not converge in maxiter=2 iterations"):
        Kinv(x, x, b, g, alpha=1e-6, maxiter=2)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        Kinv(x, x, b, g, alpha=-50.0)
    with pytest.raises(ValueError, match="must be square"):
        Kinv(x, x[:20], b[:20], g)
    with pytest.raises(ValueError, match="neither an alias"):
        KernelSolve(GAUSS, ALIASES, "z", axis=1)
    with pytest.raises(ValueError, match="must be indexed by j"):
        KernelSolve(GAUSS, ["x = Vi(2)", "y = Vj(2)", "b = Vi(1)", "g = Pm(1)"], "b", axis=1)
    with pytest.raises(ValueError, match="dimension 3 but the unknown 'b' has dimension 1"):
        KernelSolve("Exp(-SqDist(x,y)) * y", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "b", axis=1)
    with pytest.raises(ValueError, match="ranges"):
        Kinv(x, x, b, g, ranges=(1,))
    if torch is not None:
        with pytest.raises(TypeError, match="NumPy array"):
            Kinv(x, x, torch.from_numpy(b), g)
    with pytest.raises(TypeError, match="alpha must be a number"):
        Kinv(x, x, b, g, alpha="big")
    with pytest.raises(ValueError, match="eps must be a positive number"):
        Kinv(x, x, b, g, eps=0)
    assert issubclass(ConvergenceError, ValueError) and issubclass(ConvergenceError, RuntimeError)
    # LazyTensor.solve
    K = (-LazyTensor(x[:, None]).sqdist(LazyTensor(x[None]))).exp()
    with pytest.raises(ConvergenceError, match="raise maxiter"):
        K.solve(b, alpha=1e-6, maxiter=3)
    with pytest.raises(ValueError, match="must be square"):
        (-LazyTensor(x[:, None]).sqdist(LazyTensor(x[None, :20]))).exp().solve(b, alpha=1.0)
    with pytest.raises(ValueError, match="system has dimension 2 but b has dimension 3"):
        (LazyTensor(x[:, None]) - LazyTensor(x[None])).solve(np.zeros((30, 3)))
    with pytest.raises(TypeError, match="different dtypes"):
        K.solve(b.astype(np.float32))
    if torch is not None:
        tK = (-kt.LazyTensor(torch.from_numpy(x)[:, None]).sqdist(kt.LazyTensor(torch.from_numpy(x)[None]))).exp()
        with pytest.raises(ConvergenceError):
            tK.solve(torch.from_numpy(b), alpha=1e-6, maxiter=2)
