"""pykeops 2.3's formula syntax and call API where keomlir used to differ (issue 19):
`X|Y` as an infix operator with Python's precedence, 1-d arrays (n,) for dimension-1
Vi/Vj variables, pykeops's constructor keywords (use_fast_math...) and backend names,
and dtype_acc='float16'."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import keomlir.numpy as kn
import keomlir.torch as kt
from conftest import assert_close
from keomlir.backends import cuda
from keomlir.grammar import FormulaError, FormulaSyntaxError, parse_formula
from keomlir.grammar.parser import _parse_tree

# ---- `|` with Python's precedence: keomlir's parse tree against Python's own AST ----------------

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.BitOr: "scalprod"}
_CMPOPS = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


def python_shape(node):
    """Python's reading of an expression as a nested tuple (unary + dropped: keomlir drops it)."""
    if isinstance(node, ast.Expression):
        return python_shape(node.body)
    if isinstance(node, ast.BinOp):
        return (_BINOPS[type(node.op)], python_shape(node.left), python_shape(node.right))
    if isinstance(node, ast.UnaryOp):
        inner = python_shape(node.operand)
        return inner if isinstance(node.op, ast.UAdd) else ("neg", inner)
    if isinstance(node, ast.Compare):
        (op,), (right,) = node.ops, node.comparators
        return ("compare", _CMPOPS[type(op)], python_shape(node.left), python_shape(right))
    if isinstance(node, ast.Constant):
        return ("int", node.value)
    if isinstance(node, ast.Name):
        return ("name", node.id)
    if isinstance(node, ast.Call):
        return ("call", node.func.id) + tuple(python_shape(a) for a in node.args)
    raise AssertionError(ast.dump(node))


def keomlir_shape(tree):
    """keomlir's parse tree (the grammar's, before names are resolved) as the same nested tuple."""
    kind = tree.data
    if kind in ("int", "name"):
        token = tree.children[0]
        return (kind, int(token) if kind == "int" else str(token))
    if kind == "compare":
        a, op, b = tree.children
        return ("compare", str(op), keomlir_shape(a), keomlir_shape(b))
    if kind == "call":
        name, args = tree.children
        return ("call", str(name)) + tuple(keomlir_shape(a) for a in (args.children if args else []))
    return (kind,) + tuple(keomlir_shape(c) for c in tree.children)


def _join(parts):
    return "".join(parts)


def expressions(leaves, binops, comparisons, calls=True):
    """Formula strings written by gluing subexpressions with operators, with or without
    parentheses: what they mean is left to the precedence rules under test.  Chains
    `a op b op c ...` (at most one comparison: keomlir's language has no chained ones)
    put many operators side by side."""
    def chain(e):
        ops = st.lists(st.sampled_from(binops), min_size=1, max_size=5)
        ops = st.tuples(ops, st.one_of(st.none(), st.sampled_from(comparisons)), st.integers(0, 4)).map(
            lambda t: t[0] if t[1] is None else t[0][:t[2]] + [t[1]] + t[0][t[2] + 1:])
        return ops.flatmap(lambda o: st.lists(e, min_size=len(o) + 1, max_size=len(o) + 1).map(
            lambda operands: operands[0] + "".join(op + x for op, x in zip(o, operands[1:]))))

    def extend(e):
        options = [chain(e), e.map(lambda s: f"({s})"), st.tuples(st.sampled_from(["-", "+", "- "]), e).map(_join)]
        if calls:
            options.append(e.map(lambda s: f"Exp({s})"))
        return st.one_of(options)

    return st.recursive(st.sampled_from(leaves), extend, max_leaves=12)


def _chained(tree):
    """Whether Python reads a chained comparison (a < b < c) in the tree."""
    return any(isinstance(n, ast.Compare) and len(n.ops) > 1 for n in ast.walk(tree))


PARSE_OPS = ["+", "-", "*", "/", "**", "|", " | "]
COMPARISONS = ["<", ">", "<=", ">=", "==", "!=", " < "]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(expressions(["x", "y", "b", "2", "3"], PARSE_OPS, COMPARISONS),
                 st.lists(st.sampled_from(["x", "y", "2"]), min_size=3, max_size=3).map(" < ".join)))
def test_parse_matches_python_ast(text):
    """Same structure, precedence and associativity as Python; Python's chained comparisons
    (a < b < c), which keomlir's language leaves out, are syntax errors."""
    expected = ast.parse(text, mode="eval")
    if _chained(expected):
        with pytest.raises(FormulaSyntaxError):
            _parse_tree(text, "formula", "formula")
        return
    assert keomlir_shape(_parse_tree(text, "formula", "formula")) == python_shape(expected), text


@pytest.mark.parametrize("text, python", [
    ("Exp(X|Y) * B", "Exp((X|Y)) * B"),
    ("(X|Y) * 2", "(X|Y) * 2"),
    ("X|Y * 2", "X | (Y * 2)"),
    ("X|Y|B", "(X|Y)|B"),
    ("X|Y < B", "(X|Y) < B"),
    ("-X|Y**2", "(-X)|(Y**2)"),
    ("X + Y | Y - X", "(X + Y) | (Y - X)"),
])
def test_scalar_product_outside_parentheses(text, python):
    assert keomlir_shape(_parse_tree(text, "formula", "formula")) == \
        keomlir_shape(_parse_tree(python, "formula", "formula")) == python_shape(ast.parse(text, mode="eval"))


def numpy_value(node, env):
    """Dense float64 value of a Python expression tree on (M, N, D) broadcast arrays, with
    keops's meanings: `|` the scalar product over the last axis, comparisons 0.0 / 1.0."""
    if isinstance(node, ast.Expression):
        return numpy_value(node.body, env)
    if isinstance(node, ast.BinOp):
        a, b = numpy_value(node.left, env), numpy_value(node.right, env)
        if isinstance(node.op, ast.BitOr):
            assert a.shape[-1] == b.shape[-1]
            return (a * b).sum(-1, keepdims=True)
        if isinstance(node.op, ast.Pow):
            return a ** b
        return {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        v = numpy_value(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Compare):
        a, b = numpy_value(node.left, env), numpy_value(node.comparators[0], env)
        fn = {ast.Lt: np.less, ast.Gt: np.greater, ast.LtE: np.less_equal, ast.GtE: np.greater_equal,
              ast.Eq: np.equal, ast.NotEq: np.not_equal}[type(node.ops[0])]
        return fn(a, b).astype(np.float64)
    if isinstance(node, ast.Constant):
        return np.full((1, 1, 1), float(node.value))
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.Call) and node.func.id == "Exp":
        return np.exp(numpy_value(node.args[0], env))
    raise AssertionError(ast.dump(node))


def dense_sum(text, arrays, names):
    """Σ_j of the formula, dense, from Python's reading of `text`."""
    env = {}
    for name, a in zip(names, arrays):
        env[name] = a[:, None, :] if name in ("x", "s") else a[None, :, :]
    value = numpy_value(ast.parse(text, mode="eval"), env)
    m, n = arrays[0].shape[0], arrays[1].shape[0]
    return np.broadcast_to(value, (m, n, value.shape[-1])).sum(axis=1)


def _quarters(rng, shape):
    """Quarter-integers: sums and products of a few of them are exact, so comparisons
    never flip on rounding."""
    return rng.integers(-6, 7, shape) / 4.0


ALIASES_3 = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "s = Vi(1)"]


@pytest.mark.parametrize("text", [
    "Exp(-(x|y)) * b",
    "(x|y) * 2",
    "x|y * 2",
    "x - y | x + y*b",
    "x|y|s < b",
    "-x|y**2 == s*b",
])
def test_scalar_product_values(text, rng):
    """Compiled CPU kernels against the dense evaluation of Python's reading."""
    x, y, b, s = _quarters(rng, (7, 3)), _quarters(rng, (5, 3)), _quarters(rng, (5, 1)), _quarters(rng, (7, 1))
    g = kn.Genred(text, ALIASES_3, reduction_op="Sum", axis=1)
    assert_close(g(x, y, b, s), dense_sum(text, [x, y, b, s], ["x", "y", "b", "s"]), "float64")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(["x", "y", "b", "2", "x**2", "y**3"], ["+", "-", "*", "|"], ["<", ">=", "==", "!="],
                   calls=False))
def test_random_expressions_values(text):
    """Random expressions over scalar variables (`|` is then a product) evaluated by the
    reference backend against Python's reading."""
    assume(not _chained(ast.parse(text, mode="eval")))
    rng = np.random.default_rng(7)
    x, y, b = _quarters(rng, (4, 1)), _quarters(rng, (3, 1)), _quarters(rng, (3, 1))
    g = kn.Genred(text, ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], reduction_op="Sum", axis=1)
    out = g(x, y, b, backend="reference")
    assert_close(out, dense_sum(text, [x, y, b], ["x", "y", "b"]), "float64", rtol=1e-12, atol=1e-12)


def test_scalar_product_dimension_error_names_the_operation():
    x, y, b = (parse_formula(f"Vi({k}, {d})", {}) for k, d in ((0, 3), (1, 3), (2, 1)))
    with pytest.raises(FormulaError, match="Scalprod"):
        parse_formula("x|y|x", {"x": x, "y": y, "b": b})  # (x|y) is 1-d, x 3-d


# ---- 1-d arrays (n,) for dimension-1 Vi / Vj variables -----------------------------------------

GAUSS = "Exp(-SqDist(x, y)) * b"


def _gauss_dense(x, y, b, axis):
    k = np.exp(-(x[:, None] - y[None, :]) ** 2)  # (M, N)
    return (k * b[None, :]).sum(1)[:, None] if axis == 1 else (k * b[:, None]).sum(0)[:, None]


@pytest.mark.parametrize("axis", [0, 1])
def test_numpy_one_d_arrays_read_as_columns(axis, rng, monkeypatch):
    """(n,) is (n, 1), as pykeops reads it: the output keeps its 2-d shape (pykeops's),
    and the kernel reads the caller's memory (a view, no copy)."""
    x, y = rng.normal(size=7), rng.normal(size=5)
    b = rng.normal(size=5 if axis == 1 else 7)
    b_alias = "b = Vj(1)" if axis == 1 else "b = Vi(1)"
    g = kn.Genred(GAUSS, ["x = Vi(1)", "y = Vj(1)", b_alias], axis=axis)
    seen = []
    run = type(g.reduction).run_numpy
    monkeypatch.setattr(type(g.reduction), "run_numpy", lambda self, arrays, *a, **k: seen.append(arrays)
                        or run(self, arrays, *a, **k))
    out = g(x, y, b)
    assert out.shape == ((7, 1) if axis == 1 else (5, 1))
    assert_close(out, _gauss_dense(x, y, b, axis), "float64")
    assert all(np.shares_memory(got, given) for got, given in zip(seen[0], (x, y, b)))
    # mixed with 2-d arrays, and a strided 1-d view
    assert_close(g(x[:, None], y, b[::-1].copy()[::-1]), out, "float64")


def test_one_d_array_for_a_wider_variable_is_an_error(rng):
    g = kn.Genred("x * y", ["x = Vi(3)", "y = Vj(1)"], axis=1)
    with pytest.raises(ValueError, match=r"argument 0 \('x'\).*\(n, 3\).*\(5,\).*dimension 1 only"):
        g(rng.normal(size=5), rng.normal(size=(4, 1)))
    with pytest.raises(ValueError, match=r"argument 0 \('x'\).*\(n, 3\)"):
        kt.Genred("x * y", ["x = Vi(3)", "y = Vj(1)"], axis=1)(torch.zeros(5, dtype=torch.float64),
                                                                torch.zeros(4, 1, dtype=torch.float64))


def test_one_d_array_in_a_batched_call(rng):
    """A 1-d array has no batch dimensions: it is shared by every batch element."""
    x, y, b = rng.normal(size=(2, 6, 1)), rng.normal(size=(2, 4, 1)), rng.normal(size=4)
    g = kn.Genred(GAUSS, ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], axis=1)
    out = g(x, y, b)
    assert out.shape == (2, 6, 1)
    for k in range(2):
        assert_close(out[k], _gauss_dense(x[k, :, 0], y[k, :, 0], b, 1), "float64")


def test_torch_one_d_tensors_and_their_gradients(rng):
    """Gradients come back with the inputs' own shapes (n,); values and gradients against
    dense torch autograd in float64."""
    x, y, b = (torch.tensor(rng.normal(size=n), requires_grad=True) for n in (6, 4, 4))
    g = kt.Genred(GAUSS, ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], axis=1)
    out = g(x, y, b)
    assert out.shape == (6, 1)
    w = torch.tensor(rng.normal(size=(6, 1)))
    grads = torch.autograd.grad((out * w).sum(), (x, y, b))
    dense = (torch.exp(-(x[:, None] - y[None, :]) ** 2) * b[None, :]).sum(1, keepdim=True)
    want = torch.autograd.grad((dense * w).sum(), (x, y, b))
    assert_close(out.detach(), dense.detach(), "float64")
    for got, expected, arg in zip(grads, want, (x, y, b)):
        assert got.shape == arg.shape == (len(arg),)
        assert_close(got, expected, "float64")


def test_kernel_solve_with_one_d_points(rng):
    x, b = np.sort(rng.normal(size=8)), rng.normal(size=(8, 1))
    K = kn.KernelSolve(GAUSS, ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)"], "b", axis=1)
    a = K(x, x, b, alpha=0.5, eps=1e-12)
    dense = np.exp(-(x[:, None] - x[None, :]) ** 2) + 0.5 * np.eye(8)
    assert_close(a, np.linalg.solve(dense, b), "float64", rtol=1e-8, atol=1e-8)


# ---- pykeops 2.3's constructor keywords and backend names ---------------------------------------

# pykeops 2.3's parameter names in their order (pykeops/{numpy,torch}/generic/generic_red.py and
# operations.py): keomlir's signatures must start with them, so positional calls mean the same
PYKEOPS_GENRED = ["formula", "aliases", "reduction_op", "axis", "dtype", "opt_arg", "formula2", "cuda_type",
                  "dtype_acc", "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim",
                  "use_fast_math"]
PYKEOPS_SOLVE_NUMPY = ["formula", "aliases", "varinvalias", "axis", "dtype", "opt_arg", "dtype_acc",
                       "use_double_acc", "sum_scheme", "enable_chunks", "rec_multVar_highdim", "use_fast_math"]
PYKEOPS_SOLVE_TORCH = ["formula", "aliases", "varinvalias", "axis", "dtype_acc", "use_double_acc", "sum_scheme",
                       "enable_chunks", "rec_multVar_highdim", "dtype", "cuda_type", "use_fast_math"]


@pytest.mark.parametrize("cls, names", [
    (kn.Genred, PYKEOPS_GENRED), (kt.Genred, PYKEOPS_GENRED),
    (kn.KernelSolve, PYKEOPS_SOLVE_NUMPY), (kt.KernelSolve, PYKEOPS_SOLVE_TORCH),
])
def test_constructor_signatures_start_with_pykeops(cls, names):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params[:len(names)]] == names
    assert inspect.signature(cls.__init__).parameters["use_fast_math"].default is True
    assert not any(p.kind == p.VAR_KEYWORD for p in params)  # unknown keywords stay errors


@pytest.mark.parametrize("front", [kn, kt])
def test_call_signatures_cover_pykeops(front):
    genred = inspect.signature(front.Genred.__call__).parameters
    assert {"backend", "device_id", "ranges", "out"} <= set(genred)
    solve = inspect.signature(front.KernelSolve.__call__).parameters
    assert {"backend", "device_id", "alpha", "eps", "ranges"} <= set(solve)


PYKEOPS_KEYWORDS = dict(dtype="float64", cuda_type="float64", enable_chunks=False, rec_multVar_highdim=True,
                        use_fast_math=False)


def test_pykeops_keywords_are_accepted(rng):
    x, y, b = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    aliases = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"]
    want = (np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * b[:, 0]).sum(1)[:, None]
    assert_close(kn.Genred(GAUSS, aliases, axis=1, **PYKEOPS_KEYWORDS)(x, y, b), want, "float64")
    assert_close(kn.generic_sum(GAUSS, "a = Vi(1)", *aliases, use_fast_math=True)(x, y, b), want, "float64")
    xt, yt, bt = (torch.tensor(a) for a in (x, y, b))
    assert_close(kt.Genred(GAUSS, aliases, axis=1, **PYKEOPS_KEYWORDS)(xt, yt, bt), want, "float64")
    assert_close(kt.generic_sum(GAUSS, "a = Vi(1)", *aliases, use_fast_math=False)(xt, yt, bt), want, "float64")
    assert kt.generic_argmin("SqDist(x, y)", "a = Vi(1)", *aliases[:2], use_fast_math=True)(xt, yt).shape == (5, 1)
    solve_kw = {k: v for k, v in PYKEOPS_KEYWORDS.items() if k != "cuda_type"}
    for K in (kn.KernelSolve(GAUSS, aliases, "b", axis=1, opt_arg=None, **solve_kw),
              kt.KernelSolve(GAUSS, aliases, "b", axis=1, cuda_type=None, **solve_kw)):
        assert K.core.genred.reduction.axis == 1


def test_keyword_orders_are_pykeops_orders():
    aliases = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"]
    assert kn.Genred(GAUSS, aliases, "Sum", 1, None, None, None, None, "float64").reduction.dtype_acc == "float64"
    assert kn.KernelSolve(GAUSS, aliases, "b", 1, None, None, "float64").core.genred.reduction.dtype_acc == "float64"
    assert kt.KernelSolve(GAUSS, aliases, "b", 1, "float64").core.genred.reduction.dtype_acc == "float64"


def test_unknown_and_conflicting_keywords_are_errors():
    aliases = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"]
    for make in (lambda: kn.Genred(GAUSS, aliases, use_fast_maths=True),
                 lambda: kn.generic_sum(GAUSS, "a = Vi(1)", *aliases, fast_math=True),
                 lambda: kt.KernelSolve(GAUSS, aliases, "b", axis=1, use_fastmath=True)):
        with pytest.raises(TypeError, match="fast"):
            make()
    with pytest.raises(ValueError, match="use_double_acc.*dtype_acc"):
        kn.Genred(GAUSS, aliases, dtype_acc="float32", use_double_acc=True)
    assert kn.Genred(GAUSS, aliases, use_double_acc=True).reduction.dtype_acc == "float64"


@pytest.mark.parametrize("backend", ["GPU_1D", "GPU_2D", "GPU_1D_host", "GPU_2D_device"])
def test_pykeops_gpu_backend_names(backend, rng):
    x, y, b = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    g = kn.Genred(GAUSS, ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"], axis=1)
    if cuda.available():
        assert_close(g(x, y, b, backend=backend), g(x, y, b, backend="CPU"), "float64")
    else:
        with pytest.raises(ValueError, match=f"backend='{backend}': the GPU backend is not available"):
            g(x, y, b, backend=backend)
    with pytest.raises(ValueError, match="backend must be"):
        g(x, y, b, backend="GPU_3D")


# ---- dtype_acc='float16' -----------------------------------------------------------------------


def test_dtype_acc_float16_is_for_half_data(rng):
    """Accepted for half data (float32 sums: at least as accurate as asked, the CPU's result
    that of dtype_acc='float32'); with float32 data, pykeops's rule (float16 accumulators for
    float16 data only; here bfloat16 too)."""
    aliases = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"]
    g = kn.Genred(GAUSS, aliases, axis=1, dtype_acc="float16")
    x, y, b = rng.normal(size=(5, 2)), rng.normal(size=(4, 2)), rng.normal(size=(4, 1))
    half = [a.astype(np.float16) for a in (x, y, b)]
    single = kn.Genred(GAUSS, aliases, axis=1, dtype_acc="float32")(*half, backend="CPU")
    np.testing.assert_array_equal(g(*half, backend="CPU"), single)
    got = kt.Genred(GAUSS, aliases, axis=1, dtype_acc="float16")(*(torch.tensor(a) for a in half), backend="CPU")
    np.testing.assert_array_equal(got.numpy(), single)
    with pytest.raises(ValueError, match="dtype_acc='float16'.*float16 or bfloat16 arguments only.*float32"):
        g(*(a.astype(np.float32) for a in (x, y, b)))
    with pytest.raises(ValueError, match="dtype_acc must be one of auto, float16, float32, float64"):
        kn.Genred(GAUSS, aliases, dtype_acc="bfloat16")


def test_dtype_acc_float16_runs_the_float16_gpu_kernels(rng):
    """The GPU kernels for float16 data (float32 arithmetic and sums, the most the GPU
    backend keeps), simulated on the host, against the float64 dense result."""
    aliases = ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"]
    g = kn.Genred(GAUSS, aliases, axis=1, dtype_acc="float16")
    half = [rng.uniform(-1, 1, size=s).astype(np.float16) for s in ((6, 2), (5, 2), (5, 1))]
    launch = g.reduction.launch(half)
    assert (launch.dtype, launch.acc_dtype) == ("float16", "float32")
    (out,) = cuda.simulate(launch, half, block=4)
    x, y, b = (a.astype(np.float64) for a in half)
    want = (np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * b[:, 0]).sum(1)[:, None]
    assert out.dtype == np.float16
    assert_close(out, want, "float16", rtol=2e-3, atol=2e-3)
