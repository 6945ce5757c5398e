"""Targets and schedules: the host's descriptor, named targets, $KEOMLIR_TARGET; the Schedule
of every target printed, overridden (results as the dense oracle's), the PTX printed as loaded;
autotuning (candidates, the tuning database, the never-slower rule, Genred(autotune=))."""

import numpy as np
import pytest

from keomlir import explain, tune
from keomlir.backends import cpu, tuned
from keomlir.backends.cuda import runner
from keomlir.backends.llvm import renderer, toolchain
from keomlir.numpy import Genred
from keomlir.schedule import FIELDS, names, parse_overrides, schedule, space, target
from keomlir.schedule import targets as target_module

from conftest import assert_close


def _gauss(dim=3):
    return Genred("Exp(-SqDist(x,y)) * b", [f"x = Vi({dim})", f"y = Vj({dim})", "b = Vj(1)"], axis=1)


def _gauss_oracle(x, y, b):
    return np.exp(-((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)) @ b.astype(np.float64)


def test_the_host_is_detected():
    host = target("host")
    assert host.kind == "cpu" and host.triple and host.cpu
    assert host.vector_bits in (128, 256, 512) and host.vector_registers in (16, 32)
    assert 0 < host.l1_bytes < host.l2_bytes and host.cores >= 1
    assert "vector_bits = " in host.text() and "l2_bytes = " in host.text()


def test_caches_are_read_from_sys(tmp_path):
    """Private L1 and L2 as they are; an L3 shared by 16 hardware threads of 8 cores, an eighth."""
    (tmp_path / "topology").mkdir()
    (tmp_path / "topology/thread_siblings_list").write_text("0,8\n")
    for k, (level, kind, size, shared) in enumerate([(1, "Data", "48K", "0,8"), (1, "Instruction", "32K", "0,8"),
                                                     (2, "Unified", "2048K", "0,8"), (3, "Unified", "32M", "0-15")]):
        d = tmp_path / f"cache/index{k}"
        d.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{text}\n")
    assert target_module._caches(tmp_path) == (48 << 10, 2 << 20, 4 << 20)
    assert target_module._caches(tmp_path / "absent") == target_module.FALLBACK_CACHES


def test_an_aarch64_host_is_detected(monkeypatch):
    """No AVX flags to probe: NEON's 128 bits and 32 registers (SVE's length is set at run time)."""
    monkeypatch.setattr(target_module.llvm, "get_process_triple", lambda: "aarch64-unknown-linux-gnu")
    monkeypatch.setattr(target_module.llvm, "get_host_cpu_name", lambda: "neoverse-v1")
    monkeypatch.setattr(target_module.llvm, "get_host_cpu_features",
                        lambda: target_module.llvm.FeatureMap({"neon": True, "sve": True}))
    host = target_module.detect_host.__wrapped__()
    assert (host.triple, host.vector_bits, host.vector_registers, host.fma_units) == (
        "aarch64-unknown-linux-gnu", 128, 32, 4)
    assert host.features == "+neon,+sve"


def test_named_targets():
    assert {"host", "x86-64-v3", "skylake-avx512", "sapphirerapids", "znver4", "neoverse-v1", "sm_80",
            "sm_90"} <= set(names())
    assert target("x86-64-v3").vector_bits == 256 and target("x86-64-v3").vector_registers == 16
    assert target("neoverse-v1").triple.startswith("aarch64") and target("neoverse-v1").vector_bits == 128
    sm90 = target("sm_90")
    assert (sm90.kind, sm90.sm_arch, sm90.warp_size, sm90.shared_bytes) == ("gpu", "sm_90", 32, 48 << 10)
    assert target("sm_86").sm_arch == "sm_86"  # any architecture, sm_80's figures
    with pytest.raises(ValueError, match="valid targets: host, x86-64-v3"):
        target("pentium")


def test_keomlir_target_refuses_what_the_host_cannot_run(monkeypatch):
    monkeypatch.setenv("KEOMLIR_TARGET", "neoverse-v1" if target("host").triple.startswith("x86") else "x86-64-v3")
    with pytest.raises(ValueError, match="KEOMLIR_TARGET=.*of its own architecture"):
        target("host")
    monkeypatch.setenv("KEOMLIR_TARGET", "no-such-cpu")
    with pytest.raises(ValueError, match="KEOMLIR_TARGET='no-such-cpu'"):
        target("host")


@pytest.mark.skipif(not target_module._host_features().get("avx2"), reason="needs an AVX2 host")
def test_keomlir_target_compiles_avx2_only_code(monkeypatch, rng):
    """KEOMLIR_TARGET=x86-64-v3: 256-bit vectors, no AVX-512 instruction, the host's caches, same results."""
    monkeypatch.setenv("KEOMLIR_TARGET", "x86-64-v3")
    host = target("host")
    assert (host.name, host.vector_bits, host.l2_bytes) == ("x86-64-v3", 256, target_module.detect_host().l2_bytes)
    g = _gauss()
    asm = toolchain.host_target_machine().emit_assembly(
        toolchain.optimize(renderer.render(g.program, "float32")))
    assert "ymm" in asm and "zmm" not in asm
    x, y, b = (rng.normal(size=s).astype(np.float32) for s in ((200, 3), (300, 3), (300, 1)))
    assert_close(g(x, y, b), _gauss_oracle(x, y, b), "float32")
    assert g.reduction.kernel("float32").stats["key"].splitlines()[1].startswith("target x86-64-v3")


# ---- the Schedule: one record, printed, steerable ---------------------------------------------

WIDE = ["x = Vi(128)", "y = Vj(128)"]


def test_every_target_prints_a_complete_schedule():
    """keomlir ir ... --target T: every field of T's kind, one `name = value` line each, and the
    schedules differ where the targets do."""
    shown = {}
    for name in ("host", "x86-64-v3", "skylake-avx512", "neoverse-v1", "sm_90"):
        ex = explain("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1000)"], target=name)
        block = ex.outputs["ir"].split("schedule:\n", 1)[1].split("\ntarget:", 1)[0]
        fields = dict(line.strip().split(" = ", 1) for line in block.splitlines())
        kind = target(name).kind
        assert list(fields) == [f for f, spec in FIELDS.items() if spec.kind in ("all", kind)]
        shown[name] = fields
    v3, skx, arm, sm90 = (shown[n] for n in ("x86-64-v3", "skylake-avx512", "neoverse-v1", "sm_90"))
    assert (v3["vector_bits"], skx["vector_bits"], arm["vector_bits"]) == ("256", "512", "128")
    assert (v3["lanes"], arm["lanes"]) == ("8", "4")
    assert (v3["contract_accumulators"], skx["contract_accumulators"]) == ("8", "16")  # of 16, 32 registers
    assert v3["column_block"] == "256" and skx["column_block"] == "512"  # b's block of j in half the L2
    assert v3["strategy"] == skx["strategy"] == "columns" and sm90["strategy"] == "threads"
    assert (sm90["block"], sm90["tile"], sm90["stage"]) == ("128", "10", "on")  # 10 j rows of 1128 floats
    gauss = {name: schedule(explain("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1)"]).program, target(name))
             for name in ("x86-64-v3", "sapphirerapids")}
    assert [gauss[n].cache_block for n in gauss] == [256 << 10, 1 << 20]  # half of a 512 KiB, a 2 MiB L2
    assert all(s.strategy == "contraction" and s.contract == ("%2",) for s in gauss.values())


def test_sizes_give_threads_and_gpu_plans():
    program = explain("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", opt_arg=3).program
    cpu8 = target("x86-64-v3")  # 8 cores
    assert (schedule(program, cpu8, (100, 100)).threads, schedule(program, cpu8, (100, 100)).thread_strategy) \
        == (1, "one")
    assert schedule(program, cpu8, (10**5, 10**5)).thread_strategy == "rows"
    assert schedule(program, cpu8, (100, 10**6)).thread_strategy == "split_j"
    sm90 = schedule(program, target("sm_90"), (100, 10**7))
    assert sm90.plan == "2d" and sm90.chunk % sm90.tile == 0
    assert schedule(program, target("sm_90"), (10**6, 10**6)).plan == "1d"
    assert "threads = per call" in schedule(program, cpu8).text()


def test_overrides_are_parsed_and_checked():
    assert parse_overrides("rows=4, cache_block=256KiB,stage=off,contract=%2+%5") == (
        ("cache_block", 256 << 10), ("contract", ("%2", "%5")), ("rows", 4), ("stage", False))
    assert parse_overrides({"chunk_bytes": "1MiB", "fast_math": True}) == (("chunk_bytes", 1 << 20),
                                                                          ("fast_math", True))
    with pytest.raises(ValueError, match="unknown field 'rowz'; settable fields: strategy, wide_threshold"):
        parse_overrides("rowz=4")
    with pytest.raises(ValueError, match="rows='x' is not valid: expected an integer"):
        parse_overrides("rows=x")
    with pytest.raises(ValueError, match="sum_block=100 is not valid: .* a multiple of 64"):
        parse_overrides({"sum_block": 100})
    with pytest.raises(ValueError, match="vector_bits=384 is not valid: expected one of 128, 256, 512"):
        parse_overrides({"vector_bits": 384})
    with pytest.raises(ValueError, match="lanes is not set but follows from the others"):
        parse_overrides({"lanes": 4})
    with pytest.raises(ValueError, match="strategy=columns is not possible .*; possible: contraction, lanes"):
        Genred("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1)"], axis=1, schedule={"strategy": "columns"})
    with pytest.raises(ValueError, match="contract=%5: not a contraction .*; those it has: %2"):
        Genred("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1)"], axis=1, schedule="contract=%5")
    with pytest.raises(ValueError, match="column_block=16 makes blocks of 16 columns, not over wide_threshold=16"):
        Genred("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(40)"], axis=1, schedule="column_block=16")
    with pytest.raises(ValueError, match="tile=100 j rows of 4512 bytes do not fit .* at most 10"):
        schedule(explain("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1000)"]).program, target("sm_90"),
                 overrides="tile=100")


# programs of every CPU strategy, and schedules of each that differ from the default in many fields at
# once (rows, blocks, vector widths, cache blocks of a few hundred j, thread splits, loop forms)
OVERRIDDEN = [
    ("Exp(-SqDist(x,y)) * b", 3, 1, "Sum", {"rows": 3, "sum_block": 64, "vector_bits": 128,
                                            "min_pairs_per_thread": 100, "split_j_below_rows": 1000}),
    ("Exp(-SqDist(x,y)) * b", 3, 1, "Sum", {"wide_threshold": 2, "cache_block": "4KiB", "chunk_rows": 8}),
    ("Exp(-SqDist(x,y)) * b", 40, 1, "Sum", {"strategy": "lanes"}),
    ("Exp(-SqDist(x,y)) * b", 40, 1, "Sum", {"rows": 5, "cache_block": "8KiB", "chunk_bytes": "1KiB",
                                             "contract_accumulators": 3}),
    ("SqDist(x,y)", 40, 0, "ArgKMin", {"strategy": "contraction"}),
    ("SqDist(x,y)", 12, 0, "ArgKMin", {}),  # (screened by default from 12 components: choose.SCREEN_FROM)
    ("SqDist(x,y)", 40, 0, "ArgKMin", {"rows": 3, "screen_trial": 1, "cache_block": "8KiB", "vector_bits": 256}),
    ("Exp(-SqDist(x,y)) * b", 3, 40, "Sum", {"column_block": 32, "column_vectors": 3, "rows": 5}),
    ("Exp(-SqDist(x,y)) * b", 3, 40, "Sum", {"strategy": "lanes"}),
]


@pytest.mark.parametrize("formula, dim, width, reduction, fields", OVERRIDDEN)
def test_overridden_schedules_give_the_dense_results(formula, dim, width, reduction, fields, rng):
    m, n = 37, 700
    x, y = rng.normal(size=(m, dim)).astype(np.float32) / 3, rng.normal(size=(n, dim)).astype(np.float32) / 3
    aliases = [f"x = Vi({dim})", f"y = Vj({dim})"] + ([f"b = Vj({width})"] if width else [])
    g = Genred(formula, aliases, reduction, axis=1, opt_arg=3 if reduction == "ArgKMin" else None, schedule=fields)
    sched = g.reduction.kernel("float32").schedule
    assert all(getattr(sched, k) == v for k, v in parse_overrides(fields) if k not in ("column_block",))
    d2 = ((x.astype(np.float64)[:, None] - y[None]) ** 2).sum(-1)
    try:
        cpu.set_num_threads(2)
        if reduction == "ArgKMin":
            got = g(x, y)
            assert_close(np.take_along_axis(d2, got, 1), np.sort(d2, 1)[:, :3], "float32")
        else:
            b = rng.normal(size=(n, width)).astype(np.float32)
            assert_close(g(x, y, b), np.exp(-d2) @ b.astype(np.float64), "float32")
    finally:
        cpu.set_num_threads(None)


def test_keomlir_schedule_and_the_torch_front_end(monkeypatch, rng):
    """$KEOMLIR_SCHEDULE steers every kernel; Genred(schedule=) of torch too, and wins."""
    torch = pytest.importorskip("torch")
    import keomlir.torch as kt

    x, y, b = (rng.normal(size=s) for s in ((30, 3), (500, 3), (500, 1)))
    monkeypatch.setenv("KEOMLIR_SCHEDULE", "rows=3,sum_block=64")
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1)
    assert_close(g(x, y, b), _gauss_oracle(x, y, b), "float64")
    assert (g.reduction.kernel("float64").schedule.rows, g.reduction.kernel("float64").schedule.sum_block) == (3, 64)
    t = kt.Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1, schedule={"rows": 2})
    out = t(*(torch.from_numpy(a) for a in (x, y, b)))
    assert_close(out.numpy(), _gauss_oracle(x, y, b), "float64")
    assert (t.reduction.kernel("float64").schedule.rows, t.reduction.kernel("float64").schedule.sum_block) == (2, 64)
    monkeypatch.setenv("KEOMLIR_SCHEDULE", "rows=many")
    with pytest.raises(ValueError, match="KEOMLIR_SCHEDULE: rows='many' is not valid"):
        g(x[:5], y, b)


class _FakeDevice:
    """What `runner.kernels` asks of a device, no GPU: the PTX it would load is recorded."""

    arch, sm_count, threads_per_sm = "sm_90", 132, 2048

    def loaded(self, key, load):
        return load()

    def load_module(self, ptx, names):
        self.ptx = ptx
        return {}


@pytest.mark.parametrize("formula, aliases, reduction, k, formula2", [
    ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", None, None),
    ("Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1000)"], "Sum", None, None),  # the CPU's columns program
    ("SqDist(x,y)", WIDE, "ArgKMin", 5, None),  # the CPU's screened K-min
    ("-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], "SumSoftMaxWeight", None, "b"),
])
def test_the_printed_ptx_is_the_ptx_the_runtime_loads(formula, aliases, reduction, k, formula2):
    ex = explain(formula, aliases, reduction, opt_arg=k, formula2=formula2, emit="ptx", target="sm_90")
    g = Genred(formula, aliases, reduction, axis=1, opt_arg=k, formula2=formula2)
    arrays = [np.zeros((4 if cat == 0 else 5, dim) if cat < 2 else (dim,), np.float32)
              for _, dim, cat in g.reduction.kernel_arguments]
    dev = _FakeDevice()
    runner.kernels(dev, g.reduction.launch(arrays))
    assert ex.outputs["ptx"] == dev.ptx and ".target sm_90" in dev.ptx
    assert f"state_slots=" in dev.ptx.split("\n", 1)[0]


# ---- autotuning: candidates from the fields, the database, the never-slower rule -------------------------

def test_candidates_come_from_the_fields_definitions():
    """Each searched field varied alone (halved and doubled, its other choices up to the target's
    vectors), in a fixed order; what the program does not allow left out."""
    gauss = _gauss().program
    v3 = target("x86-64-v3")
    found = [space.text(o) for o, _ in space.candidates(gauss, v3)]
    assert found == [space.text(o) for o, _ in space.candidates(gauss, v3)]  # (deterministic)
    assert "rows=2" in found and "rows=8" in found and "sum_block=256" in found and "sum_block=1024" in found
    assert "vector_bits=128" in found and "vector_bits=512" not in found  # (capped by the target's 256 bits)
    assert not any(f.startswith(("strategy=", "cache_block=", "column_block=")) for f in found)  # (lanes only)
    knn = explain("SqDist(x,y)", WIDE, "ArgKMin", opt_arg=5).program
    found = [space.text(o) for o, _ in space.candidates(knn, target("skylake-avx512"))]
    assert found[:2] == ["wide_threshold=8", "wide_threshold=32"]  # (the nearest values first)
    assert found[-3:] == ["strategy=contraction", "strategy=lanes", "vector_bits=128"]  # (in order of preference)
    assert "cache_block=256KiB" in found and "cache_block=1MiB" in found  # (half and twice the half of 1 MiB of L2)
    assert [space.text(o) for o, _ in space.candidates(knn, target("skylake-avx512"), fields=["rows"])] == [
        "rows=4", "rows=16"]
    with pytest.raises(ValueError, match="fields: 'rowz' not searched; searched fields on skylake-avx512: "
                                         "strategy, wide_threshold, vector_bits, rows"):
        space.candidates(knn, target("skylake-avx512"), fields=["rowz"])
    knn12 = explain("SqDist(x,y)", ["x = Vi(12)", "y = Vj(12)"], "ArgKMin", opt_arg=5).program
    assert (schedule(knn12, v3).strategy, schedule(knn12, v3).wide_threshold) == ("screened", 11)
    assert "wide_threshold=22" in [space.text(o) for o, _ in space.candidates(knn12, v3)]  # (back to lanes)
    # fields only the runtime reads (how a call is split over threads) are not in the cache key
    s1, s2 = (schedule(gauss, v3, overrides={"min_pairs_per_thread": p}) for p in (100, 10 ** 6))
    assert s1.key() == s2.key() and s1.thread_plan(1000, 1000, 8) != s2.thread_plan(1000, 1000, 8)


def _fake_timer(times, later=None, switch=None):
    """A timer that times nothing: seconds per call by candidate (`times`, default 1 ms), or
    `later`'s after `switch` samples of a candidate."""
    seen = {}

    def timer(overrides, call, calls):
        name = space.text(overrides)
        seen[name] = seen.get(name, 0) + 1
        table = later if later is not None and seen[name] > switch else times
        return table.get(name, 1e-3)

    return timer


def _tune_gauss(monkeypatch, tmp_path, timer, m=300, n=300):
    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KEOMLIR_SCHEDULE", raising=False)
    g = _gauss()
    launch = g.reduction.launch([np.empty((m, 3), np.float32), np.empty((n, 3), np.float32),
                                 np.empty((n, 1), np.float32)])
    lines = []
    return g, tune.tune(launch, budget=30, fields=["rows"], timer=timer, out=lines.append), lines


def test_tuning_keeps_a_faster_schedule_and_every_call_of_the_program_uses_it(monkeypatch, tmp_path, rng):
    """rows=8 10% faster: kept, stored, and run by another Genred of the program at sizes of the
    class (results as the dense oracle's), not at other sizes."""
    g, found, lines = _tune_gauss(monkeypatch, tmp_path, _fake_timer({"rows=8": 0.9e-3, "rows=2": 1.2e-3}))
    assert found.overrides == (("rows", 8),) and found.ratio == pytest.approx(0.9)
    assert lines[-1] == "best: rows=8 0.0009 s (0.90x the default)"
    assert any(line.startswith("  rows=2 ") and "1.20x" in line for line in lines)
    other = _gauss()  # a second Genred: the program's database entry, nothing of the first
    assert other.reduction.kernel("float32", (400, 260)).schedule.rows == 8  # (the class of 300 x 300)
    assert other.reduction.kernel("float32", (100, 300)).schedule.rows == _gauss().reduction.kernel(
        "float32").schedule.rows == 4
    x, y, b = rng.normal(size=(400, 3)).astype(np.float32), rng.normal(size=(260, 3)).astype(np.float32), \
        rng.normal(size=(260, 1)).astype(np.float32)
    assert_close(other(x, y, b), _gauss_oracle(x, y, b), "float32")
    assert tuned.entry(g.program, "float32", "float32", "block_sum", 300, 300)["overrides"] == "rows=8"


@pytest.mark.parametrize("times, later", [
    ({"rows=8": 0.99e-3}, None),  # 1% faster: within the noise
    ({"rows=8": 0.8e-3}, {"rows=8": 1.1e-3}),  # faster while racing, slower when confirmed
])
def test_a_schedule_not_confirmed_faster_than_the_default_is_not_kept(monkeypatch, tmp_path, times, later):
    g, found, lines = _tune_gauss(monkeypatch, tmp_path, _fake_timer(times, later, switch=3))
    assert found.overrides == () and lines[-1] == "best: default 0.001 s (1.00x the default)"
    assert tuned.lookup(g.program, "float32", "float32", "block_sum", 300, 300) == ()  # (stored: the default)
    assert g.reduction.kernel("float32", (300, 300)).schedule.rows == 4


def test_autotune_tunes_on_the_first_call_of_a_size_class_only(monkeypatch, tmp_path, rng):
    torch = pytest.importorskip("torch")
    import keomlir.torch as kt

    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tune, "SAMPLE_S", 1e-3)  # (short samples, few rounds: a cheap test)
    monkeypatch.setattr(tune, "CONFIRM", (3, 3))
    runs = []
    real = tune.tune
    monkeypatch.setattr(tune, "tune", lambda launch, budget: runs.append(budget) or real(launch, budget, ["rows"]))
    x, y, b = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)), rng.normal(size=(300, 1))
    g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1, autotune=2)
    assert_close(g(x, y, b), _gauss_oracle(x, y, b), "float64")
    assert_close(g(x[:290], y, b), _gauss_oracle(x[:290], y, b), "float64")  # (the same class: tuned already)
    t = kt.Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1, autotune=True)
    assert_close(t(*map(torch.from_numpy, (x, y, b))).numpy(), _gauss_oracle(x, y, b), "float64")
    assert runs == [2.0]  # (the torch Genred: the same program, class and types, so stored already)
    t(*(torch.from_numpy(a[:40]) for a in (x, y, b)))
    assert runs == [2.0, tune.BUDGET]
    assert tuned.entry(g.program, "float64", "float64", "block_sum", 40, 40) is not None


def test_tuning_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"autotune \(True, False or a budget in seconds\): expected a positive "
                                         r"number of seconds, got 'yes'"):
        _gauss_with(autotune="yes")
    with pytest.raises(ValueError, match="autotune and schedule: .* set one of the two"):
        _gauss_with(autotune=True, schedule={"rows": 2})
    launch = _gauss().reduction.launch([np.empty((5, 3), np.float32)] * 2 + [np.empty((5, 1), np.float32)])
    with pytest.raises(ValueError, match="budget: expected a positive number of seconds, got 0"):
        tune.tune(launch, budget=0)
    monkeypatch.setenv("KEOMLIR_SCHEDULE", "rows=2")
    with pytest.raises(ValueError, match=r"\$KEOMLIR_SCHEDULE is set \('rows=2'\): .* unset it"):
        tune.tune(launch)


def _gauss_with(**options):
    return Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], axis=1, **options)
