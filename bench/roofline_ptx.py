"""The NVPTX half of bench/roofline.md: the GPU kernels' operations per pair, counted in
their PTX, and the bound they imply on an sm_90 GPU (H100), to be checked against a
measured rate once a GPU is lent (bench/gpu_bench.py measures the Gaussian's).

The kernel is `keomlir_1d` (one thread per row i, j in tiles staged in shared memory).
Its j loop is the loop whose common path (the path back to its head with the fewest
instructions: no K-min insertion) loads at least a whole j row from shared memory, an
inner loop (over the components of a wide variable) counted by its trip count.  PTX is
not the machine code (ptxas folds negations into operands, drops moves, may schedule
otherwise), so the counts are of PTX instructions, moves left out.

Throughputs per SM per clock, compute capability 9.0 (the CUDA C++ Programming Guide's
table of arithmetic instruction throughput): 128 float32 add/multiply/FMA; 64 float64;
64 32-bit integer add/shift/logic/multiply-add, compares, min/max and selects (one
class here: `alu`); 16 MUFU operations (ex2/lg2/rcp/rsqrt/sin/cos.approx) and 16
conversions (cvt, including float rounding); 32 shared/local/global memory
instructions (one per warp per clock); and 4 warp instructions issued a clock (128
thread instructions).  A 64-bit integer add, compare or shift counts twice.
"""

from __future__ import annotations

import heapq
import re

SM90 = {"fp32": 128, "fp64": 64, "alu": 64, "mufu": 16, "lsu": 32, "issue": 128}
# the GPUs the bound is given for: (name, SMs, boost clock in Hz)
DEVICES = [("H100 SXM5", 132, 1.98e9), ("H100 PCIe", 114, 1.755e9)]

_MUFU = re.compile(r"^(ex2|lg2|rcp|rsqrt|sin|cos|tanh)\.approx")
_MEM = re.compile(r"^(ld|st|atom|red)\.")
_FP = re.compile(r"^(add|sub|mul|fma|neg|abs|mad)\.")
_FREE = ("mov", "bar", "ret", "exit")


def classify(instr):
    """{class: count} of one PTX instruction (an empty dict: free or not counted)."""
    op = instr.split()[0]
    if op.startswith("@"):
        op = instr.split()[1]
    if op.startswith(_FREE):
        return {}
    if op.startswith("bra"):
        return {"branch": 1}
    if _MUFU.match(op):
        return {"mufu": 1}
    if op.startswith("cvt"):
        # an integer truncation or widening picks registers; other conversions go through the 16/clock unit
        kinds = re.findall(r"\.([usf]\d+)", op)
        if len(kinds) >= 2 and all(k[0] in "us" for k in kinds[:2]):
            return {}
        return {"mufu": 1}
    if _MEM.match(op):
        return {"lsu": 1}
    wide = ".s64" in op or ".u64" in op or ".b64" in op
    if ".f64" in op:
        return {"fp64": 1}
    if _FP.match(op) and ".f32" in op:
        return {"fp32": 1}
    return {"alu": 2 if wide else 1}


class Kernel:
    """The basic blocks of one entry of a PTX module: labels, instructions, successors."""

    def __init__(self, ptx, entry="keomlir_1d"):
        body = ptx.split(f".entry {entry}(", 1)[1]
        body = body[body.index("{") + 1:]
        self.blocks, self.instrs, self.succ = [], {}, {}
        current = "entry"
        self.blocks.append(current)
        self.instrs[current] = []
        for raw in body.splitlines():
            line = raw.split("//")[0].strip()
            if not line:
                continue
            if line == "}":
                break
            m = re.match(r"^(\$L__\w+):$", line)
            if m:
                current = m.group(1)
                self.blocks.append(current)
                self.instrs[current] = []
                continue
            if line.endswith(";") and not line.startswith("."):
                self.instrs[current].append(line[:-1])
                if re.search(r"\bbra\b", line.split()[1] if line.startswith("@") else line.split()[0]):
                    current = f"after {len(self.blocks)}"  # a branch ends its block
                    self.blocks.append(current)
                    self.instrs[current] = []
        for k, name in enumerate(self.blocks):
            out = [m.group(1) for i in self.instrs[name] for m in [re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+)", i)]
                   if m]
            last = self.instrs[name][-1] if self.instrs[name] else ""
            if not last.startswith(("bra", "ret")) and k + 1 < len(self.blocks):
                out.append(self.blocks[k + 1])  # falls through (or a conditional branch not taken)
            self.succ[name] = out
        self.pos = {name: k for k, name in enumerate(self.blocks)}

    def loops(self):
        """{head: set of blocks} of the natural loops (an edge back to a block at or before it)."""
        pred = {b: [] for b in self.blocks}
        for b, outs in self.succ.items():
            for s in outs:
                pred[s].append(b)
        found = {}
        for b, outs in self.succ.items():
            for head in outs:
                if self.pos[head] <= self.pos[b]:
                    body, stack = {head, b}, [b]
                    while stack:
                        for p in pred[stack.pop()]:
                            if p not in body:
                                body.add(p)
                                stack.append(p)
                    found.setdefault(head, set()).update(body)
        return found


def _words(instr):
    """32-bit words a shared-memory load reads."""
    m = re.match(r"^ld\.shared(?:\.v(\d))?\.b(\d+)", instr)
    return int(m.group(1) or 1) * int(m.group(2)) // 32 if m else 0


def common_path(kernel, head, body, loops, j_row, depth=0):
    """(instructions [(instr, count)], shared words loaded) of the loop's cheapest path from its
    head back to it, inner loops (heads in body) counted by their trip counts: the words left
    of a j row after the rest of the path, over their own words per iteration."""
    inner = {h: b for h, b in loops.items() if h != head and h in body and b < body}
    # blocks of an inner loop are entered through its head only: collapse each into its head
    owner = {}
    for h, b in inner.items():
        if not any(h in b2 and b < b2 for h2, b2 in inner.items() if h2 != h):
            for x in b:
                owner[x] = h
    cost = {}
    for h in {owner[x] for x in owner}:
        path, words = common_path(kernel, h, inner[h], loops, j_row, depth + 1)
        cost[h] = (path, words)

    def node(x):
        return owner.get(x, x)

    def weight(x):
        return sum(n for _, n in cost[x][0]) if x in cost else len(kernel.instrs[x])

    def exits(x):
        if x in cost:
            return [s for b in inner[x] for s in kernel.succ[b] if s not in inner[x]]
        return kernel.succ[x]

    # Dijkstra over the collapsed blocks of body, back to head
    best, queue, prev = {head: weight(head)}, [(weight(head), head)], {}
    done = None
    while queue:
        d, x = heapq.heappop(queue)
        if d > best.get(x, float("inf")):
            continue
        for s in exits(x):
            if s not in body:
                continue
            if s == head:
                if done is None or d < done[0]:
                    done = (d, x)
                continue
            s = node(s)
            nd = d + weight(s)
            if nd < best.get(s, float("inf")):
                best[s], prev[s] = nd, x
                heapq.heappush(queue, (nd, s))
    chain, x = [], done[1]
    while True:
        chain.append(x)
        if x == head:
            break
        x = prev[x]
    chain.reverse()
    outer_words = sum(_words(i) for x in chain if x not in cost for i in kernel.instrs[x])
    path = []
    for x in chain:
        if x in cost:
            ipath, iwords = cost[x]
            trips = max(1.0, (j_row - outer_words) / iwords) if iwords else 1.0
            path += [(i, n * trips) for i, n in ipath]
        else:
            path += [(i, 1) for i in kernel.instrs[x]]
    words = sum(_words(i) * n for i, n in path)
    return path, words


def per_pair(ptx, j_row):
    """Counts per pair {class: n} of keomlir_1d's j loop (see the module docstring), and
    'instructions' (every counted instruction)."""
    kernel = Kernel(ptx)
    loops = kernel.loops()
    candidates = []
    for head, body in loops.items():
        path, words = common_path(kernel, head, body, loops, j_row)
        if words >= j_row:
            candidates.append((len(body), path, words))
    _, path, words = min(candidates, key=lambda c: c[0])
    pairs = words / j_row
    counts = {}
    for instr, n in path:
        for cls, k in classify(instr).items():
            counts[cls] = counts.get(cls, 0) + k * n / pairs
    counts["instructions"] = sum(v for k, v in counts.items())
    return counts


def sm_bound(counts):
    """(pairs per clock per SM, limiting class) on sm_90."""
    cycles = [(counts.get(cls, 0) / SM90[cls], cls) for cls in ("fp32", "fp64", "alu", "mufu", "lsu")]
    cycles.append((counts.get("instructions", 0) / SM90["issue"], "issue"))
    worst = max(cycles)
    return 1 / worst[0], worst[1]
