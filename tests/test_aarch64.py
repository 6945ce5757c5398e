"""64-bit ARM: the host descriptor where LLVM cannot read the CPU (qemu-user shows the emulating
machine's /proc/cpuinfo), and every kind of kernel cross-compiled from any machine to NEON code
(no execution: tests/platforms/aarch64.sh runs the suite itself on an emulated arm64 root)."""

import re

import pytest

from keomlir import explain
from keomlir.schedule import target
from keomlir.schedule import targets as target_module

GAUSS = ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"])
WIDE = ["x = Vi(32)", "y = Vj(32)"]
# every kind of kernel the CPU renderer makes: (name, formula, aliases, reduction, K, variant, strategy)
KINDS = [
    ("Sum", *GAUSS, "Sum", None, "kernel", "lanes"),
    ("LogSumExp", "-SqDist(x,y)", GAUSS[1][:2], "LogSumExp", None, "kernel", "lanes"),
    ("K-min", "SqDist(x,y)", GAUSS[1][:2], "ArgKMin", 4, "kernel", "lanes"),
    ("ArgMin", "SqDist(x,y)", GAUSS[1][:2], "ArgMin", None, "kernel", "lanes"),
    ("wide micro-kernel", "Exp(-SqDist(x,y)) * b", WIDE + ["b = Vj(1)"], "Sum", None, "kernel", "contraction"),
    ("screened K-min", "SqDist(x,y)", WIDE, "ArgKMin", 4, "kernel", "screened"),
    ("column micro-kernel", "Exp(-SqDist(x,y)) * b", GAUSS[1][:2] + ["b = Vj(64)"], "Sum", None, "kernel", "columns"),
    ("split-j", *GAUSS, "Sum", None, "split_j", "lanes"),
    ("block-sparse", *GAUSS, "Sum", None, "ranges", "lanes"),
    ("gradient", "Grad(Exp(-SqDist(x,y)) * b, x, e)", GAUSS[1] + ["e = Vi(1)"], "Sum", None, "kernel", "lanes"),
]
# NEON arithmetic on full 128-bit registers: 4 float32 or 2 float64 lanes
NEON = {"float32": re.compile(r"\b(fmla|fmls|fmul|fadd|fsub|fmax\w*|fmin\w*|fcm\w+)\s+v\d+\.4s"),
        "float64": re.compile(r"\b(fmla|fmls|fmul|fadd|fsub|fmax\w*|fmin\w*|fcm\w+)\s+v\d+\.2d")}


@pytest.mark.parametrize("name,formula,aliases,reduction,k,variant,strategy", KINDS, ids=[k[0] for k in KINDS])
def test_every_kernel_kind_cross_compiles_to_neon(name, formula, aliases, reduction, k, variant, strategy):
    """`keomlir ir ... --emit asm --target neoverse-n1` (NEON only) from any host: AArch64 assembly with
    4-lane float32 vector arithmetic, the schedule's strategy as named; float64 (2 lanes) for the Sum."""
    for dtype in ("float32", "float64") if name == "Sum" else ("float32",):
        ex = explain(formula, aliases, reduction, opt_arg=k, dtype=dtype, emit="asm", target="neoverse-n1",
                     variant=variant)
        asm = ex.outputs["asm"]
        assert (ex.schedule.strategy, ex.schedule.vector_bits) == (strategy, 128)
        assert NEON[dtype].search(asm), asm[:2000]
        assert not re.search(r"%[xyz]mm\d+|\bz\d+\.[sd]\b", asm)  # no x86, no SVE register


def test_neoverse_v1_uses_neon_vectors_and_may_use_sve():
    """With SVE: the same 128-bit (NEON) schedule; LLVM may pick SVE instructions for single operations."""
    ex = explain(*GAUSS, emit="asm", target="neoverse-v1")
    assert ex.schedule.vector_bits == 128 and NEON["float32"].search(ex.outputs["asm"])
    assert target("neoverse-v1").has("sve") and not target("neoverse-n1").has("sve")


def test_cli_variant_is_checked():
    with pytest.raises(ValueError, match="variant must be one of kernel, split_j, ranges"):
        explain(*GAUSS, emit="asm", target="neoverse-n1", variant="tiles")


# AT_HWCAP and AT_HWCAP2 words of an SVE core without SVE2 (as Neoverse V1): fp, asimd, fphp, asimddp,
# sve (asm/hwcap.h bits 0, 1, 9, 20, 22); i8mm, bf16 (bits 13, 14 of the second word)
SVE_CORE = (sum(1 << b for b in (0, 1, 9, 20, 22)), (1 << 13) | (1 << 14))


def test_hwcaps_name_llvm_features():
    found = target_module.hwcap_features(*SVE_CORE)
    on = sorted(f for f, v in found.items() if v)
    assert {"neon", "fp-armv8", "sve", "fullfp16", "dotprod", "bf16", "i8mm"} <= set(on)
    assert not found["sve2"]
    assert target_module.hwcap_features(0, 0) == {}  # no NEON: not an AArch64 word


def test_an_emulated_aarch64_host_reads_the_kernels_capabilities(monkeypatch):
    """qemu-user: LLVM reads the x86 /proc/cpuinfo, finds no AArch64 feature and calls the CPU
    'generic'; the features then come from the kernel's hardware capabilities (as emulated)."""
    monkeypatch.setattr(target_module.llvm, "get_process_triple", lambda: "aarch64-unknown-linux-gnu")
    monkeypatch.setattr(target_module.llvm, "get_host_cpu_name", lambda: "generic")
    monkeypatch.setattr(target_module.llvm, "get_host_cpu_features", lambda: target_module.llvm.FeatureMap())
    monkeypatch.setattr(target_module, "_aarch64_hwcaps", lambda: target_module.hwcap_features(*SVE_CORE))
    host = target_module.detect_host.__wrapped__()
    assert (host.cpu, host.vector_bits, host.vector_registers) == ("generic", 128, 32)
    assert "+neon" in host.features.split(",") and "+sve" in host.features.split(",")
    assert "-sve2" in host.features.split(",")


@pytest.mark.skipif(target_module._arch(target("host").triple) != "aarch64", reason="not an AArch64 host")
def test_this_aarch64_host():
    """Run on AArch64 (tests/platforms/aarch64.sh): NEON found however LLVM sees the CPU."""
    host = target_module.detect_host()
    assert host.vector_bits == 128 and host.has("neon"), host.text()
