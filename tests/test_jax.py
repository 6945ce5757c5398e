"""keomlir.jax against dense float64 oracles: every reduction on both axes, eager and under
jax.jit, against NumPy; derivatives (grad, jacfwd, jacrev, hessian) against JAX's own
autodiff of the same dense formula (itself checked against NumPy); vmap as one block-sparse
call; KernelSolve; LazyTensor; float32 without jax_enable_x64; the lowering chosen; errors."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import keomlir.numpy as kn  # noqa: E402
from keomlir.backends import cpu  # noqa: E402
from keomlir.jax import ComplexLazyTensor, Genred, KernelSolve, LazyTensor, Pm, Vi, Vj, generic_argkmin  # noqa: E402

M, N, K = 7, 9, 3
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)", "p = Pm(1)"]
# axis=0 reduces over i: x, the output's variable, is then indexed by j (the same dense oracle)
ALIASES_AXIS = {1: ALIASES, 0: ["x = Vj(3)", "y = Vi(3)", "b = Vi(2)", "p = Pm(1)"]}
SELECT = "SqDist(x,y) * p + Elem(b,0)"
# name: (formula, Genred keywords)
CASES = {
    "Sum": ("Exp(-p * SqDist(x,y)) * b", {}),
    "LogSumExp": ("-p * SqDist(x,y) + Elem(b,1)", {}),
    "SumSoftMaxWeight": ("-p * SqDist(x,y)", {"formula2": "b"}),
    "Min": (SELECT, {}), "Max": (SELECT, {}), "ArgMin": (SELECT, {}), "ArgMax": (SELECT, {}),
    "Min_ArgMin": (SELECT, {}), "Max_ArgMax": (SELECT, {}),
    "KMin": (SELECT, {"opt_arg": K}), "ArgKMin": (SELECT, {"opt_arg": K}), "KMin_ArgKMin": (SELECT, {"opt_arg": K}),
}
DIFFERENTIABLE = ["Sum", "LogSumExp", "SumSoftMaxWeight", "Min", "Max", "Min_ArgMin", "KMin", "KMin_ArgKMin"]
_GENREDS = {}


def genred(name, axis):
    """One Genred per case (its kernels compile once per process)."""
    if (name, axis) not in _GENREDS:
        formula, kw = CASES[name]
        _GENREDS[name, axis] = Genred(formula, ALIASES_AXIS[axis], name, axis=axis, **kw)
    return _GENREDS[name, axis]


def data(seed=0, dtype=np.float64):
    """x (M rows: the output's index), y and b (N rows: the reduced index), p."""
    r = np.random.default_rng(seed)
    x, y, b = r.normal(size=(M, 3)), r.normal(size=(N, 3)), r.normal(size=(N, 2))
    return [a.astype(dtype) for a in (x, y, b, np.array([0.7]))]


def _matrix(xp, x, y, b, p, formula):
    """F_ij (rows: the output index, columns: the reduced one) of the case's formula; b indexed by j."""
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if formula == "sum":
        return xp.exp(-p[0] * d2)
    if formula == "lse":
        return -p[0] * d2 + b[None, :, 1]
    if formula == "softmax":
        return -p[0] * d2
    return d2 * p[0] + b[None, :, 0]


def dense(xp, name, x, y, b, p):
    """The reduction over the rows of y and b (NumPy or jax.numpy, float64), as keomlir's outputs."""
    def sort(a):
        return np.sort(a, axis=1) if xp is np else jnp.sort(a, axis=1)

    def argsort(a):  # ties to the lower index, as keomlir
        return np.argsort(a, axis=1, kind="stable") if xp is np else jnp.argsort(a, axis=1, stable=True)

    if name == "Sum":
        return (_matrix(xp, x, y, b, p, "sum") @ b,)
    if name == "LogSumExp":
        f = _matrix(xp, x, y, b, p, "lse")
        top = f.max(1, keepdims=True)
        return (top + xp.log(xp.exp(f - top).sum(1, keepdims=True)),)
    if name == "SumSoftMaxWeight":
        f = _matrix(xp, x, y, b, p, "softmax")
        w = xp.exp(f - f.max(1, keepdims=True))
        return ((w @ b) / w.sum(1, keepdims=True),)
    f = _matrix(xp, x, y, b, p, "select")
    order = argsort(f)
    table = {"Min": (f.min(1, keepdims=True),), "Max": (f.max(1, keepdims=True),),
             "ArgMin": (order[:, :1],), "ArgMax": (order[:, -1:],),
             "Min_ArgMin": (f.min(1, keepdims=True), order[:, :1]),
             "Max_ArgMax": (f.max(1, keepdims=True), order[:, -1:]),
             "KMin": (sort(f)[:, :K],), "ArgKMin": (order[:, :K],), "KMin_ArgKMin": (sort(f)[:, :K], order[:, :K])}
    return table[name]


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def _close(got, want, tol=1e-10):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", list(CASES))
def test_values_eager_and_jit_against_numpy(name, axis):
    g = genred(name, axis)
    args = data()
    want = dense(np, name, *args)
    calls = (g, jax.jit(g)) if axis == 1 else (jax.jit(g),)  # (an eager call is an XLA program of its own)
    for call in calls:
        out = _outputs(call(*map(jnp.asarray, args)))
        assert len(out) == len(want)
        for o, w in zip(out, want):
            assert o.dtype == (jnp.int64 if w.dtype.kind == "i" else jnp.float64)
            _close(o, w)


def _loss(fn):
    """A scalar of every float output (weighted so that no derivative vanishes by symmetry)."""
    def loss(*args):
        out = _outputs(fn(*args))
        return sum((o * jnp.arange(1, 1 + o.size).reshape(o.shape)).sum() ** 2 / 100
                   for o in out if o.dtype.kind == "f")
    return loss


def _derivatives(fn):
    """One jitted program: the gradients of `_loss(fn)` (reverse mode) and the tangent of fn's
    first output along a direction of every argument (forward mode)."""
    def both(*args):
        tangents = tuple(jnp.cos(jnp.arange(a.size) + 1.0).reshape(a.shape) for a in args)
        return (jax.grad(_loss(fn), argnums=tuple(range(len(args))))(*args),
                jax.jvp(lambda *a: _outputs(fn(*a))[0], args, tangents)[1])
    return jax.jit(both)


# axis 0: one reduction of each kind (the kernels are those of axis 1 with i and j exchanged)
@pytest.mark.parametrize("name, axis", [(name, 1) for name in DIFFERENTIABLE] +
                         [(name, 0) for name in ("Sum", "LogSumExp", "KMin")])
def test_derivatives_against_dense_autodiff(name, axis):
    g = genred(name, axis)
    args = [jnp.asarray(a) for a in data(seed=1)]
    (grads, tangent), (want_grads, want_tangent) = (_derivatives(g)(*args),
                                                    _derivatives(lambda *a: dense(jnp, name, *a))(*args))
    for got, want in zip(grads + (tangent,), want_grads + (want_tangent,)):
        _close(got, want, 1e-9)
    if name == "Sum" and axis == 1:  # eagerly; the oracle's own derivative against central differences of NumPy's
        x, y, b, p = data(seed=1)
        h, e = 1e-6, np.zeros_like(x)
        e[2, 1] = 1
        fd = (_loss(lambda *a: dense(np, name, *a))(x + h * e, y, b, p)
              - _loss(lambda *a: dense(np, name, *a))(x - h * e, y, b, p)) / (2 * h)
        np.testing.assert_allclose(jax.grad(_loss(g))(*args)[2, 1], fd, rtol=1e-6)
        np.testing.assert_allclose(want_grads[0][2, 1], fd, rtol=1e-6)


@pytest.mark.parametrize("name", ["Sum", "KMin_ArgKMin"])
def test_jacobians_under_jit(name):
    g = genred(name, 1)
    args = [jnp.asarray(a) for a in data(seed=2)]

    def first(fn):
        return lambda *a: _outputs(fn(*a))[0]

    want = jax.jit(jax.jacfwd(first(lambda *a: dense(jnp, name, *a)), argnums=(0, 1, 3)))(*args)
    for transform in (jax.jacfwd, jax.jacrev):
        got = jax.jit(transform(first(g), argnums=(0, 1, 3)))(*args)
        for u, v in zip(got, want):
            _close(u, v, 1e-9)


def _lse_losses():
    g = genred("LogSumExp", 1)
    x, y, b, p = [jnp.asarray(a) for a in data(seed=3)]
    return (_loss(lambda x, y: g(x, y, b, p)), _loss(lambda x, y: dense(jnp, "LogSumExp", x, y, b, p)[0]),
            x[:3], y)


def test_hessian():
    loss, oracle, x, y = _lse_losses()
    _close(jax.jit(jax.hessian(loss))(x, y), jax.jit(jax.hessian(oracle))(x, y), 1e-8)


@pytest.mark.slow  # the kernels of third derivatives: long to compile
def test_third_order():
    loss, oracle, x, y = _lse_losses()
    _close(jax.jit(jax.jacfwd(jax.hessian(loss)))(x[:2], y), jax.jit(jax.jacfwd(jax.hessian(oracle)))(x[:2], y), 1e-7)


def _genred_calls(jaxpr):
    """The keomlir_genred equations of a jaxpr."""
    return [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "keomlir_genred"]


def test_vmap_is_one_block_sparse_call():
    g = genred("Sum", 1)
    x, y, b, p = [jnp.asarray(a) for a in data(seed=4)]
    xs, ps = jnp.stack([x, x + 1, 2 * x]), jnp.asarray([[0.5], [0.7], [1.5]])
    batched = jax.vmap(g, in_axes=(0, None, None, 0))
    calls = _genred_calls(jax.make_jaxpr(batched)(xs, y, b, ps).jaxpr)
    assert len(calls) == 1 and calls[0].params["ranges"] is not None
    want = np.stack([dense(np, "Sum", *map(np.asarray, (xs[k], y, b, ps[k])))[0] for k in range(3)])
    _close(batched(xs, y, b, ps), want)
    _close(jax.jit(batched)(xs, y, b, ps), want)
    bs = jnp.stack([b, -b])  # batched over the reduced index, axis 1 of the batch
    _close(jax.jit(jax.vmap(g, in_axes=(None, None, 1, None)))(x, y, jnp.moveaxis(bs, 0, 1), p),
           np.stack([dense(np, "Sum", *map(np.asarray, (x, y, bb, p)))[0] for bb in bs]))
    nested = jax.jit(jax.vmap(jax.vmap(g, in_axes=(0, None, None, None)), in_axes=(None, None, 0, None)))(xs, y, bs, p)
    _close(nested, np.stack([[dense(np, "Sum", *map(np.asarray, (xx, y, bb, p)))[0] for xx in xs] for bb in bs]))


def test_vmap_of_selections_and_their_indices():
    g = genred("KMin_ArgKMin", 1)
    x, y, b, p = [jnp.asarray(a) for a in data(seed=5)]
    ys = jnp.stack([y, y[::-1] * 2])
    values, indices = jax.jit(jax.vmap(g, in_axes=(None, 0, None, None)))(x, ys, b, p)
    for k in range(2):
        want = dense(np, "KMin_ArgKMin", *map(np.asarray, (x, ys[k], b, p)))
        _close(values[k], want[0])
        np.testing.assert_array_equal(indices[k], want[1])


def test_leading_batch_dimensions():
    g = genred("LogSumExp", 1)
    x, y, b, p = [jnp.asarray(a) for a in data(seed=6)]
    xs = jnp.stack([x, -x])
    want = np.stack([dense(np, "LogSumExp", *map(np.asarray, (xx, y, b, p)))[0] for xx in xs])
    _close(g(xs, y[None], b[None], p), want)
    _close(jax.jit(g)(xs, y[None], b[None], p), want)


def test_block_sparse_ranges_eager_and_jit():
    g = genred("Sum", 1)
    x, y, b, p = data(seed=7)
    ranges_i = np.array([[0, 4], [4, 7]])
    slices_i = np.array([1, 2])
    redranges_j = np.array([[0, 5], [3, 9]])
    ranges = (ranges_i, slices_i, redranges_j, np.array([[0, 3], [3, 5], [5, 9]]), np.array([1, 2, 3]),
              np.array([[0, 4], [0, 7], [4, 7]]))  # the same pairs, by blocks of j
    mask = np.zeros((M, N))
    mask[:4, :5] = mask[4:, 3:] = 1
    want = (_matrix(np, x, y, b, p, "sum") * mask) @ b
    args = [jnp.asarray(a) for a in (x, y, b, p)]
    _close(g(*args, ranges=ranges), want)
    _close(jax.jit(lambda *a: g(*a, ranges=ranges))(*args), want)
    with pytest.raises(ValueError, match="ranges: the block-sparse ranges of a keomlir call are static"):
        jax.jit(lambda r, *a: g(*a, ranges=(r,) + ranges[1:]))(jnp.asarray(ranges_i), *args)


def test_jit_lowers_dense_calls_to_the_generated_handler():
    g = genred("Sum", 1)
    args = [jnp.asarray(a) for a in data()]
    text = jax.jit(g).lower(*args).as_text()
    assert "custom_call @keomlir_direct_" in text and "dense<[0, 1]>" in text  # y and b column-major
    blocks = (np.array([[0, M]]), np.array([1]), np.array([[0, N]]), np.array([[0, N]]), np.array([1]),
              np.array([[0, M]]))
    assert "custom_call @keomlir_call_" in jax.jit(lambda *a: g(*a, ranges=blocks)).lower(*args).as_text()


def test_threaded_generated_handler():
    """Enough pairs for several threads: the generated handler splits the rows (its tasks on
    XLA's pool) and gives the NumPy front end's values."""
    formula, aliases = "Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]
    g, g_np = Genred(formula, aliases, axis=1), kn.Genred(formula, aliases, axis=1)
    r = np.random.default_rng(8)
    x, y, b = r.normal(size=(1000, 3)), r.normal(size=(700, 3)), r.normal(size=(700, 1))
    cpu.set_num_threads(3)
    try:
        fn = jax.jit(g)
        assert "keomlir_direct_" in fn.lower(*map(jnp.asarray, (x, y, b))).as_text()
        got = fn(*map(jnp.asarray, (x, y, b)))
    finally:
        cpu.set_num_threads(None)
    _close(got, np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b)
    _close(got, g_np(x, y, b), 1e-13)


def test_float32_and_int32_indices_without_x64():
    g = Genred(SELECT, ALIASES, "KMin_ArgKMin", axis=1, opt_arg=K)
    args = data(seed=9, dtype=np.float32)
    want = dense(np, "KMin_ArgKMin", *[a.astype(np.float64) for a in args])
    with jax.enable_x64(False):
        arrays = [jnp.asarray(a) for a in args]
        for values, indices in (g(*arrays), jax.jit(g)(*arrays)):
            assert values.dtype == jnp.float32 and indices.dtype == jnp.int32
            np.testing.assert_allclose(values, want[0], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(indices, want[1])
        grad = jax.jit(jax.grad(lambda x: g(x, *arrays[1:])[0].sum()))(arrays[0])
        assert grad.dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision(dtype):
    """Half data (computed in float32, outputs rounded): through the FFI's Python handler."""
    g = genred("Sum", 1)
    args = data(seed=13)
    want = dense(np, "Sum", *args)[0]
    for call in (g, jax.jit(g)):
        out = call(*[jnp.asarray(a, dtype) for a in args])
        assert out.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=2e-2, atol=2e-2 * np.abs(want).max())


def test_kernel_solve_values_derivatives_jit_vmap():
    solver = KernelSolve("Exp(-g * SqDist(x,y)) * a", ["x = Vi(2)", "y = Vj(2)", "a = Vj(1)", "g = Pm(1)"], "a",
                         axis=1)
    r = np.random.default_rng(10)
    x, b, g = jnp.asarray(r.normal(size=(12, 2))), jnp.asarray(r.normal(size=(12, 1))), jnp.asarray([1.5])

    def oracle(x, b, g, alpha):
        return jnp.linalg.solve(alpha * jnp.eye(len(x)) + jnp.exp(-g[0] * ((x[:, None] - x[None]) ** 2).sum(-1)), b)

    def solve(x, b, g, alpha):
        return solver(x, x, b, g, alpha=alpha, eps=1e-13)

    alpha = jnp.asarray(0.3)
    want = oracle(x, b, g, alpha)
    np.testing.assert_allclose(np.linalg.solve(0.3 * np.eye(12) + np.exp(-1.5 * ((np.asarray(x)[:, None]
                               - np.asarray(x)[None]) ** 2).sum(-1)), np.asarray(b)), want, rtol=1e-10)
    _close(solve(x, b, g, alpha), want, 1e-9)
    _close(jax.jit(solve)(x, b, g, alpha), want, 1e-9)
    for got, ref in zip(jax.jit(jax.grad(_loss(solve), argnums=(0, 1, 2, 3)))(x, b, g, alpha),
                        jax.jit(jax.grad(_loss(oracle), argnums=(0, 1, 2, 3)))(x, b, g, alpha)):
        _close(got, ref, 1e-8)
    _close(jax.jit(jax.jacfwd(solve, argnums=2))(x, b, g, alpha), jax.jit(jax.jacfwd(oracle, argnums=2))(x, b, g, alpha),
           1e-8)
    bs = jnp.stack([b, 2 * b + 1])
    _close(jax.jit(jax.vmap(solve, in_axes=(None, 0, None, None)))(x, bs, g, alpha),
           jnp.stack([oracle(x, bb, g, alpha) for bb in bs]), 1e-9)


def test_lazytensor_reductions_and_solve():
    r = np.random.default_rng(11)
    x, y, b = (jnp.asarray(r.normal(size=s)) for s in ((M, 3), (N, 3), (N, 2)))
    d2 = ((np.asarray(x)[:, None] - np.asarray(y)[None]) ** 2).sum(-1)

    def kernel(x, y):
        return (-Vi(x).sqdist(Vj(y))).exp()

    _close(kernel(x, y) @ b, np.exp(-d2) @ np.asarray(b))
    _close(jax.jit(lambda x, y: (-Vi(x).sqdist(Vj(y))).logsumexp(dim=1))(x, y),
           np.log(np.exp(-d2).sum(1, keepdims=True)))
    np.testing.assert_array_equal(Vi(x).sqdist(Vj(y)).argKmin(K, dim=1), np.argsort(d2, 1, kind="stable")[:, :K])
    np.testing.assert_array_equal(generic_argkmin("SqDist(x,y)", f"a = Vi({K})", "x = Vi(3)", "y = Vj(3)")(x, y),
                                  np.argsort(d2, 1, kind="stable")[:, :K])
    grad = jax.jit(jax.grad(lambda x: (kernel(x, y) @ b).sum()))(x)
    _close(grad, jax.jit(jax.grad(lambda x: (jnp.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b).sum()))(x))
    weighted = (LazyTensor(x[:, None, :]) * Pm(jnp.asarray([2.0]))).sum(-1).sum(dim=0)
    _close(weighted, np.full((1, 1), 2 * np.asarray(x).sum()))
    K_xx = (-Vi(x).sqdist(Vj(x))).exp()
    a = jax.jit(lambda bb: K_xx.solve(Vi(bb), alpha=0.5, eps=1e-13))(b[:M])
    _close(a, np.linalg.solve(0.5 * np.eye(M) + np.exp(-((np.asarray(x)[:, None] - np.asarray(x)[None]) ** 2)
                                                         .sum(-1)), np.asarray(b[:M])), 1e-9)


def test_complex_lazytensor():
    r = np.random.default_rng(12)
    x, y = r.normal(size=(M, 2)), r.normal(size=(N, 2))
    z = r.normal(size=(N, 3)) + 1j * r.normal(size=(N, 3))
    phase = np.exp(1j * ((x[:, None] - y[None]) ** 2).sum(-1))

    def fourier(x, y, z):
        lazy = ((Vi(x) - Vj(y)) ** 2).sum(-1).exp1j()
        assert isinstance(lazy, ComplexLazyTensor)
        return lazy @ z

    for call in (fourier, jax.jit(fourier)):
        got = call(*map(jnp.asarray, (x, y, z)))
        assert got.dtype == jnp.complex128
        _close(got, phase @ z)
    grad = jax.jit(jax.grad(lambda x: jnp.abs(fourier(x, jnp.asarray(y), jnp.asarray(z))).sum()))(jnp.asarray(x))
    _close(grad, jax.jit(jax.grad(lambda x: jnp.abs(jnp.exp(1j * ((x[:, None] - y[None]) ** 2).sum(-1)) @ z).sum()))(
        jnp.asarray(x)), 1e-9)


def test_errors_name_the_argument():
    g = genred("Sum", 1)
    x, y, b, p = [jnp.asarray(a) for a in data()]
    with pytest.raises(TypeError, match=r"argument 0 \('x'\): expected a jax.Array, got ndarray"):
        g(np.asarray(x), y, b, p)
    numpy_error = None
    try:
        kn.Genred(CASES["Sum"][0], ALIASES, "Sum", axis=1)(*map(np.asarray, (x, y[:, :2], b, p)))
    except ValueError as e:
        numpy_error = str(e)
    for call in (g, jax.jit(g)):
        with pytest.raises(ValueError) as info:
            call(x, y[:, :2], b, p)
        assert str(info.value) == numpy_error  # keomlir.numpy's message, also when JAX traces the call
    with pytest.raises(ValueError, match="keomlir.jax runs on the CPU"):
        g(x, y, b, p, backend="GPU_1D")
    with pytest.raises(TypeError, match="argument 1 .*: expected a jax.Array"):
        KernelSolve("Exp(-SqDist(x,y)) * a", ["x = Vi(2)", "y = Vj(2)", "a = Vj(1)"], "a", axis=1)(
            x[:, :2], np.ones((M, 2)), x[:, :1])
