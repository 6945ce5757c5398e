"""How close the hot loops run to what the core can do: bench/roofline.md.

    python bench/roofline.py [--quick] [--ports]

For each kernel: the generated assembly's hot loop (the path through the j loop that
no rare branch leaves, inner loops counted by their trip counts), its instructions by
execution class per pair (i, j), the fewest cycles per pair the core's execution
resources allow for that mix (the bound), the measured single-thread rate, and the
fraction of the bound it reaches.  The execution model is this machine's, measured by
the throughput microbenchmarks below (`--ports` prints them and checks the model
against them).  Run it on a quiet machine: the rates are wall-clock (the bound is not).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
os.environ.setdefault("KEOMLIR_NUM_THREADS", "1")

import llvmlite.binding as llvm  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402

from keomlir.backends.llvm import nvptx  # noqa: E402
from keomlir.compile import CompiledReduction  # noqa: E402
from keomlir.explain import explain  # noqa: E402
from keomlir.numpy import Genred  # noqa: E402

import roofline_ptx  # noqa: E402
from machine import cpu_model  # noqa: E402

# ---- the execution model --------------------------------------------------------------------
# Zen 4 (AMD EPYC, znver4) runs a 512-bit operation as two halves on its 256-bit FP pipes
# FP0-FP3: a zmm op is 2 pipe-cycles of work on one pipe of its class's set.  The sets and
# the work are what `--ports` measures on this machine (each class alone, and each beside
# an FMA and beside an add: whether they compete): FMA, multiply and FP compare on FP0/FP1;
# add, min/max, round, convert, shift and scalef (4 pipe-cycles) on FP2/FP3; broadcasts
# (from a register or memory) on FP1/FP2; integer add, logic and blends on any pipe.  Loads:
# two 256-bit slots a cycle, a zmm load (or full zmm memory operand) taking both, a
# narrower one (an embedded {1toN} broadcast included) one; a zmm store every two cycles;
# one mask-register op a cycle, 4 scalar integer ops and 6 instructions dispatched a cycle.
PIPES = ("FP0", "FP1", "FP2", "FP3")
FMA_SET, ADD_SET, SHUF_SET, ANY_SET = frozenset("01"), frozenset("23"), frozenset("12"), frozenset("0123")
CLASSES = {  # class: (pipe set, pipe-cycles per zmm instruction)
    "fma": (FMA_SET, 2), "add": (ADD_SET, 2), "scalef": (ADD_SET, 4), "shuffle": (SHUF_SET, 2),
    "int": (ANY_SET, 2),
}
LOAD_SLOTS, STORE_SLOTS, MASK_PER_CYCLE, SCALAR_PER_CYCLE, DISPATCH = 2.0, 1.0, 1.0, 4.0, 6.0

_FMA = re.compile(r"^v(fn?m(add|sub)\d+[ps][sd]|mulp[sd]|cmp\w*p[sd])$")
_ADD = re.compile(r"^v(addp[sd]|subp[sd]|maxp[sd]|minp[sd]|rndscalep[sd]|cvt\w+|ps[lr]l[dq]|psra[dq]|"
                  r"ps[lr]lv[dq]|psrav[dq])$")
_SHUF = re.compile(r"^v(broadcasts[sd]|pbroadcast[dq]|perm\w+|shuf\w+|unpck\w+|extract\w+|insert\w+|"
                   r"permt2\w+|pshufd|compress\w+|expand\w+)$")
_INT = re.compile(r"^v(padd[dq]|psub[dq]|pand\w*|por\w*|pxor\w*|andn?p[sd]|orp[sd]|xorp[sd]|blendm\w+|"
                  r"pblendm\w+|pternlog\w+|pcmp\w+|movap[sd]|movup[sd]|movdq\w+)$")


def classify(mnemonic, operands):
    """(class of the FP pipes or None, load slots, store slots, other resource) of one instruction."""
    mem = "(" in operands and not mnemonic.startswith("lea")
    vector = "zmm" in operands or "ymm" in operands or "xmm" in operands
    # a memory operand's slots: 2 for all 64 bytes of a zmm, else 1 (a narrower or {1toN} one)
    slots = (2 if "zmm" in operands and "{1to" not in operands and not mnemonic.startswith(("vbroadcast", "vpbroadcast"))
             else 1) if mem else 0
    if mnemonic.startswith("k"):
        return None, 0, 0, "mask"
    if mnemonic in ("vmovups", "vmovaps", "vmovdqu64", "vmovdqa64", "vmovss", "vmovsd") and mem:
        first = operands.split(",")[0]
        return (None, slots, 0, None) if "(" in first else (None, 0, slots, None)
    if mnemonic.startswith("vscalef"):
        return "scalef", slots, 0, None
    for cls, pattern in (("fma", _FMA), ("add", _ADD), ("shuffle", _SHUF), ("int", _INT)):
        if pattern.match(mnemonic):
            if cls == "int" and mnemonic.startswith("vmov") and "{" not in operands:
                return None, slots, 0, "move"  # a register move: eliminated at rename
            return cls, slots, 0, None
    if vector:
        return "int", slots, 0, None  # other vector instructions: counted as any-pipe work
    return None, int(mem), 0, "scalar"


def bound(counts):
    """(cycles, limiting resource) for instruction counts {resource: n} (per pair or per loop):
    the FP pipes' work spread as well as the sets allow (the most loaded union of pipes), the
    ports and widths above."""
    work = {cls: counts.get(cls, 0) * CLASSES[cls][1] for cls in CLASSES}
    best = (0.0, "")
    for r in range(1, 5):
        for subset in itertools.combinations("0123", r):
            s = frozenset(subset)
            need = sum(w for cls, w in work.items() if CLASSES[cls][0] <= s)
            best = max(best, (need / len(s), "FP" + "/".join(sorted(s))))
    others = [(counts.get("load", 0) / LOAD_SLOTS, "loads"), (counts.get("store", 0) / STORE_SLOTS, "stores"),
              (counts.get("mask", 0) / MASK_PER_CYCLE, "mask ops"), (counts.get("scalar", 0) / SCALAR_PER_CYCLE, "scalar"),
              (counts.get("instructions", 0) / DISPATCH, "dispatch")]
    return max([best] + others)


# ---- the hot loop of a kernel's assembly ------------------------------------------------------
class Asm:
    """keomlir_kernel's instructions and labels, its loops (header -> last back edge)."""

    def __init__(self, text):
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("keomlir_kernel:"))
        end = next(i for i in range(start, len(lines)) if lines[i].startswith(".Lfunc_end"))
        self.items, self.labels = [], {}
        for line in lines[start + 1:end]:
            m = re.match(r"^(\.LBB\w+):", line)
            if m:
                self.labels[m.group(1)] = len(self.items)
            elif line.startswith("\t") and not line.strip().startswith((".", "#")):
                parts = line.split(None, 1)
                self.items.append((parts[0], parts[1].split("#")[0].strip() if len(parts) > 1 else ""))
        self.loops = {}
        for pos, (op, args) in enumerate(self.items):
            if op.startswith("j") and args in self.labels and self.labels[args] <= pos:
                self.loops[self.labels[args]] = pos

    def path(self, head, trips, _memo=None):
        """Instructions on the loop's path that takes no conditional branch but the back edge,
        an inner loop's path counted trips(inner loop's path) times: [(instruction, count)], or
        None where that path does not come back to the head (a block a rare path re-enters by)."""
        memo = {} if _memo is None else _memo
        if head in memo:
            return memo[head]
        memo[head] = None  # (a path that comes back to a loop being walked does not close)
        memo[head] = self._path(head, trips, memo)
        return memo[head]

    def _path(self, head, trips, memo):
        out, pos, end, seen = [], head, self.loops[head], set()
        while pos <= end and pos not in seen:
            seen.add(pos)
            inner = self.path(pos, trips, memo) if pos != head and pos in self.loops and self.loops[pos] <= end \
                else None
            if inner is not None:
                n = trips([i for i, _ in inner])
                out += [(i, c * n) for i, c in inner]
                pos = self.loops[pos] + 1
                continue
            op, args = self.items[pos]
            out.append(((op, args), 1))
            if op.startswith("j") and args in self.labels:
                target = self.labels[args]
                if target == head:
                    return out
                if op == "jmp":
                    if not head <= target <= end:
                        return None
                    pos = target
                    continue
            pos += 1
        return None

    def loop_where(self, test):
        """The innermost loop whose no-branch path passes test(its instructions)."""
        paths = {h: self.path(h, lambda _: 1) for h in self.loops}
        found = [h for h, p in paths.items() if p is not None and test([i for i, _ in p])]
        return min(found, key=lambda h: self.loops[h] - h)


def tally(path):
    """Counts by resource of a path [(instruction, count)]."""
    counts = {"instructions": 0}
    for (op, args), n in path:
        cls, loads, stores, other = classify(op, args)
        counts["instructions"] += n
        for key, k in ((cls, 1), ("load", loads), ("store", stores), (other, 1)):
            if key and k:
                counts[key] = counts.get(key, 0) + n * k
    return counts


def scaled(counts, k):
    return {key: v * k for key, v in counts.items()}


def added(a, b):
    return {key: a.get(key, 0) + b.get(key, 0) for key in set(a) | set(b)}


def _j_loads(instrs):
    return [a for op, a in instrs if op == "vmovups" and "(" in a.split(",")[0] and "rsp" not in a]


def _vector_exp(instr):
    """The end of a vector exp (2^n applied by vscalef)."""
    return instr[0].startswith("vscalef") and "zmm" in instr[1]


def _j_step(instrs):
    """The j the loop advances per iteration: the add to the index register of its (float32) j loads,
    times that register's scale over 4 bytes (an index of elements or of bytes)."""
    scales = {}
    for a in _j_loads(instrs):
        m = re.search(r"\(%\w+,(%\w+)(?:,(\d))?\)", a)
        if m:
            scales[m.group(1)] = int(m.group(2) or 1)
    for op, a in instrs:
        m = re.match(r"\$(\d+), (%\w+)", a)
        if op == "addq" and m and m.group(2) in scales:
            return int(m.group(1)) * scales[m.group(2)] // 4
    for op, a in instrs:  # the next j made beside the index register (a loop that may leave early)
        m = re.match(r"(\d+)\((%\w+)\), %\w+$", a)
        if op == "leaq" and m and m.group(2) in scales:
            return int(m.group(1)) * scales[m.group(2)] // 4
    raise ValueError("no j step found")


def per_pair(asm, kind, rows, lanes, dim):
    """Counts per pair of the kernel's hot loops (see the module docstring)."""
    if kind == "contraction":  # per j vector, a loop over the D components (one y load each)
        inner = asm.loop_where(lambda ins: len(_j_loads(ins)) > 0 and not any(_vector_exp(i) for i in ins))
        head = min((h for h in asm.loops if h < inner and asm.loops[inner] <= asm.loops[h]
                    and asm.path(h, lambda _: 1) is not None), key=lambda h: asm.loops[h] - h)
        path = asm.path(head, lambda ins: dim / max(1, len(_j_loads(ins))))
        return scaled(tally(path), 1 / (rows * lanes))
    head = asm.loop_where(lambda ins: len(_j_loads(ins)) >= dim)
    path = asm.path(head, lambda inner: 1)
    counts = scaled(tally(path), 1 / (rows * _j_step([i for i, _ in path])))
    if kind == "batched":  # LogSumExp: the exps of a batch, one loop per row, its own j vectors
        flush = asm.loop_where(lambda ins: any(_vector_exp(i) for i in ins) and not _j_loads(ins))
        fpath = asm.path(flush, lambda inner: 1)
        exps = sum(n for (op, _), n in fpath if op.startswith("vscalef"))
        counts = added(counts, scaled(tally(fpath), 1 / (exps * lanes)))
    return counts


# ---- the throughput microbenchmarks -----------------------------------------------------------
_PROBES = {  # class: one instruction writing register k (16 independent ones a loop iteration)
    "fma": "vfmadd231ps %zmm1, %zmm2, %zmm{r}", "mul": "vmulps %zmm1, %zmm2, %zmm{r}",
    "cmp": "vcmpltps %zmm1, %zmm2, %k{m}", "add": "vaddps %zmm1, %zmm2, %zmm{r}",
    "max": "vmaxps %zmm1, %zmm2, %zmm{r}", "rndscale": "vrndscaleps $$9, %zmm1, %zmm{r}",
    "cvt": "vcvttps2dq %zmm1, %zmm{r}", "shift": "vpslld $$23, %zmm1, %zmm{r}",
    "scalef": "vscalefps %zmm1, %zmm2, %zmm{r}", "bcast": "vbroadcastss %xmm1, %zmm{r}",
    "iadd": "vpaddd %zmm1, %zmm2, %zmm{r}", "logic": "vpxord %zmm1, %zmm2, %zmm{r}",
    "blend": "vblendmps %zmm1, %zmm2, %zmm{r} {{%k1}}", "load": "vmovups {o}(%rsi), %zmm{r}",
    "bcast load": "vbroadcastss {s}(%rsi), %zmm{r}", "scalar load": "vmovss {s}(%rsi), %xmm{r}",
    "fma {1to16}": "vfmadd231ps {s}(%rsi){{1to16}}, %zmm2, %zmm{r}",
    "store": "vmovaps %zmm1, {o}(%rsi)", "kortest": "kortestw %k1, %k2",
}
_MODEL = {"fma": "fma", "fma {1to16}": "fma", "bcast load": "shuffle", "mul": "fma", "cmp": "fma", "add": "add", "max": "add", "rndscale": "add", "cvt": "add",
          "shift": "add", "scalef": "scalef", "bcast": "shuffle", "iadd": "int", "logic": "int", "blend": "int"}


def _asm_loop(lines):
    """A function f(n, buffer) running the asm lines n times, and the engine keeping it."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_asmparser()
    m = ir.Module()
    m.triple = llvm.get_process_triple()
    fty = ir.FunctionType(ir.VoidType(), [ir.IntType(64), ir.IntType(8).as_pointer()])
    f = ir.Function(m, fty, "f")
    b = ir.IRBuilder(f.append_basic_block())
    clobbers = ",".join(["~{rcx}", "~{rax}", "~{memory}"] + [f"~{{xmm{i}}}" for i in range(32)] +
                        [f"~{{k{i}}}" for i in range(1, 8)])
    body = "mov %rdi, %rcx\n1:\n" + "\n".join(lines) + "\ndec %rcx\njnz 1b"
    b.call(ir.InlineAsm(fty, body, "{rdi},{rsi}," + clobbers, side_effect=True), f.args)
    b.ret_void()
    tm = llvm.Target.from_triple(m.triple).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=2)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(m)), tm)
    engine.finalize_object()
    return ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(engine.get_function_address("f")), engine


_BUFFER = ctypes.create_string_buffer(1 << 14)


def _seconds_per_line(lines, n=100_000, reps=15):
    fn, keep = _asm_loop(lines)
    addr = (ctypes.addressof(_BUFFER) + 63) // 64 * 64
    best = min(_timed(fn, n, addr) for _ in range(reps))
    del keep
    return best / (n * len(lines))


def _timed(fn, n, addr):
    t = time.perf_counter()
    fn(n, addr)
    return time.perf_counter() - t


def clock_hz():
    """The core clock: a chain of dependent one-cycle integer adds."""
    return 1 / _seconds_per_line(["add $$1, %rax"] * 16)


def _probe(name, k):
    return _PROBES[name].format(r=8 + k, m=1 + k % 7, o=64 * k, s=4 * k)


def measure_ports():
    """{class: cycles per instruction alone}, {(a, b): cycles per a-b pair (8 of each)}."""
    hz = clock_hz()
    alone = {name: _seconds_per_line([_probe(name, k) for k in range(16)]) * hz for name in _PROBES}
    pairs = {}
    for a in list(_MODEL) + ["scalar load"]:
        for b in ("fma", "add", "bcast", "load"):
            if a != b and (b != "load" or a in ("bcast load", "fma {1to16}", "scalar load")) and \
                    (b != "bcast" or a in ("bcast load", "fma {1to16}")):
                pairs[a, b] = _seconds_per_line([_probe(a, k) for k in range(8)] +
                                                [_probe(b, k + 8) for k in range(8)]) * hz * 2
    return hz, alone, pairs


def alternating(hz):
    """Cycles of 8 FMAs and 8 adds in strict alternation (FMA, add, FMA, ...): the pairs above run
    8 of one, then 8 of the other."""
    fma, add = (_probe("fma", k) for k in range(8)), (_probe("add", k + 8) for k in range(8))
    return _seconds_per_line([x for pair in zip(fma, add) for x in pair]) * hz * 16


def _predicted(names):
    """The model's cycles for one instruction of each probe in names (8 of each, or 16 of one)."""
    n = 16 // len(names)
    lines = [_probe(name, k + 8 * i) for i, name in enumerate(names) for k in range(n)]
    instrs = [((op, args), 1) for op, args in (line.replace("$$", "$").split(None, 1) for line in lines)]
    return bound(tally(instrs))[0] / n


# ---- the cases ----------------------------------------------------------------------------------
def _pts(r, m, d):
    return (r.normal(size=(m, d)) / np.sqrt(d)).astype(np.float32)


GAUSS = "Exp(-SqDist(x,y)) * b"
CASES = [  # (label, formula, aliases, reduction, opt_arg, kind, D, data(r, n) -> args, extra)
    ("Gaussian sum, D = 3", GAUSS, ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", None, "plain", 3,
     lambda r, n: (_pts(r, n, 3), _pts(r, n, 3), _pts(r, n, 1))),
    ("its gradient in x", f"Grad({GAUSS}, x, e)", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "e = Vi(1)"], "Sum",
     None, "plain", 3, lambda r, n: (_pts(r, n, 3), _pts(r, n, 3), _pts(r, n, 1), np.ones((n, 1), np.float32))),
    ("LogSumExp of -SqDist, D = 3", "-SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "LogSumExp", None, "batched", 3,
     lambda r, n: (_pts(r, n, 3), _pts(r, n, 3))),
] + [
    (f"softmin -SqDist*e+f, D = 2, e = {e}", "-SqDist(x,y) * e + f", ["x = Vi(2)", "y = Vj(2)", "e = Pm(1)", "f = Vj(1)"],
     "LogSumExp", None, "batched", 2,
     lambda r, n, e=e: (_pts(r, n, 2), _pts(r, n, 2), np.array([e], np.float32),
                        (r.normal(size=(n, 1)) * 0.1).astype(np.float32)))
    for e in (1, 100, 400)
] + [
    ("ArgKMin K = 10, D = 3", "SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", 10, "plain", 3,
     lambda r, n: (_pts(r, n, 3), _pts(r, n, 3))),
    ("Gaussian sum, D = 128", GAUSS, ["x = Vi(128)", "y = Vj(128)", "b = Vj(1)"], "Sum", None, "contraction", 128,
     lambda r, n: (_pts(r, n, 128), _pts(r, n, 128), _pts(r, n, 1))),
]


def analyse(formula, aliases, reduction, k, kind, dim):
    ex = explain(formula, aliases, reduction, opt_arg=k, emit="asm")
    s = ex.schedule
    return per_pair(Asm(ex.outputs["asm"]), kind, s.rows, s.lanes, dim), s


def measure(formula, aliases, reduction, k, data, n, reps):
    """Pairs a second of one thread: (by its CPU time, by the wall clock), medians.  The CPU
    time counts only the time the thread ran, so it holds on a loaded machine (the wall clock
    does not)."""
    g = Genred(formula, aliases, reduction, axis=1, opt_arg=k)
    args = data(np.random.default_rng(0), n)
    g(*args)
    cpu, wall = [], []
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        g(*args)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return n * n / statistics.median(cpu), n * n / statistics.median(wall)


# rows measured in fresh processes, the median taken: ArgKMin's speed depends on the address space's
# layout, drawn anew by each process (bench/schedule_defaults.md)
FRESH_PROCESSES = {"ArgKMin K = 10, D = 3": 5}


def _measured_apart(index, n, reps, processes):
    """(rate, wall rate) of CASES[index] measured in each of `processes` fresh Python processes."""
    out = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, __file__, "--measure-case", str(index), "--n", str(n), "--reps", str(reps)],
                              capture_output=True, text=True, check=True)
        out.append(tuple(float(v) for v in done.stdout.split()))
    return out


def kmin_insertions(hz, n=20000, rows=1000, reps=5):
    """ArgKMin K = 10 (D = 3): cycles a row spends apart from the work that grows with N (the
    insertions of the j that enter its list, about K (1 + ln(N / K)) of them, and its setup), from
    the CPU time of rows against n and 4 n j: (cycles a row, their share of the time at n, pairs a
    cycle of the rest: the j loop's own rate, with the calls that empty its logs)."""
    r = np.random.default_rng(1)
    g = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", axis=1, opt_arg=10)
    x = _pts(r, rows, 3)
    per_row = []
    for m in (n, 4 * n):
        y = _pts(r, m, 3)
        g(x, y)
        cpu = []
        for _ in range(reps):
            c = time.process_time()
            g(x, y)
            cpu.append(time.process_time() - c)
        per_row.append(statistics.median(cpu) / rows)
    slope = (per_row[1] - per_row[0]) / (3 * n)
    fixed = per_row[0] - slope * n
    return fixed * hz, fixed / per_row[0], 1 / (slope * hz)


def ptx_rows(arch="sm_90"):
    """[(label, fast_math, counts per pair, (pairs per clock per SM, limit))] of the GPU kernels of
    CASES (bench/roofline_ptx.py), with and without fast math (exp through ex2.approx)."""
    out = []
    for label, formula, aliases, reduction, k, _, _, _ in CASES:
        if label.startswith("softmin") and not label.endswith("e = 1"):
            continue  # (the same kernel as e = 1)
        program = CompiledReduction(formula, aliases, reduction, 1, opt_arg=k).program
        j_row = sum(int(re.search(r"\((\d+)\)", a).group(1)) for a in aliases if "Vj" in a)
        for fast in (False, True):
            counts = roofline_ptx.per_pair(nvptx.render_ptx(program, "float32", arch, fast_math=fast), j_row)
            out.append((label.replace(", e = 1", ""), fast, counts, roofline_ptx.sm_bound(counts)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--ports", action="store_true", help="print the microbenchmarks and the model's predictions")
    parser.add_argument("--out", default=os.path.join(HERE, "roofline.md"))
    parser.add_argument("--measure-case", type=int, help=argparse.SUPPRESS)  # (one row's rate, in a fresh process)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_case is not None:
        _, formula, aliases, reduction, k, _, _, data = CASES[args.measure_case]
        print(*measure(formula, aliases, reduction, k, data, args.n, args.reps))
        return
    hz, alone, pairs = measure_ports()
    if args.ports:
        print(f"clock {hz / 1e9:.2f} GHz")
        for name, t in alone.items():
            print(f"{name:12s} {t:.2f} cycles  (model {_predicted([name]):.2f})")
        for (a, b), t in pairs.items():
            print(f"{a}+{b}: {t:.2f} cycles a pair (model {_predicted([a, b]):.2f})")
        return
    load = os.getloadavg()[0]
    rows_out, fresh = [], {}
    for case in CASES:
        label, formula, aliases, reduction, k, kind, dim, data = case
        counts, sched = analyse(formula, aliases, reduction, k, kind, dim)
        cycles, limit = bound(counts)
        n = (2000 if dim > 100 else 8000) if args.quick else (5000 if dim > 100 else 20000)
        reps = 3 if args.quick else 5
        if label in FRESH_PROCESSES:
            runs = sorted(_measured_apart(CASES.index(case), n, reps, FRESH_PROCESSES[label]))
            (rate, wall), fresh[label] = runs[len(runs) // 2], [r for r, _ in runs]
        else:
            rate, wall = measure(formula, aliases, reduction, k, data, n, reps)
        rows_out.append((label, counts, cycles, limit, rate, wall))
        print(f"{label}: {counts.get('instructions', 0):.2f} instructions a pair, bound {1 / cycles:.2f} pairs/cycle "
              f"({limit}), measured {rate / 1e9:.2f} Gpairs/s of CPU time ({wall / 1e9:.2f} wall) = "
              f"{rate / hz:.2f} pairs/cycle", flush=True)
    kmin = kmin_insertions(hz, n=8000 if args.quick else 20000)
    print(f"ArgKMin: {kmin[0]:.0f} cycles a row off the common path, {kmin[1]:.0%} of the time; the common path "
          f"{kmin[2]:.2f} pairs/cycle")
    kmin_bound = next(1 / cycles for label, _, cycles, _, _, _ in rows_out if label.startswith("ArgKMin"))
    _write(args.out, hz, alone, pairs, alternating(hz), rows_out, load, kmin + (kmin_bound,), ptx_rows(), fresh)


def _write(path, hz, alone, pairs, alternated, rows, load, kmin, gpu_rows, fresh):
    lines = [
        "# Hot loops against the core's limits",
        "",
        "Regenerated by `python bench/roofline.py` (see its docstring); numbers of this run.",
        "",
        f"CPU: {cpu_model()} ({llvm.get_host_cpu_name()}), one thread; clock measured {hz / 1e9:.2f} GHz (a chain "
        f"of dependent integer adds); load average {load:.1f} while measuring (wall-clock rates drop with "
        "load; the bound does not).",
        "",
        "## Execution model (measured here)",
        "",
        "A 512-bit operation is two 256-bit halves on one of the 4 FP pipes (2 pipe-cycles of work; "
        "scalef 4). Measured cycles per instruction (the model's in brackets): 16 independent ones a "
        "loop, and 8 beside 8 FMAs / adds / register broadcasts / zmm loads:",
        "",
        "| instruction | pipes (model) | alone | with FMA | with add | with broadcast | with load |",
        "|---|---|---|---|---|---|---|",
    ]
    partners = ("fma", "add", "bcast", "load")
    for name, t in alone.items():
        model = _MODEL.get(name)
        pipes = "/".join(f"FP{p}" for p in sorted(CLASSES[model][0])) if model else \
            {"store": "store", "kortest": "mask"}.get(name, "loads")
        if name in ("bcast load", "fma {1to16}"):
            pipes += " and loads"
        cells = [f"{t:.2f} ({_predicted([name]):.2f})"] + [
            "" if (name, b) not in pairs else f"{pairs[name, b]:.2f} ({_predicted([name, b]):.2f})" for b in partners]
        lines.append(f"| {_PROBES[name].format(r=8, m=1, o=0, s=0).replace('$$', '$')} | {pipes} | "
                     + " | ".join(cells) + " |")
    lines += [
        "",
        f"Loads: {LOAD_SLOTS:g} slots a cycle (a zmm load or operand takes 2, a narrower or {{1toN}} one 1); "
        f"stores: {STORE_SLOTS:g} slot (a zmm store 2); {MASK_PER_CYCLE:g} mask-register op, {SCALAR_PER_CYCLE:g} "
        f"scalar integer ops, {DISPATCH:g} instructions dispatched a cycle. Register moves count for dispatch "
        "only (eliminated at rename).",
        "",
        f"The bound takes each instruction to the pipe that is free; the core does not always: 8 FMAs and "
        f"8 adds take {pairs['fma', 'add'] * 8:.1f} cycles as 8 of one then 8 of the other, {alternated:.1f} in strict "
        "alternation (FMA, add, FMA, ...; the instruction order is LLVM's scheduler's). Part of what keeps a "
        "kernel below its bound is this.",
        "",
        "## Kernels (float32, M = N = 20000; D = 128: 5000)",
        "",
        "Per pair: instructions on the hot loop's common path (LogSumExp: the j loop plus the batch's exp loop; "
        "D = 128: the loop over components times D / its unroll), by class.",
        "",
        "Measured: one thread, pairs per second of its CPU time (the wall-clock rate in brackets: lower "
        "when other processes share the cores), as pairs a cycle at the measured clock; the fraction is "
        "of the bound.",
        "",
        "| kernel | instr. | FMA-class | add-class | scalef | shuffle | int | loads | stores | scalar+mask "
        "| bound pairs/cycle (limit) | measured Gpairs/s (wall) | pairs/cycle | fraction |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, c, cycles, limit, rate, wall in rows:
        g = c.get
        lines.append(f"| {label} | {g('instructions', 0):.2f} | {g('fma', 0):.2f} | {g('add', 0):.2f} | "
                     f"{g('scalef', 0):.3f} | {g('shuffle', 0):.3f} | {g('int', 0):.3f} | {g('load', 0):.3f} | "
                     f"{g('store', 0):.3f} | {g('scalar', 0) + g('mask', 0):.3f} | {1 / cycles:.2f} ({limit}) | "
                     f"{rate / 1e9:.2f} ({wall / 1e9:.2f}) | {rate / hz:.2f} | {rate / hz * cycles:.0%} |")
    softmin = {label: rate for label, _, _, _, rate, _ in rows if label.startswith("softmin")}
    base = next(iter(softmin.values()))
    lines += [
        "",
        "The softmin's speed does not depend on e (the data): " + ", ".join(
            f"e = {label.rsplit('= ', 1)[1]}: {rate / base:.2f}" for label, rate in softmin.items()) +
        " of e = 1's rate.",
        "",
        f"ArgKMin's j loop logs every j vector (its values and a word of its candidates, no branch on "
        f"the data) and leaves every 64 vectors (1, 2, 4... while its lists fill) to insert the "
        f"candidates of the tile's logs, out of the loop, the rows' insertions in step; the bound "
        f"counts the loop. The insertions (about K (1 + ln(N / K)) = 86 a row at N = 20000, of about "
        f"110 candidates from 65 logged vectors) and a row's setup cost {kmin[0]:.0f} cycles a "
        f"row, measured from rows against N and 4 N: {kmin[1]:.0%} of the time at N = 20000; the part "
        f"that grows with N (the loop and the calls that empty its logs) runs at {kmin[2]:.2f} "
        f"pairs/cycle: {kmin[2] / kmin[3]:.0%} of the loop's bound. Its logs start where their stores keep "
        "clear of the j data's loads (`Emitter.unaliased_start`); still, its speed changes from one process to "
        "the next with the address space's layout (bench/schedule_defaults.md): its row is the median of "
        + "; ".join(f"{len(v)} fresh processes ({', '.join(f'{r / hz:.2f}' for r in v)} pairs/cycle)"
                    for v in fresh.values()) + ".",
    ]
    lines += _ptx_section(gpu_rows)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _ptx_section(gpu_rows):
    sm = roofline_ptx.SM90
    devices = roofline_ptx.DEVICES
    lines = [
        "",
        "## NVPTX kernels (sm_90): operations per pair from the PTX, the bound they imply",
        "",
        "Counted, not measured: no GPU was lent to this run (bench/gpu_bench.py measures the Gaussian's "
        "rate where one is). `keomlir_1d`'s j loop (one thread per row), its common path (no K-min "
        "insertion), per pair, by the class that runs it: float32 add/multiply/FMA "
        f"({sm['fp32']} a clock per SM), integer, compare, min/max and select ({sm['alu']}; a 64-bit "
        f"integer operation counts twice), MUFU (ex2/lg2/rcp.approx) and conversions ({sm['mufu']}), "
        f"memory ({sm['lsu']}), and every instruction against the issue rate ({sm['issue']} thread "
        "instructions a clock per SM); moves left out (ptxas drops most). The bound is in pairs a clock "
        "per SM, and for the whole GPU at its boost clock: " + ", ".join(
            f"{name} ({n} SMs, {hz / 1e9:.3g} GHz)" for name, n, hz in devices) + ". Fast math: float32 exp "
        "through ex2.approx on the MUFU (KEOMLIR_GPU_FAST_MATH=1).",
        "",
        "| kernel | fast math | PTX instr. | float32 | int/cmp/select | MUFU+cvt | memory | branch "
        "| bound pairs/clock/SM (limit) | " + " | ".join(f"{name} Gpairs/s" for name, _, _ in devices) + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * len(devices),
    ]
    for label, fast, c, (rate, limit) in gpu_rows:
        g = c.get
        lines.append(f"| {label} | {'yes' if fast else 'no'} | {g('instructions', 0):.1f} | {g('fp32', 0):.1f} | "
                     f"{g('alu', 0):.1f} | {g('mufu', 0):.1f} | {g('lsu', 0):.1f} | {g('branch', 0):.1f} | "
                     f"{rate:.2f} ({limit}) | " + " | ".join(f"{rate * n * hz / 1e9:.0f}" for _, n, hz in devices)
                     + " |")
    return lines


if __name__ == "__main__":
    main()
