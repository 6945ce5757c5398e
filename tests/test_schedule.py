"""Targets and schedules: the host's descriptor, named targets, $KEOMLIR_TARGET."""

import numpy as np
import pytest

from keomlir.backends import cpu
from keomlir.backends.llvm import renderer, toolchain
from keomlir.numpy import Genred
from keomlir.schedule import NAMED, names, target
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
        toolchain.optimize(renderer.render(cpu.schedule(g.program), "float32")))
    assert "ymm" in asm and "zmm" not in asm
    x, y, b = (rng.normal(size=s).astype(np.float32) for s in ((200, 3), (300, 3), (300, 1)))
    assert_close(g(x, y, b), _gauss_oracle(x, y, b), "float32")
    assert g.reduction.kernel("float32").stats["key"].splitlines()[1].startswith("target x86-64-v3")
