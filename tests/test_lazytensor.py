"""LazyTensor (NumPy and torch): every operator and method against dense NumPy / torch
oracles, pykeops's shapes, printing, build-time errors, batch dimensions, scipy interop."""


import numpy as np
import pytest

from keomlir.numpy import Genred, LazyTensor, Pm, Vi, Vj

from conftest import needs_torch, optional

torch, kt = optional("torch"), optional("keomlir.torch")

M, N, D = 7, 9, 3


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(7)
    return dict(
        x=r.uniform(0.5, 1.5, (M, D)),  # positive: log, sqrt, powers
        y=r.uniform(-1.0, 1.0, (N, D)),
        u=r.uniform(-1.0, 1.0, (M, D)),
        e=r.uniform(-1.0, 1.0, (M, 1)),
        w=r.uniform(0.5, 1.5, (N, 1)),
        p=r.uniform(0.5, 1.5, (D,)),
        s9=r.uniform(-1.0, 1.0, (D * D,)),
        a6=r.uniform(-1.0, 1.0, (N, 6)),
        b2=r.uniform(-1.0, 1.0, (M, 2)),
        c12=r.uniform(-1.0, 1.0, (N, 12)),
        c8=r.uniform(-1.0, 1.0, (N, 8)),
    )


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _dense_vars(d):
    """The same variables as dense (M, N, .) broadcastable arrays."""
    return dict(d, X=d["x"][:, None, :], Y=d["y"][None, :, :], U=d["u"][:, None, :], E=d["e"][:, None, :],
                W=d["w"][None, :, :], P=d["p"], S9=d["s9"], A6=d["a6"][None], B2=d["b2"][:, None],
                C12=d["c12"][None], C8=d["c8"][None])


def _lazy_vars(d):
    return dict(X=LazyTensor(d["x"][:, None, :]), Y=LazyTensor(d["y"][None, :, :]), U=Vi(d["u"]), E=Vi(d["e"]),
                W=Vj(d["w"]), P=Pm(d["p"]), S9=LazyTensor(d["s9"]), A6=Vj(d["a6"]), B2=Vi(d["b2"]),
                C12=Vj(d["c12"]), C8=Vj(d["c8"]))


def _bcast(v):
    return np.broadcast_to(v, (M, N) + v.shape[2:]) if v.ndim == 3 else v


def _cat(*arrays):
    return np.concatenate([np.broadcast_to(a, (M, N, a.shape[-1])) for a in arrays], -1)


# (name, LazyTensor expression, dense NumPy expression): both get the same dict of variables
ELEMENTWISE = [
    ("add", lambda v: v["X"] + v["Y"], lambda v: v["X"] + v["Y"]),
    ("add_int", lambda v: v["X"] + 2, lambda v: v["X"] + 2),
    ("radd_float", lambda v: 0.5 + v["X"], lambda v: 0.5 + v["X"]),
    ("sub_param_array", lambda v: v["X"] - v["P"], lambda v: v["X"] - v["P"]),
    ("sub_raw_array", lambda v: v["X"] - v["P"] * 1.0 + np.array([0.25]), lambda v: v["X"] - v["P"] + 0.25),
    ("rsub", lambda v: 3 - v["Y"], lambda v: 3 - v["Y"]),
    ("mul", lambda v: v["X"] * v["Y"], lambda v: v["X"] * v["Y"]),
    ("mul_scalar_var", lambda v: v["E"] * v["Y"], lambda v: v["E"] * v["Y"]),
    ("rmul_float", lambda v: -1.5 * v["Y"], lambda v: -1.5 * v["Y"]),
    ("div", lambda v: v["Y"] / v["X"], lambda v: v["Y"] / v["X"]),
    ("rdiv_int", lambda v: 1 / v["X"], lambda v: 1 / v["X"]),
    ("rdiv_float", lambda v: 2.5 / v["X"], lambda v: 2.5 / v["X"]),
    ("neg", lambda v: -(v["X"] - v["Y"]), lambda v: -(v["X"] - v["Y"])),
    ("abs", lambda v: abs(v["X"] - v["Y"]), lambda v: np.abs(v["X"] - v["Y"])),
    ("abs_method", lambda v: (v["Y"] - v["X"]).abs(), lambda v: np.abs(v["Y"] - v["X"])),
    ("pow2", lambda v: (v["X"] - v["Y"]) ** 2, lambda v: (v["X"] - v["Y"]) ** 2),
    ("pow3", lambda v: v["Y"] ** 3, lambda v: v["Y"] ** 3),
    ("pow_neg", lambda v: v["X"] ** -2, lambda v: v["X"] ** -2.0),
    ("pow_half", lambda v: v["X"] ** 0.5, lambda v: np.sqrt(v["X"])),
    ("pow_mhalf", lambda v: v["X"] ** -0.5, lambda v: 1 / np.sqrt(v["X"])),
    ("pow_float", lambda v: v["X"] ** 1.7, lambda v: v["X"] ** 1.7),
    ("pow_lazy", lambda v: v["X"] ** v["W"], lambda v: v["X"] ** v["W"]),
    ("rpow", lambda v: 2 ** v["Y"], lambda v: 2.0 ** v["Y"]),
    ("power", lambda v: v["Y"].power(3), lambda v: v["Y"] ** 3),
    ("square", lambda v: v["Y"].square(), lambda v: v["Y"] ** 2),
    ("sqrt", lambda v: v["X"].sqrt(), lambda v: np.sqrt(v["X"])),
    ("rsqrt", lambda v: v["X"].rsqrt(), lambda v: 1 / np.sqrt(v["X"])),
    ("exp", lambda v: v["Y"].exp(), lambda v: np.exp(v["Y"])),
    ("log", lambda v: v["X"].log(), lambda v: np.log(v["X"])),
    ("xlogx", lambda v: v["X"].xlogx(), lambda v: v["X"] * np.log(v["X"])),
    ("sin", lambda v: v["Y"].sin(), lambda v: np.sin(v["Y"])),
    ("cos", lambda v: v["Y"].cos(), lambda v: np.cos(v["Y"])),
    ("asin", lambda v: (v["Y"] * 0.9).asin(), lambda v: np.arcsin(v["Y"] * 0.9)),
    ("acos", lambda v: (v["Y"] * 0.9).acos(), lambda v: np.arccos(v["Y"] * 0.9)),
    ("atan", lambda v: v["Y"].atan(), lambda v: np.arctan(v["Y"])),
    ("atan2", lambda v: v["Y"].atan2(v["X"] - 1), lambda v: np.arctan2(v["Y"], v["X"] - 1)),
    ("sinxdivx", lambda v: v["Y"].sinxdivx(), lambda v: np.sin(v["Y"]) / v["Y"]),
    ("sinc", lambda v: v["Y"].sinc(), lambda v: np.sinc(v["Y"])),
    ("inv", lambda v: v["X"].inv(), lambda v: 1 / v["X"]),
    ("floor", lambda v: (3 * v["Y"]).floor(), lambda v: np.floor(3 * v["Y"])),
    ("sign", lambda v: (v["X"] - 1 - v["Y"]).sign(), lambda v: np.sign(v["X"] - 1 - v["Y"])),
    ("step", lambda v: (v["X"] - 1 - v["Y"]).step(), lambda v: (v["X"] - 1 - v["Y"] >= 0) * 1.0),
    ("relu", lambda v: (v["X"] - 1 - v["Y"]).relu(), lambda v: np.maximum(v["X"] - 1 - v["Y"], 0)),
    ("clamp_int", lambda v: (3 * v["Y"]).clamp(-1, 1), lambda v: np.clip(3 * v["Y"], -1, 1)),
    ("clamp_float", lambda v: v["Y"].clamp(-0.5, 0.7), lambda v: np.clip(v["Y"], -0.5, 0.7)),
    ("clamp_lazy", lambda v: v["Y"].clamp(v["E"], v["X"] - 0.8),
     lambda v: np.where(v["Y"] < v["E"], v["E"], np.where(v["Y"] > v["X"] - 0.8, v["X"] - 0.8, v["Y"]))),
    ("ifelse", lambda v: (v["X"] - 1 - v["Y"]).ifelse(v["X"], v["Y"]),
     lambda v: np.where(v["X"] - 1 - v["Y"] >= 0, v["X"], v["Y"])),
    ("mod", lambda v: (3 * v["Y"]).mod(0.7, 0.1), lambda v: 3 * v["Y"] - 0.7 * np.floor((3 * v["Y"] - 0.1) / 0.7)),
    ("mod_int", lambda v: (5 * v["Y"]).mod(2), lambda v: np.mod(5 * v["Y"], 2)),
    ("round", lambda v: (10 * v["Y"]).round(1), lambda v: _round_half_away(100 * v["Y"]) / 10),
    ("round0", lambda v: (3 * v["Y"]).round(), lambda v: _round_half_away(3 * v["Y"])),
    ("eq", lambda v: (10 * v["Y"]).round() == 3, lambda v: (_round_half_away(10 * v["Y"]) == 3) * 1.0),
    ("ne", lambda v: (10 * v["Y"]).round() != 3, lambda v: (_round_half_away(10 * v["Y"]) != 3) * 1.0),
    ("lt", lambda v: v["X"] - 1 < v["Y"], lambda v: (v["X"] - 1 < v["Y"]) * 1.0),
    ("gt", lambda v: v["X"] - 1 > v["Y"], lambda v: (v["X"] - 1 > v["Y"]) * 1.0),
    ("le", lambda v: v["X"] - 1 <= v["Y"], lambda v: (v["X"] - 1 <= v["Y"]) * 1.0),
    ("ge", lambda v: v["X"] - 1 >= v["Y"], lambda v: (v["X"] - 1 >= v["Y"]) * 1.0),
    ("rgt_number", lambda v: 0.2 > v["Y"], lambda v: (0.2 > v["Y"]) * 1.0),
    ("unary", lambda v: v["Y"].unary("Exp"), lambda v: np.exp(v["Y"])),
    ("unary_attrs", lambda v: v["A6"].unary("Extract", dimres=2, opt_arg=1, opt_arg2=2), lambda v: v["A6"][..., 1:3]),
    ("binary_operator", lambda v: v["X"].binary(v["Y"], "-", is_operator=True), lambda v: v["X"] - v["Y"]),
    ("binary_reversed", lambda v: v["X"].binary(v["Y"], "/", is_operator=True, rversion=True),
     lambda v: v["Y"] / v["X"]),
    ("binary_named", lambda v: v["X"].binary(v["Y"], "SqDist", dimres=1),
     lambda v: ((v["X"] - v["Y"]) ** 2).sum(-1, keepdims=True)),
    ("ternary", lambda v: v["Y"].ternary(-0.5, v["E"], "Clamp"), lambda v: np.where(v["Y"] < -0.5, -0.5, np.where(v["Y"] > v["E"], v["E"], v["Y"]))),
    ("ops", lambda v: v["X"].addop(v["Y"]).mulop(2).subop(v["Y"]).divop(v["X"]),
     lambda v: ((v["X"] + v["Y"]) * 2 - v["Y"]) / v["X"]),
]


def _mat(a, rows):
    return a.reshape(a.shape[:-1] + (rows, -1))


VECTOR = [
    ("sum_last", lambda v: v["Y"].sum(-1), lambda v: v["Y"].sum(-1, keepdims=True)),
    ("sum_dim2", lambda v: (v["X"] * v["Y"]).sum(dim=2), lambda v: (v["X"] * v["Y"]).sum(-1, keepdims=True)),
    ("sqnorm2", lambda v: (v["X"] - v["Y"]).sqnorm2(), lambda v: ((v["X"] - v["Y"]) ** 2).sum(-1, keepdims=True)),
    ("norm2", lambda v: (v["X"] - v["Y"]).norm2(),
     lambda v: np.sqrt(((v["X"] - v["Y"]) ** 2).sum(-1, keepdims=True))),
    ("norm", lambda v: (v["X"] - v["Y"]).norm(-1), lambda v: np.linalg.norm(v["X"] - v["Y"], axis=-1)[..., None]),
    ("normalize", lambda v: (v["X"] - v["Y"]).normalize(),
     lambda v: (v["X"] - v["Y"]) / np.linalg.norm(v["X"] - v["Y"], axis=-1, keepdims=True)),
    ("sqdist", lambda v: v["X"].sqdist(v["Y"]), lambda v: ((v["X"] - v["Y"]) ** 2).sum(-1, keepdims=True)),
    ("scalprod", lambda v: (v["X"] | v["Y"]), lambda v: (v["X"] * v["Y"]).sum(-1, keepdims=True)),
    ("weightedsqnorm_scalar", lambda v: v["Y"].weightedsqnorm(v["E"]),
     lambda v: v["E"] * (v["Y"] ** 2).sum(-1, keepdims=True)),
    ("weightedsqnorm_diag", lambda v: v["Y"].weightedsqnorm(v["P"]),
     lambda v: (v["P"] * v["Y"] ** 2).sum(-1, keepdims=True)),
    ("weightedsqnorm_full", lambda v: v["Y"].weightedsqnorm(v["S9"]),
     lambda v: np.einsum("...k,kl,...l->...", v["Y"], v["S9"].reshape(3, 3), v["Y"])[..., None]),
    ("weightedsqdist", lambda v: v["X"].weightedsqdist(v["Y"], v["P"]),
     lambda v: (v["P"] * (v["X"] - v["Y"]) ** 2).sum(-1, keepdims=True)),
    ("elem", lambda v: v["Y"].elem(2), lambda v: v["Y"][..., 2:3]),
    ("getitem_int", lambda v: v["Y"][1], lambda v: v["Y"][..., 1:2]),
    ("getitem_negative", lambda v: v["Y"][-1], lambda v: v["Y"][..., 2:3]),
    ("getitem_ellipsis", lambda v: v["Y"][..., 0], lambda v: v["Y"][..., 0:1]),
    ("getitem_full", lambda v: (v["X"] - v["Y"])[:, :, 1:3], lambda v: (v["X"] - v["Y"])[..., 1:3]),
    ("extract", lambda v: v["A6"].extract(1, 4), lambda v: v["A6"][..., 1:5]),
    ("getitem_slice", lambda v: v["A6"][2:], lambda v: v["A6"][..., 2:]),
    ("getitem_slice_stop", lambda v: v["A6"][:2], lambda v: v["A6"][..., :2]),
    ("concat", lambda v: v["X"].concat(v["W"]), lambda v: _cat(v["X"], v["W"])),
    ("concatenate", lambda v: LazyTensor.concatenate((v["X"], v["Y"], v["W"])),
     lambda v: _cat(v["X"], v["Y"], v["W"])),
    ("cat", lambda v: LazyTensor.cat((v["E"], v["Y"]), -1),
     lambda v: _cat(v["E"], v["Y"])),
    ("one_hot", lambda v: (4 * v["W"]).one_hot(7), lambda v: (_round_half_away(4 * v["W"]) == np.arange(7)) * 1.0),
    ("min_vec", lambda v: (v["X"] - v["Y"]).min(-1), lambda v: (v["X"] - v["Y"]).min(-1, keepdims=True)),
    ("max_vec", lambda v: (v["X"] - v["Y"]).max(-1), lambda v: (v["X"] - v["Y"]).max(-1, keepdims=True)),
    ("argmin_vec", lambda v: (v["X"] - v["Y"]).argmin(-1), lambda v: (v["X"] - v["Y"]).argmin(-1)[..., None] * 1.0),
    ("argmax_vec", lambda v: (v["X"] - v["Y"]).argmax(dim=2), lambda v: (v["X"] - v["Y"]).argmax(-1)[..., None] * 1.0),
    ("matvecmult", lambda v: v["A6"].matvecmult(v["B2"]),
     lambda v: np.einsum("...kl,...l->...k", _mat(_bcast(v["A6"]), 3), _bcast(v["B2"]))),
    ("vecmatmult", lambda v: v["B2"].vecmatmult(v["A6"]),
     lambda v: np.einsum("...k,...kl->...l", _bcast(v["B2"]), _mat(_bcast(v["A6"]), 2))),
    ("tensorprod", lambda v: v["B2"].tensorprod(v["Y"]),
     lambda v: np.einsum("...k,...l->...kl", _bcast(v["B2"]), _bcast(v["Y"])).reshape(M, N, 6)),
    ("keops_tensordot", lambda v: v["A6"].keops_tensordot(v["C12"], (2, 3), (3, 4), (1,), (0,)),
     lambda v: np.einsum("...kl,...lm->...km", _mat(_bcast(v["A6"]), 2), _mat(_bcast(v["C12"]), 3)).reshape(M, N, 8)),
    ("keops_tensordot_perm", lambda v: v["A6"].keops_tensordot(v["C12"], (2, 3), (3, 4), (1,), (0,), (1, 0)),
     lambda v: np.einsum("...kl,...lm->...mk", _mat(_bcast(v["A6"]), 2), _mat(_bcast(v["C12"]), 3)).reshape(M, N, 8)),
    ("keops_kron", lambda v: v["B2"].keops_kron(v["A6"], [2, 1], [2, 3]),
     lambda v: np.stack([np.stack([np.kron(v["b2"][i].reshape(2, 1), v["a6"][j].reshape(2, 3)).ravel()
                                   for j in range(N)]) for i in range(M)])),
]

DERIVATIVES = [
    ("grad", lambda v: (v["X"] - v["Y"]).sqnorm2().grad(v["X"], v["E"]), lambda v: 2 * (v["X"] - v["Y"]) * v["E"]),
    ("grad_int", lambda v: ((v["X"] - v["Y"]) ** 2).sum(-1).grad(v["Y"], 1), lambda v: -2 * (v["X"] - v["Y"])),
    ("grad_param", lambda v: (v["P"] * v["Y"]).sum(-1).exp().grad(v["P"], v["E"]),
     lambda v: v["E"] * v["Y"] * np.exp((v["P"] * v["Y"]).sum(-1, keepdims=True))),
    ("diff", lambda v: (v["X"] - v["Y"]).sqnorm2().diff(v["X"], v["U"]),
     lambda v: 2 * ((v["X"] - v["Y"]) * v["U"]).sum(-1, keepdims=True)),
    ("grad_matrix", lambda v: (v["X"] * v["Y"]).grad_matrix(v["X"]),
     lambda v: np.einsum("kl,...l->...kl", np.eye(3), _bcast(v["Y"])).reshape(M, N, 9)),
    ("divergence", lambda v: (v["X"] * v["Y"]).divergence(v["X"]), lambda v: v["Y"].sum(-1, keepdims=True)),
    ("laplacian", lambda v: (v["X"] - v["Y"]).sqnorm2().laplacian(v["X"]), lambda v: np.full((1, 1, 1), 6.0)),
]


def _check_group(table, data, backend="reference"):
    """The expressions of a table concatenated into one formula, reduced over j once,
    then compared one by one with the dense NumPy oracle (a failure names the
    operation).  The dense float64 reference backend checks what each LazyTensor
    method writes; the code generated for each operation is tested in test_ops.py,
    and a sample of methods runs compiled below."""
    lz, dn = _lazy_vars(data), _dense_vars(data)
    exprs = [f(lz) for _, f, _ in table]
    out = LazyTensor.concatenate(tuple(exprs)).sum(dim=1, backend=backend)
    start = 0
    for (name, _, fd), e in zip(table, exprs):
        got = out[:, start:start + e.ndim]
        start += e.ndim
        want = np.broadcast_to(fd(dn), (M, N, e.ndim)).sum(1)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)
    assert start == out.shape[1]


def test_elementwise_operators_and_methods(data):
    _check_group(ELEMENTWISE, data)


def test_vector_and_tensor_methods(data):
    _check_group(VECTOR, data)


def test_symbolic_derivatives(data):
    _check_group(DERIVATIVES, data)


def test_a_sample_of_methods_compiled(data):
    names = {"add_int", "rdiv_float", "exp", "clamp_lazy", "round", "lt", "getitem_slice", "one_hot",
             "argmax_vec", "matvecmult", "grad"}
    table = [row for row in ELEMENTWISE + VECTOR + DERIVATIVES if row[0] in names]
    assert len(table) == len(names)
    _check_group(table, data, backend="CPU")


def test_formula_text_of_operators(data):
    lz = _lazy_vars(data)
    x_i, y_j = lz["X"], lz["Y"]
    assert ((x_i - y_j) ** 2).sum(-1).formula == "Sum(Square((Var(0,3,0) - Var(1,3,1))))"
    assert (x_i * 0.5).formula == "(Var(0,3,0) * Var(1,1,2))"  # a float is a parameter
    assert (x_i * 2).formula == "(Var(0,3,0) * IntCst(2))"
    assert (x_i ** 3).formula == "Pow(Var(0,3,0), 3)"
    assert (x_i + 0) is x_i and (x_i * 1) is x_i
    assert (x_i - y_j).t().formula == "(Var(0,3,1) - Var(1,3,0))"
    assert (x_i * 0.5 + y_j * 0.5).formula.count("Var(1,1,2)") == 2  # one parameter per value


# ---- reductions: values and pykeops's shapes ------------------------------------------------------


class _RefLazyTensor(LazyTensor):
    """The NumPy LazyTensor, reducing with the dense reference backend."""

    def _reduce(self, *args, **kwargs):
        kwargs.setdefault("backend", "reference")
        return super()._reduce(*args, **kwargs)


def _np_dense(d):
    x, y, w = d["x"], d["y"], d["w"]
    S = ((x[:, None] - y[None]) ** 2).sum(-1)
    V = x[:, None] - y[None]
    return S, V, w


@pytest.mark.parametrize("dim", [0, 1])
def test_reductions_numpy_shapes_and_values(data, dim):
    """Every reduction method, both axes, with pykeops's shapes; run by the dense
    reference backend (the compiled reductions are checked on the issue's cases below
    and in test_reductions.py)."""
    S_, V_, w = _np_dense(data)
    x_i, y_j, w_j = _RefLazyTensor(data["x"][:, None]), _RefLazyTensor(data["y"][None]), _RefLazyTensor(data["w"], 1)
    S, V = ((x_i - y_j) ** 2).sum(-1), x_i - y_j
    n_out = M if dim == 1 else N

    def check(got, want, shape):
        assert got.shape == shape, (got.shape, shape)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

    check(S.sum(dim), S_.sum(dim)[:, None], (n_out, 1))
    check(V.sum(axis=dim), V_.sum(dim), (n_out, 3))
    check(S.sum_reduction(dim=dim), S_.sum(dim)[:, None], (n_out, 1))
    check(V.reduction("Max", axis=dim), V_.max(dim), (n_out, 3))
    np.testing.assert_array_equal(S.reduction("ArgKMin", opt_arg=2, dim=dim), np.argsort(S_, axis=dim)[:2].T
                                  if dim == 0 else np.argsort(S_, axis=dim)[:, :2])
    lse = np.log(np.exp(-S_).sum(dim))[:, None]
    check((-S).logsumexp(dim), lse, (n_out, 1))
    check((-S).logsumexp_reduction(dim=dim), lse, (n_out, 1))
    Wt = np.broadcast_to(w[None, :, :], (M, N, 1)) * np.exp(V_)  # positive weights
    check((-S).logsumexp(dim, weight=w_j * V.exp()), np.log((np.exp(-S_)[..., None] * Wt).sum(dim)), (n_out, 3))
    soft = np.exp(-S_) / np.exp(-S_).sum(dim, keepdims=True)
    check((-S).sumsoftmaxweight(V, dim=dim), (soft[..., None] * V_).sum(dim), (n_out, 3))
    check((-S).sumsoftmaxweight_reduction(weight=V, dim=dim), (soft[..., None] * V_).sum(dim), (n_out, 3))
    for meth, fn, argfn in (("min", np.min, np.argmin), ("max", np.max, np.argmax)):
        check(getattr(V, meth)(dim), fn(V_, dim), (n_out, 3))
        check(getattr(V, meth + "_reduction")(dim=dim), fn(V_, dim), (n_out, 3))
        idx = getattr(V, "arg" + meth)(dim)
        assert idx.dtype == np.int64 and idx.shape == (n_out, 3)
        np.testing.assert_array_equal(idx, argfn(V_, dim))
        np.testing.assert_array_equal(getattr(V, "arg" + meth + "_reduction")(dim=dim), argfn(V_, dim))
        val, idx = getattr(S, f"{meth}_arg{meth}")(dim=dim)
        check(val, fn(S_, dim)[:, None], (n_out, 1))
        np.testing.assert_array_equal(idx, argfn(S_, dim)[:, None])
        val, idx = getattr(S, f"{meth}_arg{meth}_reduction")(dim=dim)
        np.testing.assert_array_equal(idx, argfn(S_, dim)[:, None])
    order_S = np.argsort(S_, axis=dim, kind="stable")
    order_V = np.argsort(V_, axis=dim, kind="stable")
    K = 4
    if dim == 1:
        kS, kV = order_S[:, :K], order_V[:, :K, :]
        vS, vV = np.take_along_axis(S_, kS, 1), np.take_along_axis(V_, kV, 1)
    else:
        kS, kV = order_S[:K].T, order_V[:K].transpose(1, 0, 2)
        vS, vV = np.take_along_axis(S_, order_S[:K], 0).T, np.take_along_axis(V_, order_V[:K], 0).transpose(1, 0, 2)
    check(S.Kmin(K, dim=dim), vS, (n_out, K))
    check(V.Kmin(K=K, axis=dim), vV, (n_out, K, 3))
    np.testing.assert_array_equal(S.argKmin(K, dim), kS)
    np.testing.assert_array_equal(V.argKmin(K, dim), kV)
    val, idx = S.Kmin_argKmin(K, dim=dim)
    check(val, vS, (n_out, K))
    np.testing.assert_array_equal(idx, kS)
    np.testing.assert_array_equal(S.argKmin_reduction(K=K, dim=dim), kS)
    check(S.Kmin_reduction(K=K, dim=dim), vS, (n_out, K))
    np.testing.assert_array_equal(S.Kmin_argKmin_reduction(K=K, dim=dim)[1], kS)


def test_reduction_options_pass_through(data):
    x_i, y_j = LazyTensor(data["x"][:, None].astype(np.float32)), LazyTensor(data["y"][None].astype(np.float32))
    S = ((x_i - y_j) ** 2).sum(-1)
    dense = ((data["x"][:, None] - data["y"][None]) ** 2).sum(-1).sum(1)[:, None]
    for kwargs in ({"backend": "CPU"}, {"dtype_acc": "float64"}, {"use_double_acc": True},
                   {"sum_scheme": "kahan_scheme"}, {"backend": "reference"}, {"enable_chunks": False}):
        out = S.sum(1, **kwargs)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, dense, rtol=1e-5, err_msg=str(kwargs))
    with pytest.raises(ValueError, match="backend"):
        S.sum(1, backend="TPU")


# ---- the issue's M, N = 1000, 2000 float32 cases against dense torch --------------------------------


@pytest.fixture(scope="module")
def big():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 3, generator=g) + 1.0  # x > y: V_ij > 0, so log Σ exp(-S) V is defined
    y = torch.rand(2000, 3, generator=g)
    x_i, y_j = kt.LazyTensor(x[:, None, :]), kt.LazyTensor(y[None, :, :])
    S_ij = ((x_i - y_j) ** 2).sum(-1)
    V_ij = x_i - y_j
    V = x[:, None, :].double() - y[None, :, :].double()
    S = (V ** 2).sum(-1)
    return S_ij, V_ij, S, V


def _close32(got, want):
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-4)


def _check_selected(idx, values, dense, dim):
    """Indices chosen by keomlir select dense values equal to the true optimum (robust to
    float32 near-ties)."""
    assert idx.dtype == torch.int64
    picked = torch.gather(dense.movedim(dim, 1), 1, idx[:, None, :])[:, 0, :]  # dense: (M, N, d)
    torch.testing.assert_close(picked, values, rtol=1e-5, atol=1e-5)


@needs_torch
def test_issue_cases_sums_over_both_dims(big):
    S_ij, V_ij, S, V = big
    for dim in (0, 1):
        _close32(S_ij.sum(dim=dim), S.sum(dim)[:, None])
        _close32(V_ij.sum(dim), V.sum(dim))


@needs_torch
def test_issue_cases_logsumexp_and_softmax(big):
    S_ij, V_ij, S, V = big
    _close32((-S_ij).logsumexp(1), torch.logsumexp(-S, 1)[:, None])
    _close32((-S_ij).logsumexp(dim=1, weight=V_ij), torch.log((torch.exp(-S)[..., None] * V).sum(1)))
    _close32((-S_ij).sumsoftmaxweight(V_ij, dim=1), (torch.softmax(-S, 1)[..., None] * V).sum(1))


@needs_torch
def test_issue_cases_min_max(big):
    S_ij, V_ij, S, V = big
    d = S[..., None]
    dmin, dmax = S.min(1).values[:, None], S.max(1).values[:, None]
    _close32(S_ij.min(1), dmin)
    _close32(S_ij.max(dim=1), dmax)
    amin, amax = S_ij.argmin(1), S_ij.argmax(1)
    assert amin.shape == amax.shape == (1000, 1)
    _check_selected(amin, dmin, d, 1)
    _check_selected(amax, dmax, d, 1)
    v, i = S_ij.min_argmin(dim=1)
    _close32(v, dmin)
    _check_selected(i, dmin, d, 1)
    v, i = S_ij.max_argmax(dim=1)
    _close32(v, dmax)
    _check_selected(i, dmax, d, 1)
    v, i = V_ij.min_argmin(dim=1)  # a vector formula: per component
    assert v.shape == i.shape == (1000, 3)
    _close32(v, V.min(1).values)
    _check_selected(i, V.min(1).values, V, 1)


@needs_torch
def test_issue_cases_kmin(big):
    S_ij, V_ij, S, V = big
    kS = torch.topk(S, 5, dim=1, largest=False).values  # (M, 5)
    kV = torch.topk(V, 7, dim=1, largest=False).values  # (M, 7, 3)
    _close32(S_ij.Kmin(5, dim=1), kS)
    _close32(V_ij.Kmin(7, dim=1), kV)
    idx = S_ij.argKmin(5, dim=1)
    assert idx.shape == kS.shape and idx.dtype == torch.int64
    torch.testing.assert_close(torch.gather(S, 1, idx), kS, rtol=1e-5, atol=1e-5)
    idx = V_ij.argKmin(K=7, axis=1)
    assert idx.shape == kV.shape == (1000, 7, 3)
    torch.testing.assert_close(torch.gather(V, 1, idx), kV, rtol=1e-5, atol=1e-5)


# ---- torch: gradients through LazyTensor reductions ----------------------------------------------


@needs_torch
def test_torch_lazytensor_gradients_match_dense_torch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 2, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(8, 2, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(8, 3, dtype=torch.float64, generator=g, requires_grad=True)
    s = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    x_i, y_j, b_j, s_p = kt.Vi(x), kt.Vj(y), kt.Vj(b), kt.Pm(s)
    D_ij = ((x_i - y_j) ** 2).sum(-1)
    K_ij = (-D_ij * s_p).exp()
    Dd = ((x[:, None] - y[None]) ** 2).sum(-1)
    Kd = torch.exp(-Dd * s)
    cases = [
        (K_ij @ b, Kd @ b),
        ((-D_ij * s_p).logsumexp(dim=1), torch.logsumexp(-Dd * s, 1, keepdim=True)),
        ((-D_ij).sumsoftmaxweight(b_j, dim=1), torch.softmax(-Dd, 1) @ b),
        ((x_i - y_j).Kmin(2, dim=0), torch.topk(x[:, None] - y[None], 2, dim=0, largest=False).values.movedim(0, 1)),
    ]
    for out, dense in cases:
        torch.testing.assert_close(out, dense)
        w = torch.randn_like(dense)
        got = torch.autograd.grad((out * w).sum(), [x, y, b, s], allow_unused=True)
        want = torch.autograd.grad((dense * w).sum(), [x, y, b, s], allow_unused=True, retain_graph=True)
        for a, e, t in zip(got, want, (x, y, b, s)):
            a = torch.zeros_like(t) if a is None else a
            e = torch.zeros_like(t) if e is None else e
            torch.testing.assert_close(a, e)


@needs_torch
def test_torch_second_order_through_lazytensor():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(6, 2, dtype=torch.float64, generator=g)

    def f(x):
        return (-kt.Vi(x).sqdist(kt.Vj(y))).exp().sum(dim=1)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


# ---- matvec, transposition, symbolic variables, printing --------------------------------------------


def test_matmul_transpose_and_linear_operator_methods(data):
    x, y = data["x"], data["y"]
    K = (-LazyTensor(x[:, None]).sqdist(LazyTensor(y[None]))).exp()
    Kd = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    v1, v2, w = data["w"][:, 0], data["a6"], data["e"]
    np.testing.assert_allclose(K @ v1, Kd @ v1, rtol=1e-12)
    assert (K @ v1).shape == (M,)
    np.testing.assert_allclose(K @ v2, Kd @ v2, rtol=1e-12)
    np.testing.assert_allclose(K.T @ w, Kd.T @ w, rtol=1e-12)
    np.testing.assert_allclose(K.t() @ w[:, 0], Kd.T @ w[:, 0], rtol=1e-12)
    assert K.shape == (M, N) and K.T.shape == (N, M)
    np.testing.assert_allclose(K.matvec(v1), Kd @ v1, rtol=1e-12)
    np.testing.assert_allclose(K.rmatvec(w), Kd.T @ w, rtol=1e-12)
    np.testing.assert_allclose(K.matmat(v2), Kd @ v2, rtol=1e-12)
    vb = np.stack([v2, 2 * v2])  # (2, N, 6): batched right-hand sides
    np.testing.assert_allclose(K @ vb, np.stack([Kd @ v2, 2 * Kd @ v2]), rtol=1e-12)


def test_symbolic_variables_give_callable_reductions(data):
    x, y, p = data["x"], data["y"], data["p"][:1]
    f = (-Pm(2, 1) * Vi(0, 3).sqdist(Vj(1, 3))).exp()
    red = f.sum(dim=1)
    assert not isinstance(red, np.ndarray)
    assert "Sum (axis=1)" in str(red) and "Var(2,1,2)" in str(red)
    dense = np.exp(-p[0] * ((x[:, None] - y[None]) ** 2).sum(-1)).sum(1)[:, None]
    np.testing.assert_allclose(red(x, y, p), dense, rtol=1e-12)
    # symbolic and data variables together: the data follow the symbolic ones
    g = (Vi(0, 3) - LazyTensor(y[None])).sqnorm2().min(dim=1)
    np.testing.assert_allclose(g(x), ((x[:, None] - y[None]) ** 2).sum(-1).min(1)[:, None], rtol=1e-12)
    assert "symbolic variables: Var(0,3,0)" in str(Vi(0, 3) - LazyTensor(y[None]))
    with pytest.raises(ValueError, match="takes 1 array"):
        g(x, y)
    # the LazyTensor((ind, dim, cat)) form and the Var helper
    from keomlir.numpy import Var
    h = (LazyTensor((0, 3, 0)) * Var(1, 3, 1)).sum(-1).sum(dim=0)
    np.testing.assert_allclose(h(x, y), (x @ y.T).sum(0)[:, None], rtol=1e-12)


def test_printing_shows_formula_and_symbolic_shape(data):
    x_i, y_j = LazyTensor(data["x"][:, None]), LazyTensor(data["y"][None])
    S = ((x_i - y_j) ** 2).sum(-1)
    text = str(S)
    assert "formula: Sum(Square((Var(0,3,0) - Var(1,3,1))))" in text
    assert f"shape: ({M}, {N})" in text and "float64" in text
    assert repr(x_i - y_j).endswith(f"shape: ({M}, {N}, 3)\n    dtype: float64")
    assert (x_i - y_j).shape == (M, N, 3) and S.shape == (M, N) and S.ndim == 1
    assert (x_i - y_j)._shape == (M, N, 3) and S.dim() == 3 and x_i.shape == (M, 1, 3)
    assert LazyTensor(data["p"]).shape == (1, 1, 3) and Pm(2.0).shape == (1, 1)
    red = Vi(0, 3).sqnorm2().Kmin(3, dim=0)
    assert "reduction: KMin (axis=0)" in str(red) and "opt_arg: 3" in str(red)
    assert "formula2" in str((Vi(0, 1)).logsumexp(dim=1, weight=Vj(1, 2)))


# ---- batch dimensions ------------------------------------------------------------------------------------


def test_batch_dimensions_broadcast_numpy():
    r = np.random.default_rng(1)
    x = r.standard_normal((2, 1, 5, 1, 3))
    y = r.standard_normal((1, 4, 1, 6, 3))
    s = r.uniform(0.5, 1.0, (2, 4, 1, 1, 1))
    x_i, y_j, s_p = LazyTensor(x), LazyTensor(y), LazyTensor(s)
    K = (-s_p * ((x_i - y_j) ** 2).sum(-1)).exp()
    assert K.shape == (2, 4, 5, 6) and K.nbatchdims == 2 and K.batchdims == (2, 4)
    dense = np.exp(-s[..., 0] * ((x - y) ** 2).sum(-1))  # (2, 4, 5, 6)
    np.testing.assert_allclose(K.sum(dim=3), dense.sum(3)[..., None], rtol=1e-12)
    np.testing.assert_allclose(K.sum(dim=2), dense.sum(2)[..., None], rtol=1e-12)
    np.testing.assert_allclose(K.max(3), dense.max(3)[..., None], rtol=1e-12)
    np.testing.assert_array_equal(K.argKmin(2, dim=3), np.argsort(dense, axis=3, kind="stable")[..., :2])
    v = r.standard_normal((6, 2))
    np.testing.assert_allclose(K @ v, dense @ v, rtol=1e-12)
    with pytest.raises(ValueError, match="axis.*2.*3"):
        K.sum(dim=1)
    # batch dimensions carried by a parameter only: the variables are padded with leading 1s
    s2 = r.uniform(0.5, 1.0, (3, 1, 1, 1))
    K2 = (-LazyTensor(s2) * ((LazyTensor(x[0, 0]) - LazyTensor(y[0, 0])) ** 2).sum(-1)).exp()
    assert K2.shape == (3, 5, 6)
    dense2 = np.exp(-s2[..., 0] * ((x[0, 0] - y[0, 0]) ** 2).sum(-1))
    np.testing.assert_allclose(K2.sum(dim=2), dense2.sum(2)[..., None], rtol=1e-12)
    with pytest.raises(ValueError, match="batch dimensions"):
        LazyTensor(r.standard_normal((3, 5, 1, 3))) + LazyTensor(r.standard_normal((2, 1, 6, 3)))


@needs_torch
def test_batch_dimensions_torch_with_gradients():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 5, 2, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(1, 6, 2, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, 6, 1, dtype=torch.float64, generator=g)
    K = (-kt.LazyTensor(x[:, :, None, :]).sqdist(kt.LazyTensor(y[:, None, :, :]))).exp()
    out = K @ b
    dense = torch.exp(-((x[:, :, None] - y[:, None]) ** 2).sum(-1)) @ b
    assert out.shape == (3, 5, 1)
    torch.testing.assert_close(out, dense)
    got = torch.autograd.grad(out.sum(), [x, y])
    want = torch.autograd.grad(dense.sum(), [x, y])
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_genred_accepts_batch_dimensions():
    r = np.random.default_rng(2)
    g = Genred("Exp(-p*SqDist(x,y)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "p = Pm(1)"], axis=1)
    x, y, b = r.standard_normal((4, 5, 2)), r.standard_normal((6, 2)), r.standard_normal((4, 6, 1))
    p = r.uniform(0.5, 1, (4, 1))
    dense = np.exp(-p[:, None, :] * ((x[:, :, None] - y[None, None]) ** 2).sum(-1)) @ b
    np.testing.assert_allclose(g(x, y, b, p), dense, rtol=1e-12)
    # a plain (1, d) parameter keeps the plain call
    assert g(x[0], y, b[0], p[:1]).shape == (5, 1)
    with pytest.raises(ValueError, match="batch dimensions do not broadcast"):
        g(x, y, r.standard_normal((3, 6, 1)), p)
    if torch is not None:
        tg = kt.Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "ArgKMin", axis=1, opt_arg=2)
        idx = tg(torch.from_numpy(x), torch.from_numpy(y))
        assert idx.shape == (4, 5, 2) and idx.dtype == torch.int64


# ---- scipy.sparse.linalg interop -----------------------------------------------------------------------


def test_scipy_aslinearoperator_eigsh_and_cg():
    sla = pytest.importorskip("scipy.sparse.linalg")
    r = np.random.default_rng(3)
    x = r.standard_normal((300, 2))
    K = (-LazyTensor(x[:, None]).sqdist(LazyTensor(x[None])) / 2).exp()
    Kd = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 2)
    op = sla.aslinearoperator(K)
    assert op.shape == (300, 300)
    vals = sla.eigsh(op, k=5, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(Kd)[-5:], rtol=1e-8)
    b = r.standard_normal(300)
    A = op + 0.5 * sla.aslinearoperator(np.eye(300))
    sol, info = sla.cg(A, b, rtol=1e-10, atol=0)
    assert info == 0
    np.testing.assert_allclose(sol, np.linalg.solve(Kd + 0.5 * np.eye(300), b), rtol=1e-6, atol=1e-8)
    sol, info = sla.gmres(op + 0.5 * sla.aslinearoperator(np.eye(300)), b, rtol=1e-10, atol=0)
    assert info == 0
    # float32 LazyTensors take scipy's float64 vectors
    K32 = (-LazyTensor(x[:, None].astype(np.float32)).sqdist(LazyTensor(x[None].astype(np.float32))) / 2).exp()
    np.testing.assert_allclose(sla.aslinearoperator(K32).matvec(b), Kd @ b, rtol=1e-4)


# ---- build-time errors ------------------------------------------------------------------------------------


def test_build_time_errors(data):
    x_i, y_j = LazyTensor(data["x"][:, None]), LazyTensor(data["y"][None])
    with pytest.raises(ValueError, match=r"incompatible dimensions \(3, 2\)"):
        x_i + Vj(data["b2"][:N] if data["b2"].shape[0] >= N else np.zeros((N, 2)))
    with pytest.raises(ValueError, match="i-indexed rows, M=7 and M=4"):
        x_i + Vi(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="j-indexed rows"):
        y_j - Vj(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="different dtypes, float64 and float32"):
        x_i - LazyTensor(data["y"][None].astype(np.float32))
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        LazyTensor(np.zeros((3, 1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="needs axis=0"):
        LazyTensor(data["x"])
    with pytest.raises(ValueError, match=r"\(\.\.\., M, 1, D\)"):
        LazyTensor(np.zeros((3, 4, 2)))
    with pytest.raises(ValueError, match="do not give axis"):
        LazyTensor(data["x"][:, None], axis=0)
    with pytest.raises(ValueError, match="out of bounds"):
        x_i.elem(3)
    with pytest.raises(ValueError, match="not inside"):
        x_i[1:5]
    with pytest.raises(ValueError, match="last dimension only"):
        x_i[0, 1]
    with pytest.raises(ValueError, match="scalar LazyTensors"):
        x_i.one_hot(4)
    with pytest.raises(ValueError, match="give the reduction axis"):
        x_i.logsumexp()
    with pytest.raises(ValueError, match="must be 0 .* or 1"):
        (x_i - y_j).sum(dim=5)
    with pytest.raises(ValueError, match="inner dimension 1"):
        (x_i - y_j) @ data["w"]
    with pytest.raises(ValueError, match="variable"):
        (x_i - y_j).grad(x_i * 2, 1)
    with pytest.raises(ValueError, match="gradin must have the dimension"):
        (x_i - y_j).grad(x_i, 1)
    with pytest.raises(ValueError, match="weights must have dimension 1, D or D\\*D"):
        x_i.weightedsqnorm(LazyTensor(np.ones(5)))
    with pytest.raises(ValueError, match="same dimension"):
        x_i | Vj(np.zeros((N, 2)))
    with pytest.raises(ValueError, match="exponent"):
        x_i ** Vj(np.zeros((N, 2)))
    red = Vi(0, 3).sum(dim=1)
    with pytest.raises(TypeError, match="reduced LazyTensor"):
        x_i + red
    with pytest.raises(ValueError, match="after a reduction"):
        x_i(data["x"])
    with pytest.raises(ValueError, match="keops_tensordot"):
        x_i.keops_tensordot(y_j, (2, 2), (3,), (0,), (0,))
    with pytest.raises(ValueError, match="Var\\(0,3,0\\) and as Var\\(0,2,0\\)"):
        (Vi(0, 3).sum(-1) + Vi(0, 2).sum(-1)).sum(dim=1)


@needs_torch
def test_build_time_errors_mixing_numpy_and_torch(data):
    x_i = LazyTensor(data["x"][:, None])
    with pytest.raises(TypeError, match="NumPy"):
        x_i - torch.zeros(1, 4, 3)
    with pytest.raises(TypeError, match="mixing NumPy and torch"):
        LazyTensor(torch.zeros(3))
    with pytest.raises(TypeError, match="cannot combine a NumPy LazyTensor with a torch LazyTensor"):
        x_i + kt.LazyTensor(torch.zeros(1, 4, 3))
    with pytest.raises(TypeError, match="mixing NumPy and torch"):
        kt.LazyTensor(np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="different devices"):
        kt.LazyTensor(torch.zeros(3, 1, 2)) + kt.LazyTensor(torch.zeros(1, 4, 2, device="meta"))


def test_numbers_lists_and_parameters(data):
    x_i = LazyTensor(data["x"][:, None])
    dense = data["x"]
    for lazy, want in ((x_i * [1.0, 2.0, 3.0], dense * [1, 2, 3]),
                       (x_i * np.float64(0.25), dense * 0.25),
                       (x_i + np.array(2.0), dense + 2),
                       (x_i * Pm(3), dense * 3),
                       (x_i * Pm(0.5), dense * 0.5),
                       (-x_i, -dense)):
        np.testing.assert_allclose(lazy.sum(dim=1), want, rtol=1e-12)
    f32 = LazyTensor(data["x"][:, None].astype(np.float32)) * 0.1  # the parameter takes the dtype of the data
    assert f32.sum(dim=1).dtype == np.float32
    if torch is not None:
        assert kt.Vi(torch.ones(3, 2)).ndim == 2 and kt.Pm(torch.tensor(2.0)).ndim == 1
