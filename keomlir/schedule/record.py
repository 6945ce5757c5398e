"""The Schedule: every decision of how one program runs on one target, by name.

`schedule()` (choose.py) makes it; the renderers, the CPU and CUDA runtimes and
keomlir.dask read it and decide nothing themselves.  It prints as a `schedule:`
block, one `name = value` line a field (`keomlir ir --target T`), and users
override fields by name (`Genred(..., schedule={...})`, `keomlir ir --schedule
rows=4,cache_block=256KiB`, $KEOMLIR_SCHEDULE): `parse_overrides` checks the names
and values here, `schedule()` what a program allows.  No override changes
results beyond rounding: each is a different loop nest of the same reduction.
"""

from __future__ import annotations

import dataclasses
import os

from . import strategies
from .targets import KiB, MiB, Target, size_text

ENV = "KEOMLIR_SCHEDULE"
GPU_PLANS = ("auto", "1d", "2d")


@dataclasses.dataclass(frozen=True)
class Schedule:
    target: Target
    dtype: str
    strategy: str
    wide_threshold: int = 16
    wide_nodes: tuple = ()
    # ---- CPU
    vector_bits: int = 0
    rows: int = 1
    sum_block: int = 512
    contract: tuple = ()
    screen_trial: int = 64
    cache_block: int = 0
    chunk_rows: int = 256
    chunk_bytes: int = 64 * KiB
    column_arg: int | None = None
    column_block: int = 0
    column_vectors: int = 4
    contract_accumulators: int = 16
    column_accumulators: int = 24
    min_pairs_per_thread: int = 1 << 16
    split_j_below_rows: int = 64
    threads: int | None = None
    thread_strategy: str | None = None
    # ---- GPU
    block: int = 256
    tile: int = 256
    stage: bool = True
    fast_math: bool = False
    merge_block: int = 128
    fan: int = 32
    plan: str = "auto"
    chunk: int | None = None

    @property
    def lanes(self):
        """SIMD lanes across j for the dtype (None: no SIMD)."""
        return self.vector_bits // (64 if self.dtype == "float64" else 32) if self.vector_bits else None

    @property
    def screen(self):
        return strategies.STRATEGIES[self.strategy].rules == "screened"

    def fields(self):
        """(name, value) of the fields of this target's kind, in order."""
        kind = self.target.kind
        return [(name, getattr(self, name)) for name, f in FIELDS.items() if f.kind in ("all", kind)]

    def text(self):
        """`schedule:` then one `name = value` line a field."""
        return "\n".join(["schedule:"] + [f"  {name} = {FIELDS[name].show(value)}" for name, value in self.fields()])

    def key(self):
        """The fields that make the code, for cache keys (the size-dependent ones and those only
        the runtime reads left out)."""
        return ";".join(f"{n}={FIELDS[n].show(v)}" for n, v in self.fields()
                        if not (FIELDS[n].per_call or FIELDS[n].runtime))

    def thread_plan(self, n_i, n_j, available):
        """(threads, 'one' | 'rows' | 'split_j') of a CPU call: rows over threads, or for few rows
        per thread, j over threads with the partial states merged in order of j."""
        threads = min(available, max(1, (n_i * max(n_j, 1)) // self.min_pairs_per_thread))
        if threads <= 1:
            return 1, "one"
        return threads, "rows" if n_i >= threads * self.split_j_below_rows else "split_j"


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str  # "all", "cpu" or "gpu"
    doc: str
    type: str = "int"  # int, bytes, bool, choice, names, derived
    low: int = 1  # least value of an int or bytes
    high: int | None = None  # greatest
    multiple: int = 1
    choices: tuple = ()
    per_call: bool = False  # depends on the call's sizes (not in cache keys)
    runtime: bool = False  # read by the runtime at each call, not by the code generator (not in cache keys)
    search: bool = False  # varied by `keomlir tune` (schedule/space.py: halved and doubled, or each choice)
    cap: str | None = None  # the Target attribute a searched value may not exceed

    def show(self, value):
        if value is None:
            return "per call" if self.per_call else "none"
        if isinstance(value, Target):
            return value.name
        if isinstance(value, bool):
            return "on" if value else "off"
        if self.type == "bytes":
            return size_text(value)
        if isinstance(value, tuple):
            return " ".join(map(str, value)) or "none"
        return str(value)

    def parse(self, name, value, what="schedule"):
        """The value of an override (a Python value or text), checked, or a ValueError."""
        def bad(expected):
            return ValueError(f"{what}: {name}={value!r} is not valid: expected {expected} ({self.doc})")

        if self.type == "derived":
            raise ValueError(f"{what}: {name} is not set but follows from the others ({self.doc}); "
                             f"settable fields: {', '.join(settable())}")
        if self.type == "bool":
            words = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False,
                     "0": False}
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in words:
                return words[value.strip().lower()]
            raise bad("on or off")
        if self.type == "choice":
            if value not in self.choices:
                raise bad(f"one of {', '.join(self.choices)}")
            return value
        if self.type == "names":
            if isinstance(value, str):
                value = [] if value.strip() in ("", "none") else value.replace("+", " ").split()
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.startswith("%")
                                                                for v in value):
                raise bad("SSA names of nodes, e.g. %3 or %3+%7, or none")
            return tuple(value)
        number = _bytes(value) if self.type == "bytes" else _int(value)
        if number is None:
            raise bad("a size such as 65536, 256KiB or 1MiB" if self.type == "bytes" else "an integer")
        if self.choices and number not in self.choices:
            raise bad(f"one of {', '.join(map(str, self.choices))}")
        if number < self.low or number % self.multiple or (self.high is not None and number > self.high):
            also = f", a multiple of {self.multiple}" if self.multiple > 1 else ""
            most = f", at most {self.high}" if self.high is not None else ""
            raise bad(f"at least {self.low}{most}{also}")
        return number


def _int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _bytes(value):
    if isinstance(value, str):
        text = value.strip()
        for unit, scale in (("KiB", KiB), ("MiB", MiB), ("K", KiB), ("M", MiB), ("B", 1), ("", 1)):
            if text.endswith(unit) and text[:len(text) - len(unit)].strip().isdigit():
                return int(text[:len(text) - len(unit)]) * scale
        return None
    return _int(value)


FIELDS = {
    "target": Field("all", "the machine (see `keomlir ir --target`)", "derived"),
    "dtype": Field("all", "the data's floating-point type", "derived"),
    "strategy": Field("all", "the loop nest: lanes (SIMD across j), contraction (wide SqDist / scalar products "
                      "of a tile of rows as one register-blocked micro-kernel), screened (a K-min of SqDist "
                      "ranked by its expanded form), columns (K @ B by blocks of B's columns), threads (GPU: "
                      "one thread a row), or a loop nest registered with keomlir.backends.llvm.strategies",
                      "choice", choices=strategies.NAMES, search=True),
    "wide_threshold": Field("all", "components above which a node is a loop over components, not unrolled",
                            search=True),
    "wide_nodes": Field("all", "the nodes over wide_threshold or with such an operand", "derived"),
    "vector_bits": Field("cpu", "SIMD width across j", choices=(128, 256, 512), search=True, cap="vector_bits"),
    "lanes": Field("cpu", "j per SIMD vector: vector_bits over the arithmetic's bits (float32 for half data)",
                   "derived"),
    "rows": Field("cpu", "i rows sharing each load of j data (register tile)", high=32, search=True),
    "sum_block": Field("cpu", "j per block of the compensated sum", multiple=64, low=64, search=True),
    "contract": Field("cpu", "wide contractions run as one register-blocked micro-kernel per tile of rows",
                      "names"),
    "screen_trial": Field("cpu", "row-vectors screened before a useless screen is given up"),
    "cache_block": Field("cpu", "j data per cache block read by every tile of a chunk of rows (0: none)",
                         "bytes", low=0, search=True),
    "chunk_rows": Field("cpu", "most rows of a cache-blocked chunk", search=True),
    "chunk_bytes": Field("cpu", "most bytes of a chunk's states on the stack", "bytes", low=64),
    "column_arg": Field("cpu", "the argument b of a Sum of s * b run by blocks of its columns", "derived"),
    "column_block": Field("cpu", "columns of b per call of the column kernel", multiple=16, low=16,
                          search=True),
    "column_vectors": Field("cpu", "column vectors of b per register tile of the column kernel", high=16,
                            search=True),
    "contract_accumulators": Field("cpu", "vector registers holding a contraction micro-kernel's sums",
                                   search=True),
    "column_accumulators": Field("cpu", "vector registers holding the column kernel's sums"),
    "min_pairs_per_thread": Field("cpu", "(i, j) pairs that make another thread worth starting", runtime=True,
                                  search=True),
    "split_j_below_rows": Field("cpu", "rows per thread below which threads split j instead of rows", low=0,
                                runtime=True, search=True),
    "threads": Field("cpu", "threads of a call of the given sizes", "derived", per_call=True),
    "thread_strategy": Field("cpu", "how a call of the given sizes splits: one, rows or split_j", "derived",
                             per_call=True),
    "block": Field("gpu", "threads per block of the 1-D and partial kernels", high=1024),
    "tile": Field("gpu", "j rows per tile (staged in shared memory, and a block of the compensated sum)"),
    "stage": Field("gpu", "j tiles staged in shared memory", "bool"),
    "fast_math": Field("gpu", "float32 exp and log through the approximate ex2 and lg2", "bool"),
    "merge_block": Field("gpu", "threads per block of the merges of the 2-D scheme", high=1024),
    "fan": Field("gpu", "states merged per thread in one merge pass of the 2-D scheme", low=2),
    "plan": Field("gpu", "1d (a thread a row over every j), 2d (j split across blocks, states merged) or auto",
                  "choice", choices=GPU_PLANS, per_call=True),
    "chunk": Field("gpu", "j per block of the 2-D scheme", per_call=True),
}


def settable():
    return [name for name, f in FIELDS.items() if f.type != "derived"]


def parse_overrides(spec, what="schedule"):
    """Overrides as a sorted tuple of (field, checked value): from None, a dict, (field, value)
    pairs, or text 'rows=4,cache_block=256KiB'.  Unknown fields are errors naming the valid ones."""
    if spec is None or spec == "" or spec == ():
        return ()
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{what}: {item.strip()!r} is not name=value; settable fields: "
                                 f"{', '.join(settable())}")
            pairs.append((name.strip(), value.strip()))
    elif isinstance(spec, dict):
        pairs = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        pairs = [tuple(p) for p in spec]
    else:
        raise TypeError(f"{what}: expected a dict such as {{'rows': 4}}, or text 'rows=4,...', "
                        f"got {type(spec).__name__}")
    found = {}
    for name, value in pairs:
        if name not in FIELDS:
            raise ValueError(f"{what}: unknown field {name!r}; settable fields: {', '.join(settable())}")
        found[name] = FIELDS[name].parse(name, value, what)
    return tuple(sorted(found.items()))


def env_overrides():
    """$KEOMLIR_SCHEDULE's overrides (checked: a bad one is a clear error at the first compile)."""
    return _env(os.environ.get(ENV, ""))


_parsed = {}


def _env(text):
    found = _parsed.get(text)
    if found is None:
        found = _parsed[text] = parse_overrides(text, ENV)
    return found


def with_env(overrides):
    """$KEOMLIR_SCHEDULE's overrides, then `overrides` (they win)."""
    return tuple(sorted({**dict(env_overrides()), **dict(overrides)}.items()))
