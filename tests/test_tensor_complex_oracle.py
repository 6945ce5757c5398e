"""Tensor algebra and complex operations: machine code and the reference
interpreter against independent NumPy (np.kron, np.tensordot, complex numbers)."""

import numpy as np
import pytest

from keomlir.numpy import Genred

from conftest import assert_close

M, N = 6, 7


def c(v):
    return v[..., 0::2] + 1j * v[..., 1::2]


def r(z):
    out = np.empty(z.shape[:-1] + (2 * z.shape[-1],))
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def mat(v, n):
    return v.reshape(v.shape[:-1] + (n, -1))


# formula, dims of (x, y), NumPy oracle on x (M,1,dx), y (1,N,dy) broadcast by the caller
CASES = {
    "MatVecMult": ("MatVecMult(x, y)", (6, 3), lambda x, y: np.einsum("...kl,...l->...k", mat(x, 2), y)),
    "VecMatMult": ("VecMatMult(y, x)", (6, 2), lambda x, y: np.einsum("...k,...kl->...l", y, mat(x, 2))),
    "TensorProd": ("TensorProd(x, y)", (2, 3), lambda x, y: (x[..., :, None] * y[..., None, :]).reshape(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]) + (6,))),
    "Kron": ("Kron(x, y, Ind(2,2), Ind(1,3))", (4, 3), lambda x, y: _kron(x, y)),
    "TensorDot": ("TensorDot(x, y, Ind(2,3), Ind(3,2), Ind(1), Ind(0))", (6, 6),
                  lambda x, y: np.einsum("...ab,...bc->...ac", mat(x, 2), mat(y, 3)).reshape(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]) + (4,))),
    "TensorDot perm": ("TensorDot(x, y, Ind(2,3), Ind(3,2), Ind(1), Ind(0), Ind(1,0))", (6, 6),
                       lambda x, y: np.einsum("...ab,...bc->...ca", mat(x, 2), mat(y, 3)).reshape(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]) + (4,))),
    "TensorDot full": ("TensorDot(x, y, Ind(6), Ind(6), Ind(0), Ind(0))", (6, 6), lambda x, y: (x * y).sum(-1, keepdims=True)),
    "ComplexReal": ("ComplexReal(x - y)", (4, 4), lambda x, y: c(x - y).real),
    "ComplexImag": ("ComplexImag(x - y)", (4, 4), lambda x, y: c(x - y).imag),
    "Real2Complex": ("Real2Complex(x * y)", (2, 2), lambda x, y: r(x * y + 0j)),
    "Imag2Complex": ("Imag2Complex(x * y)", (2, 2), lambda x, y: r(1j * x * y)),
    "Conj": ("Conj(x * y)", (4, 4), lambda x, y: r(np.conj(c(x * y)))),
    "ComplexAbs": ("ComplexAbs(x - y)", (4, 4), lambda x, y: np.abs(c(x - y))),
    "ComplexSquareAbs": ("ComplexSquareAbs(x - y)", (4, 4), lambda x, y: np.abs(c(x - y)) ** 2),
    "ComplexAngle": ("ComplexAngle(x - y)", (4, 4), lambda x, y: np.angle(c(x - y))),
    "ComplexSum": ("ComplexSum(x * y)", (4, 4), lambda x, y: r(c(x * y).sum(-1, keepdims=True))),
    "ComplexSumT": ("ComplexSumT(x * y, 6)", (2, 2), lambda x, y: r(np.repeat(c(x * y), 3, axis=-1))),
    "ComplexMult": ("ComplexMult(x, y)", (4, 4), lambda x, y: r(c(x) * c(y))),
    "ComplexScal": ("ComplexScal(x, y)", (2, 4), lambda x, y: r(c(x) * c(y))),
    "ComplexRealScal": ("ComplexRealScal(x, y)", (1, 4), lambda x, y: x * y),
    "ComplexDivide": ("ComplexDivide(x, y)", (4, 4), lambda x, y: r(c(x) / c(y))),
    "ComplexExp": ("ComplexExp(x - y)", (4, 4), lambda x, y: r(np.exp(c(x - y)))),
    "ComplexExp1j": ("ComplexExp1j(x - y)", (2, 2), lambda x, y: r(np.exp(1j * (x - y)))),
}


def _kron(x, y):
    """np.kron of the (2, 2) and (1, 3) tensors, row by row."""
    shape = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    x, y = np.broadcast_to(x, shape + x.shape[-1:]), np.broadcast_to(y, shape + y.shape[-1:])
    out = np.array([np.kron(a.reshape(2, 2), b.reshape(1, 3)).ravel()
                    for a, b in zip(x.reshape(-1, 4), y.reshape(-1, 3))])
    return out.reshape(shape + (12,))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_operation(case, dtype):
    formula, (dx, dy), oracle = CASES[case]
    rng = np.random.default_rng(len(case))
    x, y = rng.uniform(-2, 2, size=(M, dx)), rng.uniform(0.5, 2, size=(N, dy))
    g = Genred(formula, [f"x = Vi({dx})", f"y = Vj({dy})"], reduction_op="Sum", axis=1)
    xs, ys = x.astype(dtype).astype(np.float64), y.astype(dtype).astype(np.float64)
    dense = oracle(xs[:, None, :], ys[None])
    expected = np.broadcast_to(dense, (M, N, dense.shape[-1])).sum(1)
    assert_close(g(xs, ys, backend="reference"), expected, "float64")
    assert_close(g(x.astype(dtype), y.astype(dtype)), expected, dtype, rtol=1e-4 if dtype == "float32" else 1e-10,
                 atol=1e-3 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("formula,aliases,message", [
    ("MatVecMult(x, y)", ["x = Vi(5)", "y = Vj(3)"], r"MatVecMult: .*multiple"),
    ("ComplexMult(x, y)", ["x = Vi(3)", "y = Vj(4)"], "ComplexMult: operand f must have even dimension"),
    ("ComplexMult(x, y)", ["x = Vi(4)", "y = Vj(6)"], "incompatible"),
    ("Kron(x, y, Ind(2,2), Ind(3))", ["x = Vi(4)", "y = Vj(3)"], r"Kron: .*(same length|as many axes)"),
    ("TensorDot(x, y, Ind(2,2), Ind(2,2), Ind(1), Ind(5))", ["x = Vi(4)", "y = Vj(4)"], "contg"),
    ("TensorDot(x, y, Ind(2,3), Ind(2,2), Ind(0), Ind(0))", ["x = Vi(4)", "y = Vj(4)"], r"TensorDot: .*(does not match|holds 6 components)"),
])
def test_dimension_errors(formula, aliases, message):
    with pytest.raises(ValueError, match=message):
        Genred(formula, aliases, axis=1)
