"""pykeops 2.3's LazyTensor methods beyond the common ones (keomlir/lazy/surface.py and
the IR operations of keomlir/ir/ops/sequence.py), each against a dense float64 oracle
written here, with gradients (torch autograd through the oracle, or finite differences)."""

import numpy as np
import pytest
import torch

from keomlir.ir.ops import make
from keomlir.numpy import Genred, LazyTensor as NumpyLazyTensor
from keomlir.torch import LazyTensor, Pm, Vi, Vj

from conftest import assert_close

F64 = torch.float64


def _t(a, grad=False):
    return torch.tensor(a, dtype=F64, requires_grad=grad)


# ---- independent oracles --------------------------------------------------------------------------


def bspline_oracle(t, x, k, i):
    """B_{i,k}(x) by the textbook recursion (works on floats and on torch scalars)."""
    if k == 0:
        return ((t[i] <= x) & (x < t[i + 1])).to(F64) if torch.is_tensor(x) else float(t[i] <= x < t[i + 1])
    left = (x - t[i]) / (t[i + k] - t[i]) * bspline_oracle(t, x, k - 1, i) if t[i + k] > t[i] else 0.0
    right = ((t[i + k + 1] - x) / (t[i + k + 1] - t[i + 1]) * bspline_oracle(t, x, k - 1, i + 1)
             if t[i + k + 1] > t[i + 1] else 0.0)
    return left + right


def soft_dtw_oracle(a, b, gamma):
    """Soft-DTW of the series a, b for (a_i - b_j)^2, with explicit first row and column."""
    n, m = len(a), len(b)
    R = [[None] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            d = (a[i] - b[j]) ** 2
            if i == 0 and j == 0:
                R[i][j] = d
            elif i == 0 or j == 0:
                R[i][j] = d + (R[i][j - 1] if i == 0 else R[i - 1][j])
            else:
                prev = torch.stack([R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]])
                R[i][j] = d - gamma * torch.logsumexp(-prev / gamma, 0)
    return R[n - 1][m - 1]


# ---- the weight of logsumexp / sumsoftmaxweight as other= ------------------------------------------


def test_weights_given_as_other():
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(7, 1, 2)), rng.normal(size=(1, 9, 2)), rng.uniform(0.5, 2, size=(1, 9, 1))
    s = -((NumpyLazyTensor(x) - NumpyLazyTensor(y)) ** 2).sum(-1)
    d = -((x - y) ** 2).sum(-1)
    expected = np.log((np.exp(d) * w[..., 0]).sum(1))[:, None]
    assert_close(s.logsumexp(dim=1, other=NumpyLazyTensor(w)), expected, "float64")
    assert_close(s.logsumexp(dim=1, weight=NumpyLazyTensor(w)), expected, "float64")
    softmax = (np.exp(d)[..., None] * y).sum(1) / np.exp(d).sum(1)[:, None]
    assert_close(s.sumsoftmaxweight(other=NumpyLazyTensor(y), axis=1), softmax, "float64")
    with pytest.raises(TypeError, match="logsumexp: give the weight once"):
        s.logsumexp(dim=1, weight=NumpyLazyTensor(w), other=NumpyLazyTensor(w))
    with pytest.raises(TypeError, match="sumsoftmaxweight: give the weight"):
        s.sumsoftmaxweight(axis=1)


# ---- B-splines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 3])
def test_bspline_values_and_gradients(order):
    rng = np.random.default_rng(order)
    knots = np.sort(rng.uniform(0, 1, size=7))
    knots[3] = knots[2]  # a repeated knot: its weights are 0
    x = rng.uniform(0, 1, size=(11, 1))
    c = rng.normal(size=(4, 7 - order - 1))
    t_, x_, c_ = _t(knots, True), _t(x, True), _t(c)
    basis = Pm(t_).bspline(Vi(x_), order)
    assert basis.ndim == 7 - order - 1
    out = (basis * Vj(c_)).sum(-1).sum(1)  # Σ_j <B(x_i), c_j>
    rows = [torch.stack([bspline_oracle(t_, x_[i, 0], order, k) for k in range(7 - order - 1)]) for i in range(11)]
    expected = (torch.stack(rows) @ c_.sum(0))[:, None]
    assert_close(out.detach(), expected.detach(), "float64")
    if order > 0:  # a.e. derivative in x and in the knots, through the oracle's own recursion
        got = torch.autograd.grad(out.sum(), [t_, x_])
        want = torch.autograd.grad(expected.sum(), [t_, x_])
        for a, b in zip(got, want):
            assert_close(a, b, "float64", rtol=1e-9, atol=1e-9)


def test_bspline_float32_and_errors():
    knots = np.linspace(0, 1, 6).astype(np.float32)
    x = np.array([[0.1], [0.35], [0.9]], dtype=np.float32)
    out = Genred("BSpline(t, x, 2)", ["t = Pm(6)", "x = Vi(1)", "b = Vj(1)"], "Sum", axis=1)(
        knots, x, np.ones((1, 1), np.float32))
    expected = [[bspline_oracle(knots.astype(float), float(v), 2, k) for k in range(3)] for v in x[:, 0]]
    assert_close(out, np.array(expected), "float32")
    with pytest.raises(ValueError, match="order k must be a non-negative integer"):
        NumpyLazyTensor(knots).bspline(NumpyLazyTensor(x, axis=0), -1)
    with pytest.raises(ValueError, match="B-splines of order 5 need at least 7 knots"):
        NumpyLazyTensor(knots).bspline(NumpyLazyTensor(x, axis=0), 5)
    with pytest.raises(ValueError, match="BSpline: operand x must have dimension 1"):
        NumpyLazyTensor(knots).bspline(NumpyLazyTensor(np.ones((3, 2), np.float32), axis=0), 1)


# ---- soft-DTW ------------------------------------------------------------------------------------


def test_softdtw_values_and_gradients():
    n, m = 4, 3
    torch.manual_seed(n)
    x, y, gamma = torch.rand(5, n, dtype=F64), torch.rand(6, m, dtype=F64), _t(0.3)
    x.requires_grad_(), y.requires_grad_(), gamma.requires_grad_()
    out = Vi(x).softdtw_sqdist(Vj(y), gamma).sum(1)
    expected = torch.stack([sum(soft_dtw_oracle(x[i], y[j], gamma) for j in range(6)) for i in range(5)])[:, None]
    assert_close(out.detach(), expected.detach(), "float64")
    w = torch.rand(5, 1, dtype=F64)
    got = torch.autograd.grad((out * w).sum(), [x, y, gamma])
    want = torch.autograd.grad((expected * w).sum(), [x, y, gamma])
    for a, b in zip(got, want):
        assert_close(a, b, "float64")


@pytest.mark.parametrize("n, m", [(20, 30), (1, 3)])
def test_softdtw_float32(n, m):
    """Long series (wide values) and a single-row table: the loops over the padded table."""
    rng = np.random.default_rng(3)
    x, y = rng.random((3, n)).astype(np.float32), rng.random((4, m)).astype(np.float32)
    out = Genred("SoftDTW_SqDist(x, y, g)", [f"x = Vi({n})", f"y = Vj({m})", "g = Pm(1)"], "Sum", axis=1)(
        x, y, np.array([0.1], np.float32))
    expected = [[sum(float(soft_dtw_oracle(_t(a), _t(b), _t(0.1))) for b in y.astype(float))] for a in x.astype(float)]
    assert_close(out, np.array(expected), "float32")


# ---- difference matrix, trace, factorization ----------------------------------------------------------


def test_difference_matrix_and_its_gradient():
    torch.manual_seed(1)
    x, y = torch.rand(5, 3, dtype=F64, requires_grad=True), torch.rand(6, 2, dtype=F64, requires_grad=True)
    w = torch.rand(6, 6, dtype=F64)
    out = (Vi(x).difference_matrix(Vj(y)) * Vj(w)).sum(1)
    diff = (x[:, None, None, :] - y[None, :, :, None]).reshape(5, 6, 6)  # [i, j, q*3 + p] = x_ip - y_jq
    expected = (diff * w[None]).sum(1)
    assert_close(out.detach(), expected.detach(), "float64")
    for a, b in zip(torch.autograd.grad(out.sum(), [x, y]), torch.autograd.grad(expected.sum(), [x, y])):
        assert_close(a, b, "float64")


def test_trace_operator_needs_no_array_for_its_variable():
    torch.manual_seed(2)
    x, A, u = torch.rand(5, 3, dtype=F64), torch.rand(6, 9, dtype=F64), torch.rand(6, 3, dtype=F64)
    v = Vi(7, 3)  # symbolic, and never given: the trace does not depend on it
    T = (Vi(x).sqnorm2() * Vj(A).matvecmult(v)).trace_operator(v)
    assert T.symbolic_variables == () and T.ndim == 1
    traces = A.view(6, 3, 3).diagonal(dim1=1, dim2=2).sum(-1)
    assert_close(T.sum(1), (x ** 2).sum(1, keepdim=True) * traces.sum(), "float64")
    scalar = (Vj(u) | v).trace_operator(v) * Vi(x).sum(-1)  # a 1 x 3 map: the sum of its entries
    assert_close(scalar.sum(1), x.sum(1, keepdim=True) * u.sum(), "float64")
    with pytest.raises(ValueError, match="trace_operator: the formula must have dimension 1 or that of the variable"):
        Vj(A).extract(0, 2).trace_operator(v)
    # the formula language's TraceOperator, through Genred
    g = Genred("TraceOperator(MatVecMult(A, v), v)", ["A = Vj(9)", "v = Vi(3)"], "Sum", axis=1)
    assert_close(g(A.numpy(), np.zeros((4, 3))), np.full((4, 1), float(traces.sum())), "float64")


def test_factorize_and_auto_factorize_keep_the_values():
    from keomlir.compile import CompiledReduction

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 1, 2)), rng.normal(size=(1, 7, 2))
    d = NumpyLazyTensor(x).sqdist(NumpyLazyTensor(y))
    f = (-d).exp() * d
    expected = (np.exp(-((x - y) ** 2).sum(-1)) * ((x - y) ** 2).sum(-1)).sum(1)[:, None]
    assert_close(f.factorize(d).sum(1), expected, "float64")
    assert_close(f.auto_factorize().sum(1), expected, "float64")
    program = CompiledReduction("Factorize(Exp(-SqDist(x,y)) * SqDist(x,y), SqDist(x,y))",
                                ["x = Vi(2)", "y = Vj(2)"], "Sum", 1).program
    assert "Factorize" not in program.text()  # a hint: simplified away, CSE shares SqDist


def test_sequence_operations_dimension_rules():
    def var(k, d):
        return make("Var", (), (k, d, 0))

    assert make("DifferenceMatrix", [var(0, 3), var(1, 4)]).dim == 12
    assert make("SoftDTW_SqDist", [var(0, 3), var(1, 4), var(2, 1)]).dim == 1
    assert make("SoftDTWGrad", [var(0, 3), var(1, 4), var(2, 1)]).dim == 8
    assert make("BSplineGrad", [var(0, 6), var(1, 1), var(2, 3)], (2,)).dim == 7
    with pytest.raises(ValueError, match="SoftDTW_SqDist: operand gamma must have dimension 1"):
        make("SoftDTW_SqDist", [var(0, 3), var(1, 4), var(2, 2)])


# ---- pykeops's attributes -------------------------------------------------------------------------


def test_pykeops_attributes():
    import keomlir.torch as front_end

    x = torch.rand(4, 2, dtype=F64)
    k = (Vi(x) - Vj(0, 2)).sqnorm2()
    assert k.symbolic_variables == ((0, 2, 1),)
    assert k.Genred is front_end.Genred and k.KernelSolve is front_end.KernelSolve
    assert k.axis is None and k.formula2 is None and k.backend is None
    init, call = LazyTensor.separate_kwargs({"dtype_acc": "float64", "backend": "CPU", "ranges": None})
    assert init == {"dtype_acc": "float64"} and call == {"backend": "CPU", "ranges": None}
    k.backend = "no such backend"  # carried by the LazyTensors made from k, used by their reductions
    with pytest.raises(ValueError, match="no such backend"):
        (k * 2).sum(1)(torch.rand(3, 2, dtype=F64))
