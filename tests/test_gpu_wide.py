"""Wide formulas on the GPU path (nodes and Sum states above WIDE_THRESHOLD as loops over
components, j tiles of fewer rows than threads), without a GPU:

- the PTX is assembled by ptxas for sm_80 and sm_90 (skipped without ptxas), with no spills;
- its size does not grow with the width (the loops are not unrolled);
- the same kernels built for the host run in the simulator against dense float64 NumPy.
"""

import concurrent.futures
import re

import numpy as np
import pytest

from keomlir.backends import cuda
from keomlir.backends.cuda.plan import plan
from keomlir.backends.llvm import nvptx
from keomlir.compile import CompiledReduction as Reduction
from keomlir.schedule import gpu, schedule
from keomlir.schedule.choose import WIDE_BLOCK

from conftest import assert_close
from test_gpu import ARCH, DTYPES, assemble, needs_ptxas

M, N = 13, 29
WIDTHS = [17, 64, 300]
GAUSS = "Exp(-SqDist(x,y)) * b"


def _aliases(axis, **dims):
    """name=(cat, dim) with cat 'i' (kept), 'j' (reduced) or 'p', declared for `axis`."""
    kind = {"i": "Vi" if axis == 1 else "Vj", "j": "Vj" if axis == 1 else "Vi", "p": "Pm"}
    return [f"{name} = {kind[cat]}({d})" for name, (cat, d) in dims.items()]


# (formula, aliases as name -> (cat, dim) for a width w, dense float64 oracle(x, y, b) -> (M, out dim))
def _gauss_oracle(x, y, b):
    return np.exp(-_d2(x, y)) @ b


def _d2(x, y):
    return ((x[:, None, :] - y[None]) ** 2).sum(-1)


CASES = {
    # the Sum state is wide: K @ B with B of w columns
    "wide_rhs": (GAUSS, lambda w: {"x": ("i", 3), "y": ("j", 3), "b": ("j", w)}, _gauss_oracle),
    # wide contractions of an i and a j variable, a narrow state
    "sqdist_scalprod": ("Exp(-SqDist(x,y)) * b + Exp((x|y)) * b",
                        lambda w: {"x": ("i", w), "y": ("j", w), "b": ("j", 2)},
                        lambda x, y, b: np.exp(-_d2(x, y)) @ b + np.exp(x @ y.T) @ b),
    # everything wide: the Gaussian kernel of the brief's measurements
    "all_wide": (GAUSS, lambda w: {"x": ("i", w), "y": ("j", w), "b": ("j", w)}, _gauss_oracle),
    # the gradient torch builds for x: a wide Sum state of element-wise wide terms
    "grad_x": ("Grad(Exp(-SqDist(x,y)) * b, x, e)",
               lambda w: {"x": ("i", w), "y": ("j", w), "b": ("j", 1), "e": ("i", 1)},
               lambda x, y, b, e: -2 * e * ((np.exp(-_d2(x, y)) * b[:, 0])[:, :, None]
                                            * (x[:, None] - y[None])).sum(1)),
}


def _reduction(case, w, axis=1):
    formula, dims, _ = CASES[case]
    return Reduction(formula, _aliases(axis, **dims(w)), "Sum", axis)


def _data(case, w, rng, dtype, m=M, n=N):
    """Points scaled so squared distances and scalar products stay O(1) whatever w."""
    _, dims, _ = CASES[case]
    rows = {"i": m, "j": n}
    return [(rng.normal(size=(rows[cat], d)) / (np.sqrt(d) if d > 2 else 1)).astype(dtype)
            for cat, d in dims(w).values()]


def _oracle(case, args):
    return CASES[case][2](*[a.astype(np.float64) for a in args])


# ---- ptxas ---------------------------------------------------------------------------------


def _ptxas_reports(program, tmp_path, label, arch):
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for dtype in DTYPES:
            ptx = nvptx.render_ptx(program, dtype, arch)
            jobs.append(pool.submit(assemble, ptx, arch, tmp_path, f"{label}-{dtype}"))
        return [j.result() for j in jobs]


def _spills(report):
    """{kernel: spilled bytes (stores + loads)} from ptxas -v."""
    found = re.findall(r"entry function '(\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads", report, re.S)
    return {name: int(st) + int(ld) for name, st, ld in found}


def _check_spills(report):
    """No spill in the dense kernels; the block-sparse kernel may spill a few words: ptxas 13
    does so for some narrow formulas already (the Gaussian at D = 3, float32 sm_90), choosing
    32 or 48 registers over no spill; so may the split-j partial kernel, at 128 registers with
    its state in a 7 KB stack frame (the D = 300 gradient: 16 bytes, since its -2 e is a row
    value, one register more)."""
    spills = _spills(report)
    assert sorted(spills) == sorted(nvptx.KERNELS), report
    few = ("keomlir_ranges", "keomlir_partial")
    assert all(n == 0 for k, n in spills.items() if k not in few) and all(spills[k] <= 64 for k in few), report


@needs_ptxas
@ARCH
@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_ptxas_assembles_wide_formulas(case, w, arch, tmp_path):
    for report in _ptxas_reports(_reduction(case, w).program, tmp_path, f"{case}-{w}", arch):
        _check_spills(report)


@needs_ptxas
@ARCH
def test_ptxas_gaussian_d3(arch, tmp_path):
    r = Reduction(GAUSS, ["x = Vi(3)", "y = Vj(3)", "b = Vj(3)"], "Sum", 1)
    for report in _ptxas_reports(r.program, tmp_path, "gauss3", arch):
        _check_spills(report)


# ---- the code does not grow with the width --------------------------------------------------


def test_ptx_size_does_not_grow_with_the_width():
    sizes = [len(nvptx.render_ptx(_reduction("all_wide", w).program, "float32").splitlines()) for w in (300, 4000)]
    assert abs(sizes[1] - sizes[0]) < 0.05 * sizes[0], sizes


def test_wide_j_rows_share_smaller_tiles():
    """Tiles of as many j rows as fit 48 KiB (fewer than threads), their size in the header,
    and 2-D plans in whole tiles."""
    r = _reduction("all_wide", 300)
    config = schedule(r.program, gpu("sm_80"), dtype="float32")
    assert (config.block, config.stage, config.tile) == (WIDE_BLOCK, True, 48 * 1024 // (600 * 4))
    info = nvptx.KernelInfo.from_header(nvptx.render_ptx(r.program, "float32").split("\n", 1)[0])
    assert (info.block, info.tile, info.shared_bytes) == (config.block, config.tile, config.tile * 600 * 4)
    assert info.state_slots == 3 * 300  # total, compensation and block sum of 300 components
    steps, _ = plan(100, 10**7, 3, 1, info, sm_count=132)
    chunk = steps[0].params[2]
    assert steps[0].kernel == "keomlir_partial" and chunk % info.tile == 0


# ---- the simulator against dense float64 NumPy --------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_simulated_wide_formulas_match_numpy(case, w, dtype, rng):
    r = _reduction(case, w)
    args = _data(case, w, rng, dtype)
    want = _oracle(case, args)
    for kw in [dict(scheme="1d"), dict(scheme="2d", chunk=7, fan=2)]:
        assert_close(cuda.simulate(r.launch(args), args, block=8, **kw)[0], want, dtype)


@pytest.mark.parametrize("axis", [0, 1])
def test_simulated_tiles_smaller_than_the_block_and_no_staging(axis, rng):
    """Tiles of 3 j rows for 8 threads (and tiles no chunk divides), and the unstaged path."""
    r = _reduction("all_wide", 64, axis)  # the same sum on both axes: x kept, y and b reduced
    args = _data("all_wide", 64, rng, "float64")
    want, launch = _oracle("all_wide", args), r.launch(args)
    for kw in [dict(tile=3), dict(tile=3, scheme="2d", chunk=7, fan=2), dict(stage=False, scheme="2d", chunk=5)]:
        assert_close(cuda.simulate(launch, args, block=8, **kw)[0], want, "float64")


def test_simulated_wide_parameters_and_vector_reductions(rng):
    w = 40
    f = "Exp(-Norm2(x - y)) * Max(x * y) + Sum(Square(p * x - y)) * b"
    r = Reduction(f, [f"x = Vi({w})", f"y = Vj({w})", f"p = Pm({w})", f"b = Vj({w})"], "Sum", 1)
    x, y = rng.normal(size=(M, w)) / 6, rng.normal(size=(N, w)) / 6
    p, b = rng.uniform(0.5, 1.5, size=w), rng.normal(size=(N, w))
    diff = x[:, None] - y[None]
    F1 = np.exp(-np.sqrt((diff ** 2).sum(-1))) * (x[:, None] * y[None]).max(-1)
    F2 = (((p * x)[:, None] - y[None]) ** 2).sum(-1)
    want = F1.sum(1)[:, None] + F2 @ b
    assert_close(cuda.simulate(r.launch([x, y, p, b]), [x, y, p, b], block=8, scheme="1d")[0], want, "float64")


def test_simulated_wide_sum_schemes_ranges_and_float16(rng):
    from test_ranges import ranges_from_keep

    args = _data("wide_rhs", 300, rng, "float32")
    want = _oracle("wide_rhs", args)
    for scheme in ("direct_sum", "kahan_scheme", "block_sum"):
        r = Reduction(GAUSS, _aliases(1, x=("i", 3), y=("j", 3), b=("j", 300)), "Sum", 1, sum_scheme=scheme)
        assert_close(cuda.simulate(r.launch(args), args, block=8, scheme="2d", chunk=9, fan=2)[0], want, "float32")
    ranges = ranges_from_keep([[0, 5], [5, M]], [[0, 11], [11, N]], [[1, 0], [0, 1]])
    x, y, b = (a.astype(np.float64) for a in args)
    keep = np.zeros((M, N), bool)
    keep[:5, :11] = keep[5:, 11:] = True
    masked = np.where(keep, np.exp(-_d2(x, y)), 0.0) @ b
    assert_close(cuda.simulate(r.launch(args, ranges), args, block=4)[0], masked, "float32")
    half = [a.astype(np.float16) for a in args]
    got = cuda.simulate(r.launch(half), half, block=8, scheme="1d")[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), _oracle("wide_rhs", half), rtol=2e-3, atol=2e-3)


def test_simulated_wide_gradient_of_a_j_variable(rng):
    """Grad with respect to y, reduced over i (axis 0): the wide state is y's gradient."""
    w = 64
    r = Reduction("Grad(Exp(-SqDist(x,y)) * b, y, e)", [f"x = Vi({w})", f"y = Vj({w})", "b = Vj(1)", "e = Vi(1)"],
                  "Sum", 0)
    x, y = rng.normal(size=(N, w)) / 8, rng.normal(size=(M, w)) / 8
    b, e = rng.normal(size=(M, 1)), rng.normal(size=(N, 1))
    k = np.exp(-_d2(x, y)) * b[:, 0] * e  # (N, M)
    want = 2 * (k[:, :, None] * (x[:, None] - y[None])).sum(0)
    for kw in [dict(scheme="1d"), dict(scheme="2d", chunk=4, fan=2)]:
        assert_close(cuda.simulate(r.launch([x, y, b, e]), [x, y, b, e], block=8, **kw)[0], want, "float64")
