"""keomlir under torch.compile: every reduction compiled with fullgraph=True (one custom
operator per call, no graph break), values and gradients against the same eager calls
and a dense float64 torch oracle; LazyTensor, KernelSolve, batch dimensions and ranges;
the operators' content keys.

Most graphs use backend="aot_eager" (Dynamo + AOTAutograd, which trace the operators and
their backward rules, without inductor's code generation); the original failure
(`Exp(-SqDist(x,y)) * b`, float64, M = 200, N = 300: 0.32 off, silently) runs with the
default inductor backend."""

import gc
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from keomlir.compile import CompiledReduction  # noqa: E402
from keomlir.torch import Genred, KernelSolve, LazyTensor, ops  # noqa: E402

M, N, K = 7, 9, 3
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]
SELECT = "SqDist(x,y) + Elem(b,0)"


def _sqdist(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1)


def _f(x, y, b):
    return _sqdist(x, y) + b[None, :, 0]


def _topk(x, y, b, largest):
    return torch.topk(_f(x, y, b), K, dim=1, largest=largest, sorted=True)


# name: (formula, Genred keywords, dense float64 outputs of (x, y, b))
CASES = {
    "Sum": ("Exp(-SqDist(x,y)) * b", {}, lambda x, y, b: (torch.exp(-_sqdist(x, y)) @ b,)),
    "LogSumExp": ("-SqDist(x,y) + Elem(b,0)", {},
                  lambda x, y, b: (torch.logsumexp(b[None, :, 0] - _sqdist(x, y), 1, keepdim=True),)),
    "SumSoftMaxWeight": ("-SqDist(x,y)", {"formula2": "b"}, lambda x, y, b: (torch.softmax(-_sqdist(x, y), 1) @ b,)),
    "Min": (SELECT, {}, lambda x, y, b: (_f(x, y, b).min(1, keepdim=True).values,)),
    "Max": (SELECT, {}, lambda x, y, b: (_f(x, y, b).max(1, keepdim=True).values,)),
    "ArgMin": (SELECT, {}, lambda x, y, b: (_f(x, y, b).argmin(1, keepdim=True),)),
    "ArgMax": (SELECT, {}, lambda x, y, b: (_f(x, y, b).argmax(1, keepdim=True),)),
    "Min_ArgMin": (SELECT, {}, lambda x, y, b: tuple(_f(x, y, b).min(1, keepdim=True))),
    "Max_ArgMax": (SELECT, {}, lambda x, y, b: tuple(_f(x, y, b).max(1, keepdim=True))),
    "KMin": (SELECT, {"opt_arg": K}, lambda x, y, b: (_topk(x, y, b, False).values,)),
    "ArgKMin": (SELECT, {"opt_arg": K}, lambda x, y, b: (_topk(x, y, b, False).indices,)),
    "KMin_ArgKMin": (SELECT, {"opt_arg": K}, lambda x, y, b: tuple(_topk(x, y, b, False))),
}
GENREDS = {name: Genred(formula, ALIASES, name, axis=1, **kw) for name, (formula, kw, _) in CASES.items()}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# compiled vs eager (the same kernels: 1e-12 in float64), and vs the dense float64 oracle
SAME = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=1e-6, atol=1e-6)}
DENSE = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-5)}


def _all_reductions(inputs):
    """Every reduction, each on its own (x, y, b) so that gradients stay apart."""
    return [GENREDS[name](*xyb) for name, xyb in zip(CASES, inputs)]


def _loss(outs, weights):
    """A weighted sum of the floating outputs (the cotangents of the backward)."""
    total = 0
    for out, w in zip(outs, weights):
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.is_floating_point():
            total = total + (out * w.to(out.dtype)).sum()
    return total


@pytest.fixture(scope="module", params=list(DTYPES))
def matrix(request):
    """Outputs and gradients of every reduction: compiled (one fullgraph aot_eager graph
    for all of them), eager, and dense float64."""
    dtype = DTYPES[request.param]
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(M, 3, generator=g, dtype=torch.float64), torch.randn(N, 3, generator=g, dtype=torch.float64),
            torch.randn(N, 2, generator=g, dtype=torch.float64)]
    base = [a.to(dtype).to(torch.float64) for a in base]  # the float32 values, exactly, for the oracle

    def leaves(to):
        return [[a.to(to).clone().requires_grad_() for a in base] for _ in CASES]

    compiled_in, eager_in, dense_in = leaves(dtype), leaves(dtype), leaves(torch.float64)
    compiled = torch.compile(_all_reductions, backend="aot_eager", fullgraph=True)(compiled_in)
    eager = _all_reductions(eager_in)
    dense = [dense_fn(*xyb) for (_, _, dense_fn), xyb in zip(CASES.values(), dense_in)]
    weights = [torch.randn(d[0].shape, generator=g, dtype=torch.float64) for d in dense]
    for outs in (compiled, eager, dense):
        _loss(outs, weights).backward()
    return request.param, dict(zip(CASES, zip(compiled, eager, dense, compiled_in, eager_in, dense_in)))


def _tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


@pytest.mark.parametrize("name", CASES)
def test_compiled_values_match_eager_and_dense(matrix, name):
    dtype, results = matrix
    compiled, eager, dense = (_tuple(r) for r in results[name][:3])
    assert len(compiled) == len(eager) == len(dense)
    for c, e, d in zip(compiled, eager, dense):
        assert c.shape == e.shape == d.shape and c.dtype == e.dtype
        if d.is_floating_point():
            assert c.dtype == DTYPES[dtype]
            torch.testing.assert_close(c, e, **SAME[dtype])
            torch.testing.assert_close(c.double(), d, **DENSE[dtype])
        else:  # indices: int64, equal to dense torch's (no ties in random data)
            assert c.dtype == torch.int64 and not c.requires_grad
            assert torch.equal(c, e) and torch.equal(c, d)


@pytest.mark.parametrize("name", CASES)
def test_compiled_gradients_match_eager_and_dense(matrix, name):
    dtype, results = matrix
    compiled_in, eager_in, dense_in = results[name][3:]
    differentiable = name not in ("ArgMin", "ArgMax", "ArgKMin")
    for c, e, d in zip(compiled_in, eager_in, dense_in):
        if not differentiable:
            assert c.grad is None and e.grad is None
            continue
        assert c.grad is not None and c.grad.dtype == DTYPES[dtype]
        torch.testing.assert_close(c.grad, e.grad, **SAME[dtype])
        torch.testing.assert_close(c.grad.double(), d.grad, **DENSE[dtype])


def test_reported_case_with_inductor_fullgraph():
    """The reported failure, with the default (inductor) backend: values and gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y, b = torch.randn(300, 3, generator=g, dtype=torch.float64), torch.randn(300, 1, generator=g, dtype=torch.float64)
    gauss = Genred("Exp(-SqDist(x,y)) * b", ["x=Vi(3)", "y=Vj(3)", "b=Vj(1)"], reduction_op="Sum", axis=1)

    def f(x, y, b):
        return gauss(x, y, b)

    dense = torch.exp(-_sqdist(x, y)) @ b
    eager = f(x, y, b)
    compiled = torch.compile(f, fullgraph=True)(x, y, b)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-12)
    torch.testing.assert_close(compiled, dense, rtol=1e-12, atol=1e-12)
    w = torch.randn(dense.shape, generator=g, dtype=torch.float64)
    grads = [torch.autograd.grad((out * w).sum(), x)[0] for out in (compiled, eager, dense)]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-10, atol=1e-12)


def _xyb(dtype=torch.float64, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, 3, generator=g, dtype=dtype), torch.randn(N, 3, generator=g, dtype=dtype),
            torch.randn(N, 2, generator=g, dtype=dtype))


def test_lazytensor_reductions_compile_fullgraph():
    """Dynamo traces the LazyTensor tree and its IR; the Genred comes from the registry."""
    x, y, b = (a.requires_grad_() for a in _xyb())

    def f(x, y, b):
        x_i, y_j, b_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :]), LazyTensor(b[None, :, :])
        d = ((x_i - y_j) ** 2).sum(-1)
        # K.matvec(b) is K @ b: Dynamo turns `@` with a tensor operand into torch's matmul
        return (-d).exp().matvec(b), (d + b_j[:, :, 0]).argKmin(K, dim=1)

    compiled, eager = torch.compile(f, backend="aot_eager", fullgraph=True)(x, y, b), f(x, y, b)
    torch.testing.assert_close(compiled[0], torch.exp(-_sqdist(x, y)) @ b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compiled[0], eager[0], rtol=0, atol=1e-12)
    assert torch.equal(compiled[1], _topk(x, y, b, False).indices) and torch.equal(compiled[1], eager[1])
    w = torch.randn(M, 2, dtype=torch.float64)
    got = torch.autograd.grad((compiled[0] * w).sum(), (x, y, b))
    want = torch.autograd.grad(((torch.exp(-_sqdist(x, y)) @ b) * w).sum(), (x, y, b))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_kernel_solve_compiles_fullgraph():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 2, generator=g, dtype=torch.float64)
    b = torch.randn(20, 1, generator=g, dtype=torch.float64, requires_grad=True)
    solver = KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(2)", "y = Vj(2)", "a = Vj(1)"], "a", axis=1)

    def f(x, b):
        x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
        return solver(x, x, b, alpha=0.5, eps=1e-12), (-((x_i - x_j) ** 2).sum(-1)).exp().solve(b, alpha=0.5, eps=1e-12)

    (compiled, lazy), (eager, _) = torch.compile(f, backend="aot_eager", fullgraph=True)(x, b), f(x, b)
    kernel = torch.exp(-_sqdist(x, x)) + 0.5 * torch.eye(20, dtype=torch.float64)
    torch.testing.assert_close(compiled, torch.linalg.solve(kernel, b), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-12)
    torch.testing.assert_close(lazy, compiled, rtol=1e-9, atol=1e-10)
    (gb,) = torch.autograd.grad(compiled.sum(), b)  # the adjoint solve: K^-1 1 (K symmetric)
    torch.testing.assert_close(gb, torch.linalg.solve(kernel, torch.ones(20, 1, dtype=torch.float64)),
                               rtol=1e-9, atol=1e-10)


def test_batch_dimensions_and_ranges_compile_fullgraph():
    gauss = GENREDS["Sum"]
    g = torch.Generator().manual_seed(4)
    xb, yb = torch.randn(2, M, 3, generator=g, dtype=torch.float64), torch.randn(2, N, 3, generator=g, dtype=torch.float64)
    bb = torch.randn(2, N, 2, generator=g, dtype=torch.float64)
    x, y, b = xb[0], yb[0], bb[0]
    # rows 0..3 see j 0..4, rows 4..6 see j 4..8
    y.requires_grad_()
    # rows 0..3 see j 0..4, rows 4..6 see j 4..8 (and the transposed blocks, for the gradient in y)
    ranges = (torch.tensor([[0, 4], [4, M]]), torch.tensor([1, 2]), torch.tensor([[0, 5], [4, N]]),
              torch.tensor([[0, 4], [4, 5], [5, N]]), torch.tensor([1, 3, 4]),
              torch.tensor([[0, 4], [0, 4], [4, M], [4, M]]))

    def f(xb, yb, bb, x, y, b):
        return gauss(xb, yb, bb), gauss(x, y, b, ranges=ranges)

    batched, sparse = torch.compile(f, backend="aot_eager", fullgraph=True)(xb, yb, bb, x, y, b)
    want = torch.stack([torch.exp(-_sqdist(xb[k], yb[k])) @ bb[k] for k in range(2)])
    torch.testing.assert_close(batched, want, rtol=1e-12, atol=1e-12)
    mask = torch.zeros(M, N, dtype=torch.float64)
    mask[:4, :5], mask[4:, 4:] = 1, 1
    dense = (mask * torch.exp(-_sqdist(x, y))) @ b
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-12)
    w = torch.randn(M, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((sparse * w).sum(), y)[0],
                               torch.autograd.grad((dense * w).sum(), y)[0], rtol=1e-10, atol=1e-12)


def test_vmap_compiles_fullgraph():
    """torch.func.vmap inside torch.compile: the operators' own vmap rules (one block-sparse
    reduction for the batch; one conjugate gradient per element)."""
    x, y, b = _xyb(seed=5)
    xs = torch.stack([x, 2 * x, -x])
    gauss = GENREDS["Sum"]
    compiled = torch.compile(torch.func.vmap(lambda x: gauss(x, y, b)), backend="aot_eager", fullgraph=True)(xs)
    torch.testing.assert_close(compiled, torch.stack([torch.exp(-_sqdist(xx, y)) @ b for xx in xs]),
                               rtol=1e-12, atol=1e-12)
    solver = KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(3)", "y = Vj(3)", "a = Vj(2)"], "a", axis=1)
    bs = torch.stack([b[:M], -2 * b[:M]])
    solved = torch.compile(torch.func.vmap(lambda b: solver(x, x, b, alpha=0.5, eps=1e-12)), backend="aot_eager",
                           fullgraph=True)(bs)
    kernel = torch.exp(-_sqdist(x, x)) + 0.5 * torch.eye(M, dtype=torch.float64)
    torch.testing.assert_close(solved, torch.stack([torch.linalg.solve(kernel, bb) for bb in bs]),
                               rtol=1e-9, atol=1e-10)


def test_torch_export_runs_the_operators():
    """torch.export (non-strict, the default, and strict: Dynamo) of a module calling Genred, a
    LazyTensor reduction and KernelSolve: one operator per call in the graph, the values of
    eager calls, also after a save and load."""
    gauss = GENREDS["Sum"]
    solver = KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(3)", "y = Vj(3)", "a = Vj(2)"], "a", axis=1)

    class Module(torch.nn.Module):
        def forward(self, x, y, b):
            x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
            knn = ((x_i - y_j) ** 2).sum(-1).argKmin(K, dim=1)
            return gauss(x, y, b), knn, solver(x, x, b[:M], alpha=0.5, eps=1e-12)

    x, y, b = _xyb(seed=6)
    eager = Module()(x, y, b)
    kernel = torch.exp(-_sqdist(x, x)) + 0.5 * torch.eye(M, dtype=torch.float64)
    torch.testing.assert_close(eager[2], torch.linalg.solve(kernel, b[:M]), rtol=1e-9, atol=1e-10)
    for strict in (False, True):
        program = torch.export.export(Module(), (x, y, b), strict=strict)
        ops_called = [n.target for n in program.graph.nodes if n.op == "call_function"]
        assert ops_called.count(torch.ops.keomlir.genred.default) == 2
        assert ops_called.count(torch.ops.keomlir.kernel_solve.default) == 1
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        buffer.seek(0)
        for module in (program.module(), torch.export.load(buffer).module()):
            for got, want in zip(module(x, y, b), eager):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_operators_pass_torch_opcheck():
    """torch's own checks of a custom operator: schema, autograd registration, fake
    tensors against real ones, AOTAutograd with dynamic shapes."""
    x, y, b = (a.requires_grad_() for a in _xyb())
    red = GENREDS["KMin_ArgKMin"].reduction  # a tuple of float and int64 outputs
    torch.library.opcheck(torch.ops.keomlir.genred.default, (red.spec, [x, y, b], "auto", -1, []))
    solver = KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(3)", "y = Vj(3)", "a = Vj(2)"], "a", axis=1)
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.keomlir.kernel_solve.default,
                          (solver.core.spec, [y.detach(), y.detach(), b], alpha, "auto", -1, 1e-10, None, None, False, []))


def test_reduction_specs_round_trip():
    """A spec names its reduction by content: the reduction rebuilt from it is equal,
    derivative formulas (Grad nodes) and index-list attributes included."""
    reds = [GENREDS[name].reduction for name in CASES]
    reds.append(GENREDS["Sum"].derivatives.gradient((0,))[0].reduction)
    reds.append(CompiledReduction("TensorDot(x, y, Ind(2,2), Ind(2,2), Ind(1), Ind(0))", ["x=Vi(4)", "y=Vj(4)"],
                                  "Sum", 1))
    for red in reds:
        again = CompiledReduction.from_spec(red.spec)
        assert again.spec == red.spec and again.program == red.program and again.outputs == red.outputs
    assert len({red.spec for red in reds}) == len(reds)
    for bad in ("", "Sum|1", red.spec.replace("TensorDot", "NoSuchOp"), red.spec.replace("=2,", "=9,")):
        with pytest.raises(ValueError, match="not a keomlir|formula text"):
            CompiledReduction.from_spec(bad)


def test_operator_rebuilds_a_reduction_no_genred_holds(monkeypatch):
    """A compiled graph keeps only the spec: the registry rebuilds the reduction once
    every Genred of it is gone, and keeps alive no more than PINNED of those."""
    monkeypatch.setattr(ops, "PINNED", 3)
    formula = "Exp(-SqDist(x,y)) * b * IntCst(7)"  # reductions no other test holds
    spec = Genred(formula, ALIASES, "Sum", axis=1).reduction.spec
    gc.collect()
    assert spec not in ops.GENREDS._alive  # held weakly: gone with its Genred
    x, y, b = _xyb()
    (out,) = ops.genred(spec, [x, y, b], "auto", -1, [])
    torch.testing.assert_close(out, 7 * torch.exp(-_sqdist(x, y)) @ b, rtol=1e-12, atol=1e-12)
    assert spec in ops.GENREDS._alive  # rebuilt and pinned
    specs = [Genred(f"{formula} * IntCst({k + 2})", ALIASES, "Sum", axis=1).reduction.spec for k in range(5)]
    for s in specs:
        ops.GENREDS.lookup(s)
    gc.collect()
    assert len(ops.GENREDS._pinned) == 3 and len(vars(ops.GENREDS.pins)) == 3
    assert [s in ops.GENREDS._alive for s in [spec] + specs] == [False] * 3 + [True] * 3


def test_no_use_after_free_when_dynamo_traces_the_cpu_runtime():
    """The root cause: Dynamo traced run_numpy down to the ctypes call and, at the graph
    break there, resumed without the transposed copy of y the kernel reads by address."""
    red = GENREDS["Sum"].reduction
    x, y, b = (a.numpy() for a in _xyb(seed=5))

    def f(x, y, b):
        return red.run_numpy([x, y, b])[0]

    want = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    np.testing.assert_allclose(torch.compile(f, backend="eager")(x, y, b), want, rtol=1e-12, atol=1e-12)
