"""Every derivative rule against central finite differences of the independent
NumPy oracles of test_ops, and the derivative forms against torch.autograd."""

import zlib

import numpy as np
import pytest

from keomlir.numpy import Genred
from keomlir.passes import PassManager

from conftest import assert_close, needs_torch, optional
from test_ops import CASES, M, N, _inputs

H = 1e-6
# piecewise-constant operations: their derivative is 0 and finite differences agree
# away from the jumps, which random inputs do not hit
SKIP = {"Zero": "constant", "IntCst": "constant", "IntInv": "constant"}
FIXED_DIM = {"SumT", "ElemT", "ExtractT", "OneHot"}


def _dense(oracle, x, y, s, t):
    return np.broadcast_to(oracle(x[:, None, :], y[None], s[:, None, :], t[None]),
                           (x.shape[0], y.shape[0], _out_dim(oracle, x, y, s, t)))


def _out_dim(oracle, x, y, s, t):
    return np.asarray(oracle(x[:1, None, :], y[None, :1], s[:1, None, :], t[None, :1])).shape[-1]


def _numeric_grad(oracle, args, which, e, axis):
    """d/d(args[which]) of Σ_k e_k F_k summed over the other index, by central differences."""
    args = [a.copy() for a in args]
    target = args[which]
    out = np.zeros_like(target)
    for c in range(target.shape[1]):
        plus, minus = [a.copy() for a in args], [a.copy() for a in args]
        plus[which][:, c] += H
        minus[which][:, c] -= H
        fp = (_dense(oracle, *plus) * e).sum(-1)
        fm = (_dense(oracle, *minus) * e).sum(-1)
        out[:, c] = ((fp - fm) / (2 * H)).sum(axis=1 if axis == 1 else 0)
    return out


@pytest.mark.parametrize("var", ["x", "y", "s"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_derivative_rule(case, var):
    if case in SKIP:
        pytest.skip(SKIP[case])
    formula, oracle = CASES[case]
    dim = 3
    x, y, s, t = _inputs(dim, seed=zlib.crc32(case.encode()) % 1000)  # stable across runs
    dF = _out_dim(oracle, x, y, s, t)
    r = np.random.default_rng(2)
    axis = 0 if var == "y" else 1
    e_rows = N if var == "y" else M
    e = r.normal(size=(e_rows, dF))
    e_alias = f"e = {'Vj' if var == 'y' else 'Vi'}({dF})"
    aliases = [f"x = Vi({dim})", f"y = Vj({dim})", "s = Vi(1)", "t = Vj(1)", e_alias]
    g = Genred(f"Grad({formula}, {var}, e)", aliases, reduction_op="Sum", axis=axis)
    out = g(x, y, s, t, e)
    which = {"x": 0, "y": 1, "s": 2}[var]
    e_b = e[None] if var == "y" else e[:, None]
    expected = _numeric_grad(oracle, [x, y, s, t], which, e_b, axis)
    assert_close(out, expected, "float64", rtol=1e-5, atol=1e-5)
    assert_close(g(*[a.astype(np.float32) for a in (x, y, s, t, e)]), expected, "float32", rtol=2e-3, atol=2e-3)


torch = optional("torch")  # the oracle of the tests below

ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]


def _torch_forms(x, y, b):
    X = torch.tensor(x, requires_grad=True)
    Y, B = torch.tensor(y), torch.tensor(b)
    return X, Y, B


@needs_torch
def test_diff_is_the_jvp():
    r = np.random.default_rng(3)
    x, y, b, v = r.normal(size=(6, 3)), r.normal(size=(7, 3)), r.normal(size=(7, 1)), r.normal(size=(6, 3))
    g = Genred("Diff(Exp(-SqDist(x,y)) * (x - y), x, v)", ALIASES + ["v = Vi(3)"], axis=1)
    X, Y, B = _torch_forms(x, y, b)

    def F(Xv):
        d = Xv[:, None] - Y[None]
        return (torch.exp(-(d ** 2).sum(-1))[..., None] * d).sum(1)

    _, jvp = torch.autograd.functional.jvp(F, X, torch.tensor(v))
    assert_close(g(x, y, b, v), jvp.numpy(), "float64")


@needs_torch
def test_grad_matrix_divergence_laplacian():
    r = np.random.default_rng(4)
    x, y, b = r.normal(size=(5, 3)), r.normal(size=(6, 3)), r.normal(size=(6, 1))
    Y = torch.tensor(y)

    def field(xi):  # one row: Σ_j exp(-|xi - y_j|^2) (xi - y_j), a vector field R^3 -> R^3
        d = xi[None] - Y
        return (torch.exp(-(d ** 2).sum(-1))[:, None] * d).sum(0)

    def potential(xi):
        return torch.exp(-((xi[None] - Y) ** 2).sum(-1)).sum()

    jac = np.stack([torch.autograd.functional.jacobian(field, torch.tensor(xi)).numpy() for xi in x])
    hess = np.stack([torch.autograd.functional.hessian(potential, torch.tensor(xi)).numpy() for xi in x])
    f = "Exp(-SqDist(x,y)) * (x - y)"
    gm = Genred(f"GradMatrix({f}, x)", ALIASES, axis=1)(x, y, b)
    assert_close(gm, jac.reshape(5, 9), "float64")  # row k: the gradient of component k
    div = Genred(f"Divergence({f}, x)", ALIASES, axis=1)(x, y, b)
    assert_close(div[:, 0], np.trace(jac, axis1=1, axis2=2), "float64")
    lap = Genred("Laplacian(Exp(-SqDist(x,y)), x)", ALIASES, axis=1)(x, y, b)
    assert_close(lap[:, 0], np.trace(hess, axis1=1, axis2=2), "float64")


@needs_torch
def test_nested_grad_gives_second_order():
    r = np.random.default_rng(5)
    x, y, b = r.normal(size=(5, 3)), r.normal(size=(6, 3)), r.normal(size=(6, 1))
    u, v = r.normal(size=(5, 3)), r.normal(size=(5, 3))
    g = Genred("Grad(Grad(Exp(-SqDist(x,y)) * b, x, IntCst(1)) , x, u)",
               ALIASES + ["u = Vi(3)"], axis=1)
    Y, B = torch.tensor(y), torch.tensor(b)
    expected = []
    for xi, ui in zip(x, u):
        def pot(z):
            return (torch.exp(-((z[None] - Y) ** 2).sum(-1)) * B[:, 0]).sum()
        hess = torch.autograd.functional.hessian(pot, torch.tensor(xi)).numpy()
        expected.append(hess @ ui)
    assert_close(g(x, y, b, u), np.array(expected), "float64")
    del v


def test_gradient_reuses_the_forward_exponential():
    g = Genred("Grad(Exp(-SqDist(x,y)) * b, x, e)", ALIASES + ["e = Vi(1)"], axis=1)
    text = g.program.text()
    assert text.count("Exp(") == 1 and text.count("SqDist(") == 1
    assert "Grad" in g.reduction.parsed.text()
    assert "Grad" not in PassManager(["autodiff"]).run(g.reduction.parsed).text()


def test_gradient_in_a_variable_absent_from_the_formula_is_zero():
    x, y, b = np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 1))
    out = Genred("Grad(Exp(-SqDist(x,y)), b, IntCst(1))", ALIASES, axis=1)(x, y, b)
    assert out.shape == (2, 1) and (out == 0).all()


@pytest.mark.parametrize("formula", ["Sqrt(SqDist(x,y))", "Norm2(x-y)", "Sqrt(SqNorm2(x-y)) * b"])
def test_distance_gradients_are_zero_where_points_coincide(formula):
    """KeOps's convention (Sqrt differentiated through Rsqrt, Rsqrt(0) = 0): the gradient of
    |x_i - y_j| is 0 where x_i = y_j, never NaN (GeomLoss's energy and Laplacian kernels of x
    against x hit the diagonal)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3))
    y = np.concatenate([x[:3], rng.standard_normal((4, 3))])  # three y equal three x
    b = rng.standard_normal((7, 1)) if "b" in formula else np.ones((7, 1))
    e = rng.standard_normal((6, 1))
    got = Genred(f"Grad({formula}, x, e)", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "e = Vi(1)"], "Sum",
                 axis=1)(x, y, b, e)
    diff = x[:, None] - y[None]
    dist = np.sqrt((diff ** 2).sum(-1, keepdims=True))
    unit = np.divide(diff, dist, out=np.zeros_like(diff), where=dist > 0)
    want = (e[:, None] * b[None] * unit).sum(1)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
