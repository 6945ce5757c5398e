"""Every operation that lowers, three ways: compiled machine code, the reference
interpreter, and an independent NumPy expression written here, in float32 and
float64 and several dimensions."""

import zlib

import numpy as np
import pytest

from keomlir.ir.ops import OPS
from keomlir.numpy import Genred

from conftest import assert_close

M, N = 13, 17

# (formula, NumPy oracle on x (M,1,d), y (1,N,d), s (M,1,1), t (1,N,1)), input kind
# x, y are in [-2, 2]; s, t in [0.2, 2] (positive where the operation needs it)
CASES = {
    "Add": ("x + y", lambda x, y, s, t: x + y),
    "Subtract": ("x - y", lambda x, y, s, t: x - y),
    "Mult": ("x * y", lambda x, y, s, t: x * y),
    "Divide": ("x / t", lambda x, y, s, t: x / t),
    "Minus": ("-x + y", lambda x, y, s, t: -x + y),
    "Scalar broadcast": ("s * y + 3", lambda x, y, s, t: s * y + 3),
    "Equal": ("Round(x,0) == Round(y,0)", lambda x, y, s, t: (_rnd(x) == _rnd(y)) * 1.0),
    "NotEqual": ("Round(x,0) != Round(y,0)", lambda x, y, s, t: (_rnd(x) != _rnd(y)) * 1.0),
    "LessThan": ("x < y", lambda x, y, s, t: (x < y) * 1.0),
    "GreaterThan": ("x > y", lambda x, y, s, t: (x > y) * 1.0),
    "LessOrEqual": ("x <= y", lambda x, y, s, t: (x <= y) * 1.0),
    "GreaterOrEqual": ("x >= y", lambda x, y, s, t: (x >= y) * 1.0),
    "Inv": ("Inv(x*x + t)", lambda x, y, s, t: 1 / (x * x + t)),
    "Exp": ("Exp(x - y)", lambda x, y, s, t: np.exp(x - y)),
    "Log": ("Log(s + t)", lambda x, y, s, t: np.log(s + t)),
    "XLogX": ("XLogX(s * t)", lambda x, y, s, t: s * t * np.log(s * t)),
    "Sin": ("Sin(x * y)", lambda x, y, s, t: np.sin(x * y)),
    "SinXDivX": ("SinXDivX(x - y)", lambda x, y, s, t: np.sin(x - y) / (x - y)),
    "Asin": ("Asin(x / 2 * t / 2)", lambda x, y, s, t: np.arcsin(x / 2 * t / 2)),
    "Cos": ("Cos(x + y)", lambda x, y, s, t: np.cos(x + y)),
    "Acos": ("Acos(y / 2 * s / 2)", lambda x, y, s, t: np.arccos(y / 2 * s / 2)),
    "Atan": ("Atan(x * y)", lambda x, y, s, t: np.arctan(x * y)),
    "Atan2": ("Atan2(x, y)", lambda x, y, s, t: np.arctan2(x, y)),
    "Pow": ("Pow(x - y, 3) + Pow(s + t, -2)", lambda x, y, s, t: (x - y) ** 3 + (s + t) ** -2.0),
    "Powf": ("Powf(s + t, x)", lambda x, y, s, t: (s + t) ** x),
    "Square": ("Square(x - y)", lambda x, y, s, t: (x - y) ** 2),
    "Sqrt": ("Sqrt(s * t)", lambda x, y, s, t: np.sqrt(s * t)),
    "Rsqrt": ("Rsqrt(s + t)", lambda x, y, s, t: 1 / np.sqrt(s + t)),
    "Abs": ("Abs(x - y)", lambda x, y, s, t: np.abs(x - y)),
    "Sign": ("Sign(x - y)", lambda x, y, s, t: np.sign(x - y)),
    "Step": ("Step(x - y)", lambda x, y, s, t: (x - y >= 0) * 1.0),
    "ReLU": ("ReLU(x - y)", lambda x, y, s, t: np.maximum(x - y, 0)),
    "Clamp": ("Clamp(x * y, -s, t)", lambda x, y, s, t: np.minimum(np.maximum(x * y, -s), t)),
    "ClampInt": ("ClampInt(x * y, -1, 2)", lambda x, y, s, t: np.clip(x * y, -1, 2)),
    "IfElse": ("IfElse(x - y, s, t)", lambda x, y, s, t: np.where(x - y >= 0, s, t) + 0 * x),
    "Mod": ("Mod(x * 3, t, s)", lambda x, y, s, t: x * 3 - t * np.floor((x * 3 - s) / t)),
    "Round": ("Round(x * y, 1)", lambda x, y, s, t: _rnd(x * y * 10) / 10),
    "Floor": ("Floor(x * y)", lambda x, y, s, t: np.floor(x * y)),
    "Sum": ("Sum(x * y)", lambda x, y, s, t: (x * y).sum(-1, keepdims=True)),
    "Max": ("Max(x - y)", lambda x, y, s, t: (x - y).max(-1, keepdims=True)),
    "Min": ("Min(x - y)", lambda x, y, s, t: (x - y).min(-1, keepdims=True)),
    "ArgMax": ("ArgMax(x - y)", lambda x, y, s, t: (x - y).argmax(-1)[..., None] * 1.0),
    "ArgMin": ("ArgMin(x - y)", lambda x, y, s, t: (x - y).argmin(-1)[..., None] * 1.0),
    "SumT": ("SumT(s * t, 3)", lambda x, y, s, t: np.repeat(s * t, 3, -1)),
    "SqNorm2": ("SqNorm2(x - y)", lambda x, y, s, t: ((x - y) ** 2).sum(-1, keepdims=True)),
    "Norm2": ("Norm2(x - y)", lambda x, y, s, t: np.linalg.norm(x - y, axis=-1, keepdims=True)),
    "Normalize": ("Normalize(x - y)", lambda x, y, s, t: (x - y) / np.linalg.norm(x - y, axis=-1, keepdims=True)),
    "Scalprod": ("(x | y)", lambda x, y, s, t: (x * y).sum(-1, keepdims=True)),
    "SqDist": ("SqDist(x, y)", lambda x, y, s, t: ((x - y) ** 2).sum(-1, keepdims=True)),
    "WeightedSqNorm": ("WeightedSqNorm(t, x)", lambda x, y, s, t: t * (x ** 2).sum(-1, keepdims=True)),
    "WeightedSqNorm diagonal": ("WeightedSqNorm(Abs(y), x)", lambda x, y, s, t: (np.abs(y) * x * x).sum(-1, keepdims=True)),
    "WeightedSqDist": ("WeightedSqDist(s, x, y)", lambda x, y, s, t: s * ((x - y) ** 2).sum(-1, keepdims=True)),
    "Elem": ("Elem(x, 0) * Elem(y, 0)", lambda x, y, s, t: x[..., :1] * y[..., :1]),
    "ElemT": ("ElemT(s * t, 3, 1)", lambda x, y, s, t: np.concatenate([0 * s * t, s * t, 0 * s * t], -1)),
    "Extract": ("Extract(Concat(x, y), 1, 2)", lambda x, y, s, t: np.concatenate(np.broadcast_arrays(x, y), -1)[..., 1:3]),
    "ExtractT": ("ExtractT(s * t, 1, 3)", lambda x, y, s, t: np.concatenate([0 * s * t, s * t, 0 * s * t], -1)),
    "Concat": ("Concat(x, y * s)", lambda x, y, s, t: np.concatenate(np.broadcast_arrays(x, y * s), -1)),
    "OneHot": ("OneHot(Round(s * t, 0), 4)", lambda x, y, s, t: (_rnd(s * t) == np.arange(4)) * 1.0),
    "IntCst": ("IntCst(3) * x + y", lambda x, y, s, t: 3 * x + y),
    "IntInv": ("IntInv(4) * x + y", lambda x, y, s, t: x / 4 + y),
    "Zero": ("Zero(3) + x - y", lambda x, y, s, t: 0 * x + x - y),
    "Factorize": ("Factorize(Exp(x - y) * (x - y), x - y)", lambda x, y, s, t: np.exp(x - y) * (x - y)),
    "AutoFactorize": ("AutoFactorize(Sin(x * y) + Sin(x * y) * t)", lambda x, y, s, t: np.sin(x * y) * (1 + t)),
}


def _rnd(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _inputs(dim, seed):
    r = np.random.default_rng(seed)
    x = r.uniform(-2, 2, size=(M, dim))
    y = r.uniform(-2, 2, size=(N, dim))
    s = r.uniform(0.2, 2, size=(M, 1))
    t = r.uniform(0.2, 2, size=(N, 1))
    return x, y, s, t


ALIASES = lambda d: [f"x = Vi({d})", f"y = Vj({d})", "s = Vi(1)", "t = Vj(1)"]  # noqa: E731


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_operation(case, dtype, dim):
    formula, oracle = CASES[case]
    if case in ("SumT", "ElemT", "ExtractT", "OneHot", "Extract", "Zero") and dim == 1:
        pytest.skip("fixed-dimension case")
    x, y, s, t = _inputs(dim, seed=zlib.crc32(case.encode()) % 1000)  # stable across runs
    g = Genred(formula, ALIASES(dim), reduction_op="Sum", axis=1)
    dense = np.asarray(oracle(x[:, None, :], y[None], s[:, None, :], t[None]), dtype=np.float64)
    expected = np.broadcast_to(dense, (M, N, dense.shape[-1])).sum(axis=1)
    args = [a.astype(dtype) for a in (x, y, s, t)]
    # the reference interpreter against the hand-written oracle (both float64)
    assert_close(g(*[a.astype(np.float64) for a in args], backend="reference"),
                 expected if dtype == "float64" else _oracle_at(oracle, args), "float64", rtol=1e-9, atol=1e-9)
    # the machine code against the oracle
    out = g(*args)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, _oracle_at(oracle, args), dtype, rtol=1e-4 if dtype == "float32" else 1e-10,
                 atol=1e-3 if dtype == "float32" else 1e-10)


def _oracle_at(oracle, args):
    """The oracle on the (possibly float32-rounded) inputs, computed in float64."""
    x, y, s, t = (a.astype(np.float64) for a in args)
    dense = np.asarray(oracle(x[:, None, :], y[None], s[:, None, :], t[None]), dtype=np.float64)
    return np.broadcast_to(dense, (M, N, dense.shape[-1])).sum(axis=1)


def test_every_lowering_operation_is_tested():
    covered = set()
    for formula, _ in CASES.values():
        covered |= {name for name in OPS if name + "(" in formula.replace(" ", "")}
    covered |= {"Add", "Subtract", "Mult", "Divide", "Minus", "Equal", "NotEqual", "LessThan",
                "GreaterThan", "LessOrEqual", "GreaterOrEqual", "Scalprod", "Var"}
    elementwise_and_vector = {name for name, op in OPS.items()
                              if op.lowers and type(op).__module__.rsplit(".", 1)[-1] in ("elementwise", "vector")}
    assert elementwise_and_vector - covered == set()


def test_weighted_sqnorm_full_matrix():
    r = np.random.default_rng(5)
    x, y = r.normal(size=(M, 2)), r.normal(size=(N, 2))
    A = r.normal(size=(2, 2))
    S = (A @ A.T).reshape(-1)
    g = Genred("WeightedSqDist(S, x, y)", ["x = Vi(2)", "y = Vj(2)", "S = Pm(4)"], reduction_op="Sum", axis=1)
    d = x[:, None, :] - y[None]
    expected = np.einsum("mnk,kl,mnl->mn", d, S.reshape(2, 2), d).sum(1)[:, None]
    assert_close(g(x, y, S), expected, "float64")
