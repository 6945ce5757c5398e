"""Tensor and complex operations one by one, below the Genred level:
(a) `reference` against independent NumPy / Python-complex oracles on broadcast inputs,
(b) each `lower` compiled alone to machine code (float64 and float32) against `reference`,
(c) dimension errors, and (d) each derivative rule against central finite differences."""

import cmath
import ctypes

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from keomlir.backends.llvm.emitter import Emitter
from keomlir.backends.reference import evaluate_formula
from keomlir.ir.ops import OPS, make
from keomlir.passes.autodiff import grad

from conftest import assert_close


# ---- independent oracles: one sample (1-d arrays) at a time ----------------------------


def _cx(v):
    return [complex(v[k], v[k + 1]) for k in range(0, len(v), 2)]


def _re(zs):
    return [c for z in zs for c in (z.real, z.imag)]


def _tensordot(f, g, dimf, dimg, contf, contg, perm=None):
    r = np.tensordot(f.reshape(dimf), g.reshape(dimg), axes=(list(contf), list(contg)))
    if perm is not None:  # KeOps: result axis k becomes output axis perm[k]
        r = np.transpose(r, np.argsort(perm))
    return np.ravel(r)


ORACLES = {
    "MatVecMult": lambda a, v: a.reshape(-1, len(v)) @ v,
    "VecMatMult": lambda v, a: v @ a.reshape(len(v), -1),
    "TensorProd": lambda f, g: np.outer(f, g).ravel(),
    "Kron": lambda f, g, df, dg: np.kron(f.reshape(df), g.reshape(dg)).ravel(),
    "TensorDot": _tensordot,
    "ComplexReal": lambda f: [z.real for z in _cx(f)],
    "ComplexImag": lambda f: [z.imag for z in _cx(f)],
    "Real2Complex": lambda f: _re([complex(x, 0) for x in f]),
    "Imag2Complex": lambda f: _re([complex(0, x) for x in f]),
    "Conj": lambda f: _re([z.conjugate() for z in _cx(f)]),
    "ComplexAbs": lambda f: [abs(z) for z in _cx(f)],
    "ComplexSquareAbs": lambda f: [abs(z) ** 2 for z in _cx(f)],
    "ComplexAngle": lambda f: [cmath.phase(z) for z in _cx(f)],
    "ComplexSum": lambda f: _re([sum(_cx(f))]),
    "ComplexSumT": lambda f, d: list(f) * (d // 2),
    "ComplexMult": lambda f, g: _re(_zip_bcast(lambda a, b: a * b, f, g)),
    "ComplexScal": lambda f, g: _re(_zip_bcast(lambda a, b: a * b, f, g)),
    "ComplexDivide": lambda f, g: _re(_zip_bcast(lambda a, b: a / b, f, g)),
    "ComplexRealScal": lambda f, g: list(f[0] * g) if len(f) == 1 else list(g[0] * f),
    "ComplexExp": lambda f: _re([cmath.exp(z) for z in _cx(f)]),
    "ComplexExp1j": lambda f: _re([cmath.exp(1j * x) for x in f]),
}


def _zip_bcast(op, f, g):
    a, b = _cx(f), _cx(g)
    n = max(len(a), len(b))
    return [op(p, q) for p, q in zip(a * (n // len(a)), b * (n // len(b)))]


# (operation, operand dimensions, attributes)
CASES = [
    ("MatVecMult", (6, 3), ()), ("MatVecMult", (6, 2), ()), ("MatVecMult", (4, 4), ()), ("MatVecMult", (3, 1), ()),
    ("VecMatMult", (2, 6), ()), ("VecMatMult", (3, 6), ()), ("VecMatMult", (1, 4), ()),
    ("TensorProd", (2, 3), ()), ("TensorProd", (1, 4), ()), ("TensorProd", (3, 3), ()),
    ("Kron", (4, 6), ((2, 2), (2, 3))), ("Kron", (3, 4), ((3,), (4,))), ("Kron", (12, 4), ((2, 3, 2), (1, 2, 2))),
    ("TensorDot", (6, 6), ((2, 3), (3, 2), (1,), (0,))),
    ("TensorDot", (6, 6), ((2, 3), (3, 2), (1,), (0,), (1, 0))),
    ("TensorDot", (24, 60), ((2, 3, 4), (4, 3, 5), (1, 2), (1, 0))),
    ("TensorDot", (6, 60), ((2, 3), (3, 4, 5), (1,), (0,), (2, 0, 1))),
    ("TensorDot", (12, 12), ((2, 3, 2), (3, 2, 2), (), (), (4, 0, 5, 2, 1, 3))),
    ("TensorDot", (24, 8), ((2, 3, 4), (4, 2), (2, 0), (0, 1))),
    ("TensorDot", (6, 6), ((6,), (6,), (0,), (0,))),
    ("TensorDot", (2, 3), ((2,), (3,), (), ())),
    *[(op, (d,), ()) for op in ["ComplexReal", "ComplexImag", "Conj", "ComplexAbs", "ComplexSquareAbs",
                                "ComplexAngle", "ComplexSum", "ComplexExp"] for d in (2, 6)],
    *[(op, (d,), ()) for op in ["Real2Complex", "Imag2Complex", "ComplexExp1j"] for d in (1, 3)],
    ("ComplexSumT", (2,), (2,)), ("ComplexSumT", (2,), (6,)),
    *[(op, dims, ()) for op in ["ComplexMult", "ComplexDivide"] for dims in [(4, 4), (2, 6), (6, 2), (2, 2)]],
    ("ComplexScal", (2, 4), ()), ("ComplexScal", (4, 2), ()), ("ComplexScal", (2, 2), ()),
    ("ComplexRealScal", (1, 4), ()), ("ComplexRealScal", (4, 1), ()), ("ComplexRealScal", (1, 2), ()),
]
IDS = [f"{op}{dims}{attrs if attrs else ''}".replace(" ", "") for op, dims, attrs in CASES]


def _values(rng, shape):
    """Components of either sign, of magnitude in [0.5, 2]: no division by ~0, off the branch cut."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2, size=shape)


def _out_dim(op, dims, attrs):
    args = [make("Var", (), (k, d, k % 2)) for k, d in enumerate(dims)]
    return make(op, args, attrs).dim


def test_every_operation_has_cases():
    assert {op for op, _, _ in CASES} == set(ORACLES)


# ---- (a) the reference against the oracles ---------------------------------------------------


@pytest.mark.parametrize("op, dims, attrs", CASES, ids=IDS)
def test_reference(op, dims, attrs):
    rng = np.random.default_rng(len(IDS[CASES.index((op, dims, attrs))]))
    M, N = 3, 4
    # first operand i-indexed (M, 1, d), the others j-indexed (1, N, d): leading dims broadcast
    xs = [_values(rng, (M, 1, d) if k == 0 else (1, N, d)) for k, d in enumerate(dims)]
    out = OPS[op].reference(xs, attrs)
    dim = _out_dim(op, dims, attrs)
    expected = np.array([[np.asarray(ORACLES[op](*[x[min(i, x.shape[0] - 1), min(j, x.shape[1] - 1)] for x in xs],
                                                 *attrs), dtype=np.float64)
                          for j in range(N)] for i in range(M)])
    assert_close(np.broadcast_to(out, (M, N, dim)), expected.reshape(M, N, dim), "float64")


# ---- (b) the lowering, compiled alone --------------------------------------------------------

_FTYPES = {"float64": (ir.DoubleType(), ctypes.c_double), "float32": (ir.FloatType(), ctypes.c_float)}
_ENGINES = []  # engines own the machine code: keep them alive for the session


def _compile(op, dims, attrs, dtype):
    """void f(T* in0, ..., T* out): out = op(in0, ...), through OPS[op].lower and MCJIT."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    ftype, ctype = _FTYPES[dtype]
    module = ir.Module(name=f"test_{op}")
    module.triple = llvm.get_process_triple()
    ptr = ftype.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr] * (len(dims) + 1)), name="f")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    i64 = ir.IntType(64)
    xs = [[b.load(b.gep(arg, [ir.Constant(i64, c)])) for c in range(d)] for arg, d in zip(fn.args, dims)]
    outs = OPS[op].lower(Emitter(b, ftype), xs, attrs)
    assert len(outs) == _out_dim(op, dims, attrs)
    for c, v in enumerate(outs):
        b.store(v, b.gep(fn.args[-1], [ir.Constant(i64, c)]))
    b.ret_void()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    engine = llvm.create_mcjit_compiler(mod, target.create_target_machine())
    engine.finalize_object()
    _ENGINES.append(engine)
    cptr = ctypes.POINTER(ctype)
    return ctypes.CFUNCTYPE(None, *[cptr] * (len(dims) + 1))(engine.get_function_address("f")), cptr


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op, dims, attrs", CASES, ids=IDS)
def test_lowering(op, dims, attrs, dtype):
    f, cptr = _compile(op, dims, attrs, dtype)
    rng = np.random.default_rng(7)
    dim = _out_dim(op, dims, attrs)
    for _ in range(5):
        xs = [np.ascontiguousarray(_values(rng, (d,)), dtype=dtype) for d in dims]
        out = np.zeros(dim, dtype=dtype)
        f(*[x.ctypes.data_as(cptr) for x in xs], out.ctypes.data_as(cptr))
        expected = OPS[op].reference([x.astype(np.float64) for x in xs], attrs)
        assert_close(out, expected, dtype)


# ---- (c) dimension errors ----------------------------------------------------------------------

ERRORS = [
    ("MatVecMult", (6, 4), (), r"MatVecMult: .*\b6\b.*\b4\b"),
    ("VecMatMult", (4, 6), (), r"VecMatMult: .*\b6\b.*\b4\b"),
    ("Kron", (4, 3), ((2, 2), (3,)), r"Kron: .*as many axes"),
    ("Kron", (4, 3), ((2, 3), (3,)), r"Kron: dimf \(2, 3\) holds 6 .*operand f has dimension 4"),
    ("Kron", (4, 3), ((2, 2), (1, 2)), r"Kron: dimg .*operand g has dimension 3"),
    ("TensorDot", (4, 4), ((2, 3), (2, 2), (0,), (0,)), r"TensorDot: dimf .*operand f has dimension 4"),
    ("TensorDot", (4, 4), ((2, 2), (2, 2), (1,), (5,)), r"TensorDot: contg \(5,\)"),
    ("TensorDot", (4, 4), ((2, 2), (2, 2), (1, 1), (0, 1)), r"TensorDot: contf \(1, 1\) must list distinct"),
    ("TensorDot", (4, 4), ((2, 2), (2, 2), (1,), ()), r"TensorDot: contf .*contg .*as many"),
    ("TensorDot", (6, 6), ((2, 3), (2, 3), (1,), (0,)), r"TensorDot: .*axis 1 of f has 3, axis 0 of g has 2"),
    ("TensorDot", (4, 4), ((2, 2), (2, 2), (1,), (0,), (0, 0)), r"TensorDot: perm \(0, 0\)"),
    ("TensorDot", (4, 4), ((2, 2), (2, 2), (1,), (0,), (0,)), r"TensorDot: perm \(0,\)"),
    ("ComplexMult", (3, 4), (), r"ComplexMult: operand f must have even dimension.*got 3"),
    ("ComplexMult", (4, 6), (), r"ComplexMult: .*4 and 6 are incompatible"),
    ("ComplexDivide", (4, 5), (), r"ComplexDivide: operand g must have even dimension.*got 5"),
    ("ComplexScal", (4, 4), (), r"ComplexScal: one operand must be a complex scalar"),
    ("ComplexRealScal", (2, 4), (), r"ComplexRealScal: one operand must be a real scalar"),
    ("ComplexRealScal", (1, 3), (), r"ComplexRealScal: operand g must have even dimension.*got 3"),
    ("ComplexReal", (3,), (), r"ComplexReal: operand f must have even dimension.*got 3"),
    ("ComplexAngle", (5,), (), r"ComplexAngle: operand f must have even dimension.*got 5"),
    ("ComplexSum", (1,), (), r"ComplexSum: operand f must have even dimension.*got 1"),
    ("ComplexSumT", (4,), (4,), r"ComplexSumT: operand f must be a complex scalar .*got 4"),
    ("ComplexSumT", (2,), (3,), r"ComplexSumT: .*even.*got 3"),
]


@pytest.mark.parametrize("op, dims, attrs, message", ERRORS, ids=[f"{e[0]}-{k}" for k, e in enumerate(ERRORS)])
def test_dimension_error(op, dims, attrs, message):
    args = [make("Var", (), (k, d, 0)) for k, d in enumerate(dims)]
    with pytest.raises(ValueError, match=message):
        make(op, args, attrs)


# ---- (d) derivative rules ---------------------------------------------------------------------


@pytest.mark.parametrize("op, dims, attrs", CASES, ids=IDS)
def test_derivative_rule(op, dims, attrs):
    """Grad(F, x_k, e) by the operation's vjp rule, against central differences of Σ e·F."""
    M, N, h = 3, 4, 1e-6
    rng = np.random.default_rng(11)
    variables = [make("Var", (), (k, d, k % 2)) for k, d in enumerate(dims)]
    f = make(op, variables, attrs)
    e_var = make("Var", (), (len(dims), f.dim, 0))
    arrays = [_values(rng, (M if k % 2 == 0 else N, d)) for k, d in enumerate(dims)] + [rng.normal(size=(M, f.dim))]

    def weighted(arrs):
        return (np.broadcast_to(evaluate_formula(f, arrs), (M, N, f.dim)) * arrs[-1][:, None, :]).sum(-1)

    for k, x in enumerate(variables):
        g = np.broadcast_to(evaluate_formula(grad(f, x, e_var), arrays), (M, N, x.dim))
        for c in range(x.dim):
            plus, minus = [a.copy() for a in arrays], [a.copy() for a in arrays]
            plus[k][:, c] += h
            minus[k][:, c] -= h
            numeric = (weighted(plus) - weighted(minus)) / (2 * h)
            assert_close(g[..., c], numeric, "float64", rtol=1e-6, atol=1e-6)
