"""keomlir.dask on a real dask.distributed cluster of worker processes: every
reduction on both axes against keomlir.numpy on the gathered arrays and against a
dense float64 NumPy oracle, uneven chunks, ties and global indices, errors raised
before any task runs, a worker killed mid-run, an input larger than a worker's
memory, and a scheduler and workers on separate network namespaces."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("dask.distributed")

import dask  # noqa: E402

import keomlir.dask as kd  # noqa: E402
import keomlir.numpy as kn  # noqa: E402
import keomlir.dask.genred as genred  # noqa: E402
from keomlir.dask.partials import Engine, spec_of  # noqa: E402

from conftest import assert_close  # noqa: E402

ALIASES = ["x = Vi(2)", "y = Vj(2)", "b = Vj(3)"]
CHUNKS_I, CHUNKS_J = (37, 50, 13), (30, 1, 50, 42)  # M = 100, N = 123: four j blocks, a tree of depth 2


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={"KEOMLIR_NUM_THREADS": "1"}) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def data():
    """Integer coordinates: squared distances are exact in float32, with many ties."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, (100, 2)).astype(np.float32)
    y = rng.integers(0, 4, (123, 2)).astype(np.float32)
    b = rng.standard_normal((123, 3)).astype(np.float32)
    return x, y, b


def dense(reduction_op, axis, x, y, b, k):
    """The reduction computed densely in float64: rows of the output, reduced axis 1."""
    x, y, b = (np.asarray(a, np.float64) for a in (x, y, b))
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # (M, N)
    if axis == 0:
        d = d.T

    def weighted(w):  # sum over the reduced index of w * b (b is j-indexed: on axis 0, the output's row)
        return w @ b if axis == 1 else w.sum(1, keepdims=True) * b

    if reduction_op == "Sum":  # F = Exp(-D) * b
        return [weighted(np.exp(-d))]
    if reduction_op in ("LogSumExp", "WeightedLogSumExp", "SumSoftMaxWeight"):  # F = -D (G = b or Exp(b))
        m = (-d).max(1, keepdims=True)
        e = np.exp(-d - m)
        if reduction_op == "LogSumExp":
            return [m + np.log(e.sum(1, keepdims=True))]
        if reduction_op == "WeightedLogSumExp":
            b = np.exp(b)
            return [m + np.log(weighted(e))]
        return [weighted(e) / e.sum(1, keepdims=True)]
    order = np.argsort(d if reduction_op.startswith(("Min", "ArgMin", "KMin", "ArgKMin")) else -d,
                       axis=1, kind="stable")  # ties: the lower index first
    top = order[:, :k or 1]
    vals = np.take_along_axis(d, top, axis=1)
    return {"Min": [vals], "Max": [vals], "ArgMin": [top], "ArgMax": [top], "Min_ArgMin": [vals, top],
            "Max_ArgMax": [vals, top], "KMin": [vals], "ArgKMin": [top], "KMin_ArgKMin": [vals, top]}[reduction_op]


CASES = {  # reduction_op (or WeightedLogSumExp: LogSumExp with formula2): (formula, formula2, K)
    "Sum": ("Exp(-SqDist(x,y)) * b", None, None),
    "LogSumExp": ("-SqDist(x,y)", None, None),
    "WeightedLogSumExp": ("-SqDist(x,y)", "Exp(b)", None),
    "SumSoftMaxWeight": ("-SqDist(x,y)", "b", None),
    "Min": ("SqDist(x,y)", None, None),
    "Max": ("SqDist(x,y)", None, None),
    "ArgMin": ("SqDist(x,y)", None, None),
    "ArgMax": ("SqDist(x,y)", None, None),
    "Min_ArgMin": ("SqDist(x,y)", None, None),
    "Max_ArgMax": ("SqDist(x,y)", None, None),
    "KMin": ("SqDist(x,y)", None, 5),
    "ArgKMin": ("SqDist(x,y)", None, 5),
    "KMin_ArgKMin": ("SqDist(x,y)", None, 5),
}


def as_list(r):
    return list(r) if isinstance(r, tuple) else [r]


@pytest.mark.parametrize("chains", [1, 2, 4])  # one chain of j blocks per row block ... every block its own
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("reduction_op", list(CASES))
def test_every_reduction_both_axes(client, data, reduction_op, axis, chains):
    formula, formula2, k = CASES[reduction_op]
    op = "LogSumExp" if reduction_op == "WeightedLogSumExp" else reduction_op
    x, y, b = data
    xd, yd = da.from_array(x, chunks=(CHUNKS_I, 2)), da.from_array(y, chunks=(CHUNKS_J, 2))
    bd = da.from_array(b, chunks=(CHUNKS_J[::-1], 3))  # chunked unlike y: rechunked to y's rows
    g = kd.Genred(formula, ALIASES, op, axis, opt_arg=k, formula2=formula2)
    lazy = as_list(g(xd, yd, bd, split_every=2, chains=chains))
    out_rows = CHUNKS_I if axis == 1 else CHUNKS_J
    assert all(r.chunks[0] == out_rows for r in lazy)  # chunked like the output index's rows
    got = client.compute(lazy, sync=True)
    one_machine = as_list(kn.Genred(formula, ALIASES, op, axis, opt_arg=k, formula2=formula2)(x, y, b))
    oracle = dense(reduction_op, axis, x, y, b, k)
    assert len(got) == len(one_machine) == len(oracle)
    for a, o, ref in zip(got, one_machine, oracle):
        assert a.shape == o.shape and a.dtype == o.dtype
        if a.dtype == np.int64 or reduction_op.startswith(("Min", "Max", "KMin")):
            np.testing.assert_array_equal(a, o)  # ties and order exactly as on one machine
            np.testing.assert_array_equal(a, ref.reshape(a.shape))  # indices global
        else:
            assert_close(a, o, "float32", rtol=1e-5, atol=1e-5)
            assert_close(a, ref, "float32")


@pytest.mark.parametrize("chains", [1, 2])
@pytest.mark.parametrize("axis", [1, 0])
def test_wide_right_hand_side_in_column_blocks(client, axis, chains):
    """K @ B with B of 300 columns (the kernel runs per block of b's columns, b row-major):
    every task's states hold one state per block, continued, merged and finalized."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((100, 3)).astype(np.float32), rng.standard_normal((123, 3)).astype(np.float32)
    b = rng.standard_normal((123, 300)).astype(np.float32)
    aliases = ["x = Vi(3)", "y = Vj(3)", "b = Vj(300)"] if axis == 1 else ["x = Vj(3)", "y = Vi(3)", "b = Vi(300)"]
    g = kd.Genred("Exp(-SqDist(x,y)) * b", aliases, "Sum", axis)
    xd, yd = da.from_array(x, chunks=(CHUNKS_I, 3)), da.from_array(y, chunks=(CHUNKS_J, 3))
    got = client.compute(g(xd, yd, da.from_array(b, chunks=(CHUNKS_J, 300)), split_every=2, chains=chains),
                         sync=True)
    K = np.exp(-((x.astype(np.float64)[:, None] - y.astype(np.float64)[None]) ** 2).sum(-1))
    assert_close(got, K @ b.astype(np.float64), "float32")


@pytest.mark.parametrize("reduction_op, k", [("ArgKMin", 7), ("Sum", None), ("LogSumExp", None), ("Max_ArgMax", None)])
def test_states_continued_over_j_blocks_of_wide_variables(reduction_op, k):
    """A worker's chain: states of the first j block continued block by block
    (`resume`, cache-blocked for a wide contraction), merged with another chain's and
    finalized, against keomlir.numpy and a dense float64 oracle."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((45, 64)).astype(np.float32)
    y = rng.standard_normal((700, 64)).astype(np.float32)
    b = rng.standard_normal((700, 20)).astype(np.float32)
    aliases = ["x = Vi(64)", "y = Vj(64)", "b = Vj(20)"]
    formula = {"Sum": "Exp(-SqDist(x,y) / 64) * b", "LogSumExp": "-SqDist(x,y) / 64"}.get(reduction_op, "SqDist(x,y)")
    g = kn.Genred(formula, aliases if reduction_op == "Sum" else aliases[:2], reduction_op, 1, opt_arg=k)
    args = (x, y, b) if reduction_op == "Sum" else (x, y)
    engine = Engine(spec_of(g.reduction, "float32"))
    cuts = [100, 331, 500]
    state = engine.partial([a if p == 0 else a[:100] for p, a in enumerate(args)], 0, 100)
    for j0, j1 in zip(cuts[:-1], cuts[1:]):
        before = state.copy()
        state = engine.partial([a if p == 0 else a[j0:j1] for p, a in enumerate(args)], j0, j1, state)
        np.testing.assert_array_equal(before, engine.merge([before]))  # the input state is left as it was
    other = engine.partial([a if p == 0 else a[500:] for p, a in enumerate(args)], 500, 700)
    got = as_list(engine.finish([[state, other]]))
    ref = as_list(g(*args))
    d = ((x[:, None, :].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
    for a, o in zip(got, ref):
        if a.dtype == np.int64 or reduction_op == "Max_ArgMax":
            np.testing.assert_array_equal(a, o)
    if reduction_op == "ArgKMin":
        np.testing.assert_array_equal(got[0], np.argsort(d, axis=1, kind="stable")[:, :k])
    elif reduction_op == "Max_ArgMax":
        np.testing.assert_array_equal(got[1][:, 0], d.argmax(1))
    elif reduction_op == "Sum":
        assert_close(got[0], np.exp(-d / 64) @ b.astype(np.float64), "float32")
    else:
        m = (-d / 64).max(1, keepdims=True)
        assert_close(got[0], m + np.log(np.exp(-d / 64 - m).sum(1, keepdims=True)), "float32")


@pytest.mark.parametrize("reduction_op", ["Sum", "KMin_ArgKMin", "LogSumExp"])
def test_row_blocks_cut_into_pieces(client, data, reduction_op, monkeypatch):
    """Row blocks cut into pieces of rows (tasks enough for every worker), each piece's
    chains merged, the pieces finalized together: chunks and results unchanged."""
    monkeypatch.setattr(genred, "MIN_PIECE_ROWS", 4)
    formula, formula2, k = CASES[reduction_op]
    x, y, b = data
    g = kd.Genred(formula, ALIASES, reduction_op, 1, opt_arg=k, formula2=formula2)
    lazy = as_list(g(da.from_array(x, chunks=(CHUNKS_I, 2)), da.from_array(y, chunks=(CHUNKS_J, 2)),
                     da.from_array(b, chunks=(CHUNKS_J, 3)), chains=2))
    keys = [key for key in dict(lazy[0].__dask_graph__()) if "partial" in str(key)]
    assert max(key[2] for key in keys) >= 1  # pieces were made
    assert all(r.chunks[0] == CHUNKS_I for r in lazy)
    got = client.compute(lazy, sync=True)
    for a, o in zip(got, as_list(kn.Genred(formula, ALIASES, reduction_op, 1, opt_arg=k, formula2=formula2)(x, y, b))):
        if a.dtype == np.int64 or reduction_op.startswith("KMin"):
            np.testing.assert_array_equal(a, o)
        else:
            assert_close(a, o, "float32", rtol=1e-5, atol=1e-5)


def test_ties_resolved_to_the_lowest_global_index(client):
    """Every j is equally far: each row's ArgMin is 0 and its K-min list 0..K-1, with one
    chunk per j and a tree that merges the later blocks first."""
    x = np.zeros((9, 1), np.float32)
    y = np.ones((11, 1), np.float32)
    xd, yd = da.from_array(x, chunks=4), da.from_array(y, chunks=1)
    arg = kd.Genred("SqDist(x,y)", ["x = Vi(1)", "y = Vj(1)"], "ArgMin", 1)(xd, yd, split_every=3)
    knn = kd.Genred("SqDist(x,y)", ["x = Vi(1)", "y = Vj(1)"], "ArgKMin", 1, opt_arg=4)(xd, yd, split_every=2)
    a, kk = client.compute([arg, knn], sync=True)
    np.testing.assert_array_equal(a, np.zeros((9, 1), np.int64))
    np.testing.assert_array_equal(kk, np.tile(np.arange(4), (9, 1)))


def test_parameters_numpy_mix_float64(client):
    """Parameters as NumPy or dask arrays, NumPy i/j arrays beside dask ones, float64,
    one single-row chunk among the j blocks, and a reduction with no i variable."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((60, 3)), rng.standard_normal((71, 3))
    b, s = rng.standard_normal((71, 1)), np.array([0.7])
    aliases = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "s = Pm(1)"]
    g = kd.Genred("Exp(-s * SqDist(x,y)) * b", aliases, "Sum", 1)
    yd = da.from_array(y, chunks=((40, 1, 30), 3))
    ref = kn.Genred("Exp(-s * SqDist(x,y)) * b", aliases, "Sum", 1)(x, y, b, s)
    oracle = np.exp(-0.7 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    for args in [(da.from_array(x, chunks=17), yd, b, s), (x, yd, da.from_array(b, chunks=9), da.from_array(s))]:
        out = g(*args)
        assert out.dtype == np.float64
        got = client.compute(out, sync=True)
        assert_close(got, ref, "float64")
        assert_close(got, oracle, "float64")
    only_j = kd.Genred("y * 2", ["y = Vj(3)"], "Sum", 1)(yd)  # no i variable: one output row
    np.testing.assert_allclose(client.compute(only_j, sync=True), 2 * y.sum(0, keepdims=True), rtol=1e-12)


def _exploding():
    raise RuntimeError("a task ran")


def test_errors_before_any_task_runs(client):
    """Bad calls raise keomlir.numpy's own errors from shapes and dtypes alone: an
    argument whose computation would fail is never computed (and a good call is lazy)."""
    boom = da.from_delayed(dask.delayed(_exploding)(), shape=(10, 2), dtype=np.float32)
    ok_y = da.zeros((12, 2), dtype=np.float32, chunks=5)
    g = kd.Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "ArgKMin", 1, opt_arg=3)
    ng = kn.Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "ArgKMin", 1, opt_arg=3)
    bad_calls = [
        (boom, da.zeros((12, 3), dtype=np.float32)),  # wrong dimension
        (boom, ok_y.astype(np.float64)),  # mixed dtypes
        (boom,),  # missing argument
        (boom, ok_y[:2]),  # K larger than N
    ]
    for args in bad_calls:
        with pytest.raises((ValueError, TypeError)) as dask_error:
            g(*args)
        with pytest.raises(type(dask_error.value)) as numpy_error:
            ng(*[np.zeros(a.shape, a.dtype) for a in args])
        assert str(dask_error.value) == str(numpy_error.value)
    with pytest.raises(TypeError, match=r"argument 1 \('y'\): expected a dask array or a NumPy array, got list"):
        g(boom, [[0.0, 1.0]])
    unknown = ok_y[ok_y[:, 0] > 0]
    with pytest.raises(ValueError, match=r"argument 1 \('y'\): a dask array of unknown chunk sizes"):
        g(boom, unknown)
    with pytest.raises(ValueError, match="backend"):
        g(boom, ok_y, backend="GPU")
    with pytest.raises(ValueError, match="split_every"):
        g(boom, ok_y, split_every=1)
    lazy = g(boom, ok_y)  # a valid call builds a graph and runs nothing
    with pytest.raises(RuntimeError, match="a task ran"):
        client.compute(lazy, sync=True)


def test_workers_refuse_a_program_other_than_the_clients():
    """Tasks carry formula text and a digest of the client's optimized program: a worker
    whose keomlir compiles the text to another program raises instead of computing."""
    from keomlir.dask.partials import spec_of

    g = kd.Genred("SqDist(x,y)", ["x = Vi(2)", "y = Vj(2)"], "ArgMin", 1)
    spec = spec_of(g.reduction, "float32")
    assert spec.reduction().program.text() == g.reduction.program.text()
    other = dataclasses.replace(spec, digest="0" * 16)
    with pytest.raises(RuntimeError, match="same keomlir"):
        other.reduction()


@pytest.mark.slow  # a worker killed and restarted by its nanny: run by .ci/run
def test_worker_killed_mid_run(client):
    """A worker process killed while it holds partial states: Dask recomputes its tasks and
    the answer is bit for bit the undisturbed one (the merge order is fixed by the graph)."""
    client.wait_for_workers(2)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40000, 3)).astype(np.float32)
    xd = client.persist(da.from_array(x, chunks=2000))
    g = kd.Genred("Exp(-SqDist(x,y)) * x", ["x = Vi(3)", "y = Vj(3)"], "Sum", 1)
    undisturbed = client.compute(g(xd, xd, split_every=4), sync=True)
    future = client.compute(g(xd, xd, split_every=4))
    pids = client.run(os.getpid)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for addr, keys in client.has_what().items():
            if any("-partial" in str(key) for key in keys):
                victim = addr
                break
        time.sleep(0.01)
    assert victim is not None and not future.done()  # killed mid-run
    os.kill(pids[victim], signal.SIGKILL)
    got = future.result(timeout=120)
    np.testing.assert_array_equal(got, undisturbed)
    assert_close(got, kn.Genred("Exp(-SqDist(x,y)) * x", ["x = Vi(3)", "y = Vj(3)"], "Sum", 1)(x, x), "float32")
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


@pytest.mark.slow  # 480 MB streamed through a cluster of its own: run by .ci/run
def test_input_larger_than_a_worker_memory_limit():
    """Out of core: 480 MB of points (40M rows) made on the workers and reduced over (axis=0) by two
    workers of 400 MiB each; chunks stream through, the output is small."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit="400MiB") as cluster, distributed.Client(cluster) as c:
        x = da.random.default_rng(5).random((40_000_000, 3), dtype=np.float32, chunks=(1_000_000, 3))
        assert x.nbytes > 400 * 2**20
        y = np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3)
        g = kd.Genred("Exp(-SqDist(x,y))", ["x = Vi(3)", "y = Vj(3)"], "Sum", 0)
        kmin = kd.Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "Min_ArgMin", 0)
        total, (dmin, amin) = c.compute([g(x, y), kmin(x, y)], sync=True)
        # checked against NumPy on a reduction computed chunk by chunk on the workers
        ref = c.compute(da.map_blocks(lambda a: np.exp(-((a[:, None] - y[None]) ** 2).sum(-1).astype(np.float64))
                                      .sum(0, keepdims=True), x, chunks=(1, 4), dtype=np.float64).sum(0), sync=True)
        assert_close(total[:, 0], ref, "float32", rtol=1e-5)
        picked = c.compute(x[amin[:, 0]], sync=True)
        assert_close(((picked - y) ** 2).sum(1), dmin[:, 0], "float32")
        assert (amin >= 0).all() and (amin < 40_000_000).all()



def test_lazytensor_on_dask_arrays(client):
    """LazyTensor built on dask arrays reduces on the cluster: dask arrays out, chunked like
    the output's rows, equal to the NumPy LazyTensor and to dense NumPy."""
    rng = np.random.default_rng(4)
    x, y, b = rng.standard_normal((90, 3)), rng.standard_normal((77, 3)), rng.standard_normal((77, 2))
    xd, yd, bd = (da.from_array(x, chunks=((40, 7, 43), 3)), da.from_array(y, chunks=20),
                  da.from_array(b, chunks=33))
    K = (-((kd.Vi(xd) - kd.Vj(yd)) ** 2).sum(-1)).exp()
    kb = K @ bd
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    nearest = ((kd.LazyTensor(xd[:, None, :]) - kd.LazyTensor(yd[None, :, :])) ** 2).sum(-1).argKmin(3, dim=0)
    assert isinstance(kb, da.Array) and kb.chunks[0] == (40, 7, 43) and nearest.chunks[0] == yd.chunks[0]
    kb, nearest = client.compute([kb, nearest], sync=True)
    assert_close(kb, (-((kn.Vi(x) - kn.Vj(y)) ** 2).sum(-1)).exp() @ b, "float64")
    assert_close(kb, np.exp(-d2) @ b, "float64")
    np.testing.assert_array_equal(nearest, np.argsort(d2.T, axis=1, kind="stable")[:, :3])


def test_kernel_solve_with_distributed_matvecs(client):
    """KernelSolve and LazyTensor.solve on dask arrays: conjugate gradient whose products
    run on the cluster, against keomlir.numpy's KernelSolve and a dense solve."""
    rng = np.random.default_rng(9)
    x, b = rng.standard_normal((120, 2)), rng.standard_normal((120, 2))
    xd, bd = da.from_array(x, chunks=((50, 31, 39), 2)), da.from_array(b, chunks=45)
    aliases = ["x = Vi(2)", "y = Vj(2)", "a = Vj(1)"]
    solver = kd.KernelSolve("Exp(-SqDist(x,y)) * a", aliases, "a", axis=1)
    dense = np.linalg.solve(5 * np.eye(120) + np.exp(-((x[:, None] - x[None]) ** 2).sum(-1)), b)
    a = solver(xd, xd, bd[:, :1], alpha=5.0, eps=1e-8)
    assert isinstance(a, da.Array) and a.chunks[0] == (45, 45, 30)
    one_machine = kn.KernelSolve("Exp(-SqDist(x,y)) * a", aliases, "a", axis=1)(x, x, b[:, :1], alpha=5.0, eps=1e-8)
    assert_close(client.compute(a, sync=True), one_machine, "float64", rtol=1e-6, atol=1e-6)
    assert_close(client.compute(a, sync=True), dense[:, :1], "float64", rtol=1e-6, atol=1e-6)
    K = (-((kd.Vi(xd) - kd.Vj(xd)) ** 2).sum(-1)).exp()
    both = K.solve(bd, alpha=5.0, eps=1e-8)  # two right-hand sides, each its own steps
    assert_close(client.compute(both, sync=True), dense, "float64", rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        solver(xd, xd[:100], bd[:100, :1])


# ---- scheduler and workers as separate hosts: one network namespace each ---------------------
SUBNET = "198.18.251"  # RFC 2544's benchmarking range: private to this machine's bridge, never routed
IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args):
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace_hosts():
    """Three namespaces (scheduler, worker a, worker b), each with one end of a veth pair
    whose other end is on a bridge in this namespace: 4 hosts on a private /24.  Yields
    (namespace names, scheduler address, worker addresses); skips when namespaces cannot be made."""
    tag = f"kd{os.getpid() % 100000}"
    bridge, names = f"{tag}br", [f"{tag}s", f"{tag}a", f"{tag}b"]
    made = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"network namespaces unavailable here ({e})")
    try:
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for n, name in enumerate(names):
            _ip("netns", "add", name)
            made.append(name)
            _ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}n")
            _ip("link", "set", f"{name}h", "master", bridge)
            _ip("link", "set", f"{name}h", "up")
            _ip("link", "set", f"{name}n", "netns", name)
            _ip("-n", name, "addr", "add", f"{SUBNET}.{10 + n}/24", "dev", f"{name}n")
            _ip("-n", name, "link", "set", f"{name}n", "up")
            _ip("-n", name, "link", "set", "lo", "up")
    except (OSError, subprocess.SubprocessError) as e:
        for name in made:
            subprocess.run([IP, "netns", "del", name], capture_output=True)
        subprocess.run([IP, "link", "del", bridge], capture_output=True)
        pytest.skip(f"network namespaces unavailable here ({e})")
    try:
        yield names, f"{SUBNET}.10", [f"{SUBNET}.11", f"{SUBNET}.12"]
    finally:
        for name in made:  # deleting a namespace deletes its veth pair
            subprocess.run([IP, "netns", "del", name], capture_output=True)
        subprocess.run([IP, "link", "del", bridge], capture_output=True)


@pytest.mark.slow  # three dask processes in network namespaces: run by .ci/run
def test_scheduler_and_workers_on_separate_hosts(namespace_hosts):
    """`dask scheduler` and two `dask worker`s in their own network namespaces, reached
    over veth links: the same answers as keomlir.numpy, with work done on both hosts."""
    names, scheduler, workers = namespace_hosts
    dask_cli = os.path.join(os.path.dirname(sys.executable), "dask")
    env = dict(os.environ, KEOMLIR_NUM_THREADS="1")
    commands = [[IP, "netns", "exec", names[0], dask_cli, "scheduler", "--host", scheduler, "--port", "8786",
                 "--no-dashboard"]]
    commands += [[IP, "netns", "exec", name, dask_cli, "worker", f"tcp://{scheduler}:8786", "--host", host,
                  "--nthreads", "1", "--no-dashboard", "--name", host] for name, host in zip(names[1:], workers)]
    procs = []
    try:
        for command in commands:
            procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        with distributed.Client(f"tcp://{scheduler}:8786", timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
            assert sorted(w.split("//")[1].split(":")[0] for w in c.scheduler_info()["workers"]) == workers
            rng = np.random.default_rng(5)
            x, y = rng.standard_normal((300, 3)).astype(np.float32), rng.standard_normal((410, 3)).astype(np.float32)
            xd, yd = c.persist([da.from_array(x, chunks=70), da.from_array(y, chunks=90)])
            knn = kd.Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "KMin_ArgKMin", 0, opt_arg=4)
            gauss = kd.Genred("Exp(-SqDist(x,y))", ["x = Vi(3)", "y = Vj(3)"], "Sum", 1)
            with distributed.get_task_stream(c) as stream:
                (vals, idx), total = c.compute([knn(xd, yd, split_every=2), gauss(xd, yd)], sync=True)
            assert len({task["worker"] for task in stream.data}) == 2
        ref_vals, ref_idx = kn.Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "KMin_ArgKMin", 0, opt_arg=4)(x, y)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(vals, ref_vals)
        assert_close(total, np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)).sum(1, keepdims=True), "float32")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
