"""Targets: what a code generator compiles for, as one descriptor.

A `Target` names the machine (LLVM triple, CPU name and features: what the
target machine is created with) and what the schedule depends on: the SIMD
width and vector registers, FMA units where known, the caches and the cores
(or, for a GPU, the SM architecture, warp size, shared memory per block,
registers per thread and SMs).  The host's is detected (LLVM's view of the
CPU, the caches from /sys, the cores this process may run on); named ones
exist for inspection and cross-compilation (`keomlir ir --target NAME`).
`KEOMLIR_TARGET=NAME` compiles the host's kernels for a named target's
instruction set of the host's architecture (AVX2-only code on an AVX-512
machine, NEON-only code on an SVE one), with the host's caches and cores, the
code still running here.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import pathlib
import sys

import llvmlite.binding as llvm

KiB, MiB = 1024, 1024 * 1024
NVPTX_TRIPLE = "nvptx64-nvidia-cuda"
X86_TRIPLE = "x86_64-unknown-linux-gnu"
AARCH64_TRIPLE = "aarch64-unknown-linux-gnu"
ENV = "KEOMLIR_TARGET"
# when /sys says nothing (not Linux): a common server core
FALLBACK_CACHES = (32 * KiB, 1 * MiB, 2 * MiB)


@dataclasses.dataclass(frozen=True)
class Target:
    """One machine a kernel is compiled for.  Caches are bytes per core (per SM on a GPU,
    `l2_bytes` then the whole chip's)."""

    name: str
    kind: str  # "cpu" or "gpu"
    triple: str
    cpu: str  # LLVM CPU name; a GPU's SM architecture (sm_90)
    features: str = ""  # LLVM feature string ("": the CPU's own)
    vector_bits: int | None = None  # SIMD register width across j; None: one j per thread (GPU)
    vector_registers: int = 0
    fma_units: int | None = None  # vector FMAs per cycle at `vector_bits`, where known
    l1_bytes: int = 0
    l2_bytes: int = 0
    l3_bytes: int = 0
    cores: int = 1  # cores (a GPU: SMs)
    warp_size: int = 0
    shared_bytes: int = 0  # shared memory a block may use without opt-in (static)
    registers_per_thread: int = 0
    threads_per_sm: int = 0
    required: tuple = ()  # CPU features a host needs to run this target's code (KEOMLIR_TARGET)
    clock_hz: float | None = None  # a CPU core's highest clock, where known (the host's: /sys or /proc)

    @property
    def sm_arch(self):
        return self.cpu if self.kind == "gpu" else None

    @property
    def key(self):
        """What changes the machine code besides the schedule (cache keys name it)."""
        return f"{self.name} {self.triple} {self.cpu} {self.features}"

    def has(self, feature):
        """May code for this target use the CPU feature `feature` (an LLVM name, e.g. avx512f)?"""
        return feature in self.required or f"+{feature}" in self.features.split(",")

    def peak_flops(self, dtype="float32"):
        """Floating-point operations per second at most, or None where unknown: SIMD lanes of
        `dtype` x vector FMAs a cycle x 2 (an FMA is a multiply and an add) x clock x cores."""
        if self.kind != "cpu" or not (self.vector_bits and self.fma_units and self.clock_hz):
            return None
        lanes = self.vector_bits // (64 if dtype == "float64" else 32)  # (half data computes in float32)
        return lanes * self.fma_units * 2 * self.clock_hz * self.cores

    def fields(self):
        """(name, value) of every field that applies to this kind of target, for printing."""
        skip = {"name", "required"} | ({"warp_size", "shared_bytes", "registers_per_thread", "threads_per_sm"}
                                       if self.kind == "cpu" else {"features", "vector_bits", "vector_registers",
                                                                   "fma_units", "l3_bytes", "clock_hz"})
        return [("sm_arch" if f.name == "cpu" and self.kind == "gpu" else f.name, getattr(self, f.name))
                for f in dataclasses.fields(self) if f.name not in skip]

    def text(self):
        """`target:` and one `name = value` line per field."""
        lines = [f"target: {self.name}"]
        for name, value in self.fields():
            if name.endswith("_bytes"):
                value = size_text(value)
            elif name == "clock_hz" and value:
                value = f"{value / 1e9:.3f} GHz"
            elif name == "features":
                value = _features_text(value)
            lines.append(f"  {name} = {'unknown' if value is None else value}")
        return "\n".join(lines)


_VECTOR_FEATURES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "sve")


def _features_text(features):
    """The enabled SIMD features of an LLVM feature string ('' : the CPU's own)."""
    if not features:
        return "(the CPU's own)"
    on = [f for f in features.split(",") if f.startswith("+")]
    simd = [f for f in on if f[1:].startswith(_VECTOR_FEATURES)]
    return f"{','.join(simd)} and {len(on) - len(simd)} more"


def size_text(n):
    """Bytes as the schedule prints (and parses) them: 512KiB, 2MiB, 100."""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


_X86_V3 = ("avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe")
_X86_V4 = _X86_V3 + ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
_ARM_V82 = ("neon", "fp-armv8", "fullfp16", "dotprod")

# named targets: caches per core from the vendors' documents; `cores` a typical part's, for
# inspection only (the host's cores are always counted)
NAMED = {t.name: t for t in [
    Target("x86-64-v3", "cpu", X86_TRIPLE, "x86-64-v3", "", 256, 16, 2, 32 * KiB, 512 * KiB, 2 * MiB, 8,
           required=_X86_V3),
    Target("skylake-avx512", "cpu", X86_TRIPLE, "skylake-avx512", "", 512, 32, 2, 32 * KiB, 1 * MiB,
           1408 * KiB, 16, required=_X86_V4),
    Target("sapphirerapids", "cpu", X86_TRIPLE, "sapphirerapids", "", 512, 32, 2, 48 * KiB, 2 * MiB,
           1920 * KiB, 32, required=_X86_V4 + ("avx512fp16", "avx512bf16", "avx512vnni", "amx-tile")),
    # Zen 4 runs 512-bit FMAs on its two 256-bit pipes: one a cycle
    Target("znver4", "cpu", X86_TRIPLE, "znver4", "", 512, 32, 1, 32 * KiB, 1 * MiB, 4 * MiB, 16,
           required=_X86_V4 + ("avx512bf16", "avx512vbmi2", "gfni")),
    # AArch64: NEON's 128 bits whether or not the CPU has SVE (see detect_host); Graviton 2's cores (NEON
    # only) and Graviton 3's (SVE 256 bits, four 128-bit FMA pipes)
    Target("neoverse-n1", "cpu", AARCH64_TRIPLE, "neoverse-n1", "", 128, 32, 2, 64 * KiB, 1 * MiB, 512 * KiB,
           64, required=_ARM_V82),
    Target("neoverse-v1", "cpu", AARCH64_TRIPLE, "neoverse-v1", "", 128, 32, 4, 64 * KiB, 1 * MiB, 512 * KiB,
           64, required=_ARM_V82 + ("sve", "bf16", "i8mm")),
    Target("sm_80", "gpu", NVPTX_TRIPLE, "sm_80", cores=108, l1_bytes=192 * KiB, l2_bytes=40 * MiB,
           warp_size=32, shared_bytes=48 * KiB, registers_per_thread=255, threads_per_sm=2048),
    Target("sm_90", "gpu", NVPTX_TRIPLE, "sm_90", cores=132, l1_bytes=256 * KiB, l2_bytes=50 * MiB,
           warp_size=32, shared_bytes=48 * KiB, registers_per_thread=255, threads_per_sm=2048),
]}
# vector FMAs per cycle of CPUs LLVM may name as the host, at their widest vectors
_FMA_UNITS = {"haswell": 2, "broadwell": 2, "skylake": 2, "skylake-avx512": 2, "cascadelake": 2,
              "icelake-server": 2, "sapphirerapids": 2, "znver2": 2, "znver3": 2, "znver4": 1, "znver5": 2,
              "neoverse-n1": 2, "neoverse-v1": 4, "neoverse-v2": 4}


def names():
    """The names `target()` accepts (any sm_XX architecture too)."""
    return ("host",) + tuple(NAMED)


def gpu(arch, sm_count=None, threads_per_sm=None):
    """The descriptor of a GPU of architecture `arch` (sm_XX), with the device's SM count and
    threads per SM where known (a named one's otherwise)."""
    base = NAMED.get(arch) or dataclasses.replace(NAMED["sm_80"], name=arch, cpu=arch)
    return dataclasses.replace(base, cores=sm_count or base.cores, threads_per_sm=threads_per_sm or base.threads_per_sm)


def target(name="host"):
    """The Target called `name`: 'host', a named target (see `names()`), or a GPU architecture."""
    if isinstance(name, Target):
        return name
    if name == "host":
        return host()
    if name in NAMED:
        return NAMED[name]
    if isinstance(name, str) and name.startswith("sm_") and name[3:].rstrip("af").isdigit():
        return gpu(name)
    raise ValueError(f"target: unknown target {name!r}; valid targets: {', '.join(names())}, or any sm_XX")


def host():
    """The host's target: detected, or the named target $KEOMLIR_TARGET selects."""
    return _host(os.environ.get(ENV, "").strip())


@functools.lru_cache(maxsize=None)
def _host(selected):
    detected = detect_host()
    if not selected or selected == "host":
        return detected
    named = NAMED.get(selected)
    arch = _arch(detected.triple)
    own = [n for n, t in NAMED.items() if t.kind == "cpu" and _arch(t.triple) == arch]
    if named is None or named.name not in own:
        raise ValueError(f"{ENV}={selected!r}: the host's code is compiled for a named target of its own "
                         f"architecture ({detected.triple}); valid: {', '.join(own) or 'none'}")
    have = _host_features()
    missing = [f for f in named.required if not have.get(f)]
    if missing:
        raise ValueError(f"{ENV}={selected!r}: this CPU ({detected.cpu}) lacks {', '.join(missing)}, which code "
                         f"for {selected} may use; valid here: "
                         f"{', '.join(n for n in own if all(have.get(f) for f in NAMED[n].required))}")
    # the named instruction set, on the host's caches and cores
    return dataclasses.replace(named, l1_bytes=detected.l1_bytes, l2_bytes=detected.l2_bytes,
                               l3_bytes=detected.l3_bytes, cores=detected.cores,
                               clock_hz=detected.clock_hz)


def _arch(triple):
    """The architecture of an LLVM triple, Apple's arm64 named aarch64."""
    arch = triple.split("-")[0]
    return "aarch64" if arch == "arm64" else arch


def _host_features():
    """The host CPU's features by LLVM name ({name: bool}; empty where nothing can read them).
    LLVM reads them from /proc/cpuinfo on Linux, which under user-mode emulation (qemu-user)
    describes the machine running the emulator: on AArch64 Linux the kernel's hardware
    capabilities (what the emulator emulates) are read when LLVM finds no feature."""
    try:
        found = dict(llvm.get_host_cpu_features())
    except RuntimeError:
        found = {}
    if not any(found.values()) and _arch(llvm.get_process_triple()) == "aarch64":
        found = _aarch64_hwcaps()
    return found


# Linux's AArch64 hardware capability bits (asm/hwcap.h: AT_HWCAP, AT_HWCAP2) that code generation
# uses, by the LLVM feature each means
_HWCAP = {0: "fp-armv8", 1: "neon", 3: "aes", 6: "sha2", 7: "crc", 8: "lse", 9: "fullfp16", 12: "rdm",
          20: "dotprod", 22: "sve", 23: "fp16fml"}
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}
AT_HWCAP, AT_HWCAP2 = 16, 26


def _aarch64_hwcaps():
    """{LLVM feature: bool} from the AArch64 Linux kernel's hardware capabilities ({} elsewhere)."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return {}
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return hwcap_features(getauxval(AT_HWCAP), getauxval(AT_HWCAP2))


def hwcap_features(hwcap, hwcap2):
    """{LLVM feature: bool} of AArch64 Linux's AT_HWCAP and AT_HWCAP2 words ({} without NEON: not an
    AArch64 word)."""
    found = {}
    for word, bits in ((hwcap, _HWCAP), (hwcap2, _HWCAP2)):
        for bit, name in bits.items():
            found[name] = found.get(name, False) or bool(word >> bit & 1)
    return found if found["neon"] else {}


def _flat(features):
    """An LLVM feature string of a {name: bool} map: '+avx2,-avx512f,...'."""
    return ",".join(f"{'+' if on else '-'}{name}" for name, on in sorted(features.items()))


@functools.lru_cache(maxsize=None)
def detect_host():
    """The host CPU as LLVM sees it, with its caches and the cores this process may use."""
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    features = _host_features()
    arch = _arch(triple)
    if arch in ("x86_64", "i386", "i686"):
        wide = features.get("avx512f")
        bits = 512 if wide else 256 if features.get("avx") or features.get("avx2") else 128
        registers = 32 if wide else 16
    elif arch == "aarch64":
        # NEON's 128 bits, SVE or not: fixed-width vectors of the SVE register length would tie the code
        # to that one length (256-bit SVE code is wrong on a 128-bit part), and the common SVE cores gain
        # nothing from it (Neoverse V1's two 256-bit SVE pipes do the FLOPs of its four 128-bit NEON
        # ones; N2, V2 and Grace have 128-bit SVE); LLVM still uses SVE instructions (+sve) where they
        # serve a 128-bit operation NEON lacks
        bits, registers = 128, 32
    else:  # a 128-bit vector LLVM legalizes whatever the ISA
        bits, registers = 128, 16
    l1, l2, l3 = _caches()
    return Target("host", "cpu", triple, cpu, _flat(features), bits, registers, _FMA_UNITS.get(cpu), l1, l2, l3,
                  _cores(), clock_hz=_clock_hz())


def _clock_hz(sys_root=pathlib.Path("/sys/devices/system/cpu/cpu0/cpufreq"), cpuinfo=pathlib.Path("/proc/cpuinfo")):
    """CPU 0's highest clock in Hz: cpufreq's maximum (boost included), else the highest
    'cpu MHz' of /proc/cpuinfo (a virtual machine's nominal clock), else None."""
    try:
        return int((sys_root / "cpuinfo_max_freq").read_text()) * 1e3
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(line.split(":")[1]) for line in cpuinfo.read_text().splitlines()
               if line.lower().startswith("cpu mhz")]
    except (OSError, ValueError, IndexError):
        return None
    return max(mhz) * 1e6 if mhz else None


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _parse_size(text):
    text = text.strip()
    scale = {"K": KiB, "M": MiB, "G": 1024 * MiB}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KMGkmg")) * scale


def _cpu_count(cpu_list):
    """CPUs in a /sys list such as '0-3,8'."""
    n = 0
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1 if lo else 0
    return n


def _caches(root=pathlib.Path("/sys/devices/system/cpu/cpu0")):
    """(L1 data, L2, L3) bytes per core of CPU 0, from /sys; a shared cache's size is divided
    among the cores sharing it (hardware threads of one core counting once)."""
    found = {}
    try:
        smt = max(1, _cpu_count((root / "topology/thread_siblings_list").read_text()))
        for index in sorted((root / "cache").glob("index*")):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _parse_size((index / "size").read_text())
            sharing = max(1, _cpu_count((index / "shared_cpu_list").read_text()) // smt)
            found[level] = size // sharing
    except (OSError, ValueError):
        pass
    return tuple(found.get(level, fallback) for level, fallback in zip((1, 2, 3), FALLBACK_CACHES))
