"""`keomlir bench`: how fast a formula's kernel runs here, against what the machine could do.

Random inputs of the sizes asked; each variant (the default pipeline and schedule, then
one per `--passes` and per `--schedule` given) compiled and run once, then timed in
alternating rounds (so that a change of the machine's load hits every variant alike);
the median time of each, pairs per second, GFLOP/s counted from the optimized IR
(`backends/llvm/flops.py`) and the fraction of the target's peak (`Target.peak_flops`).  Every
variant's output is checked against the reference backend on a slice of its rows.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from ..backends import registry
from ..backends.launch import rounded
from ..compile import DTYPES, CompiledReduction
from ..passes import DEFAULT_PIPELINE, PassManager, split_pipeline
from ..schedule import parse_overrides
from ..schedule import host

CHECK_PAIRS = 1_000_000  # pairs the reference computes for the check (its F is dense: memory M x N x dim)
# of the largest output, for the check (half data: its rounding, 2^-11 and 2^-8, with room)
TOLERANCE = {"float32": 1e-3, "float64": 1e-9, "float16": 4e-3, "bfloat16": 3e-2}


@dataclasses.dataclass
class Variant:
    """One way of compiling the formula and what it measured."""

    name: str
    passes: tuple
    schedule: str | None
    times: list = dataclasses.field(default_factory=list)
    flops_pair: int = 0
    flops_row: int = 0
    error: float = 0.0  # the check's largest difference from the reference, relative to its largest value
    checked_rows: int = 0

    @property
    def median(self):
        return statistics.median(self.times)


@dataclasses.dataclass
class BenchResult:
    sizes: tuple  # (M, N): rows of the i and j variables
    dtype: str
    variants: list
    peak: float | None  # FLOP/s, or None where the target's FMA units or clock are unknown
    peak_text: str
    axis: int = 1

    def rate(self, v):
        m, n = self.sizes
        pairs = m * n
        gflops = (v.flops_pair * pairs + v.flops_row * self._rows()) / v.median / 1e9
        return pairs / v.median / 1e9, gflops, (100 * gflops * 1e9 / self.peak if self.peak else None)

    def _rows(self):
        return self.sizes[0] if self.axis == 1 else self.sizes[1]

    @property
    def passed(self):
        return all(v.error <= TOLERANCE[self.dtype] for v in self.variants)

    def lines(self):
        """The table of variants, the check, then a last line with the first variant's rates."""
        base = self.variants[0]
        rows = [f"{'variant':<24} {'median s':>10} {'Gpairs/s':>9} {'GFLOP/s':>9} {'% peak':>7} {'ratio':>6}"]
        for v in self.variants:
            gpairs, gflops, frac = self.rate(v)
            rows.append(f"{v.name[:24]:<24} {v.median:10.4g} {gpairs:9.3f} {gflops:9.2f} "
                        f"{'-' if frac is None else f'{frac:.1f}':>7} {base.median / v.median:6.2f}")
        m, n = self.sizes
        rows.append(f"{m} x {n} pairs, {self.dtype}, {len(base.times)} alternating rounds; FLOP per pair "
                    f"{base.flops_pair} (counted from the optimized IR); peak {self.peak_text}")
        for v in self.variants:
            verdict = "ok" if v.error <= TOLERANCE[self.dtype] else "MISMATCH"
            rows.append(f"check {v.name}: {verdict}, largest difference from the reference on {v.checked_rows} "
                        f"rows {v.error:.2e} of the largest output (tolerance {TOLERANCE[self.dtype]:g})")
        gpairs, gflops, frac = self.rate(base)
        share = "unknown % of peak" if frac is None else f"{frac:.1f} % of peak"
        rows.append(f"{base.name}: {base.median:.4g} s, {gpairs:.3f} Gpairs/s, {gflops:.2f} GFLOP/s, {share}")
        return rows

    def to_dict(self):
        """For the page: one dict per variant with its rates."""
        out = []
        for v in self.variants:
            gpairs, gflops, frac = self.rate(v)
            out.append({"variant": v.name, "median_s": v.median, "gpairs_s": gpairs, "gflop_s": gflops,
                        "percent_of_peak": frac, "ratio": self.variants[0].median / v.median,
                        "check_error": v.error})
        return {"sizes": list(self.sizes), "dtype": self.dtype, "peak": self.peak_text, "variants": out}


def parse_sizes(text, option="--size"):
    """(M, N) from 'M,N' (two positive integers); None for None."""
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"{option}: expected M,N (two positive integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def peak_text(target, dtype):
    peak = target.peak_flops(dtype)
    if peak is None:
        missing = [n for n in ("fma_units", "clock_hz") if not getattr(target, n)]
        return None, f"unknown ({' and '.join(missing)} of {target.cpu} unknown)"
    lanes = target.vector_bits // (64 if dtype == "float64" else 32)
    return peak, (f"{peak / 1e9:.1f} GFLOP/s = {lanes} lanes x {target.fma_units} FMA units x 2 x "
                  f"{target.clock_hz / 1e9:.2f} GHz x {target.cores} cores")


def variants(passes=(), schedules=(), default=tuple(DEFAULT_PIPELINE)):
    """The default (the pipeline `default`), then one variant per pipeline and per schedule
    override given."""
    found = [Variant("default", tuple(default), None)]
    for p in passes:
        names = tuple(split_pipeline(p)) if isinstance(p, str) else tuple(p)
        found.append(Variant(f"passes={','.join(names)}", names, None))
    for s in schedules:
        found.append(Variant(f"schedule={s}", tuple(default), s))
    return found


def random_inputs(red, sizes, dtype, seed=0):
    """Standard normal arrays of the reduction's arguments: Vi with M rows, Vj with N."""
    rng = np.random.default_rng(seed)
    m, n = sizes
    return [rounded(rng.standard_normal((dim,) if cat == 2 else (m if cat == 0 else n, dim)), dtype)
            for _, dim, cat in red.arguments]


def _check(red, arrays, outs, axis, written):
    """The largest difference between the outputs' first rows and the reference's on the
    program `written` (the formula as written: no pass run), derivatives expanded, relative to the
    reference's largest value; and the rows checked."""
    out_cat = 0 if axis == 1 else 1  # the category whose rows are the output's
    rows = next((len(a) for a, (_, _, c) in zip(arrays, red.arguments) if c == out_cat), 1)
    other = next((len(a) for a, (_, _, c) in zip(arrays, red.arguments) if c == 1 - out_cat), 1)
    widest = max([1] + [d for _, d, _ in red.arguments])
    s = max(1, min(rows, CHECK_PAIRS // max(1, other * widest)))
    sliced = [a[:s] if c == out_cat else a for a, (_, _, c) in zip(arrays, red.arguments)]
    launch = red.launch(sliced)
    written = PassManager(["autodiff"]).run(written)
    expected = registry.get("reference").run(dataclasses.replace(launch, program=written, dtype="float64"), sliced)
    worst = 0.0
    for got, want in zip(outs, expected):
        got, want = np.asarray(got[:s], np.float64), np.asarray(want, np.float64)
        scale = np.nanmax(np.abs(want[np.isfinite(want)])) if np.isfinite(want).any() else 1.0
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        diff = np.where(same, 0.0, np.abs(got - want))
        worst = max(worst, float(np.max(diff, initial=0.0)) / max(scale, np.finfo(np.float64).tiny))
    return worst, s


def bench(formula, aliases, reduction_op="Sum", axis=1, opt_arg=None, formula2=None, sizes=(1000, 1000),
          dtype="float32", passes=(), schedules=(), rounds=None, seconds=2.0, seed=0, kir=None):
    """Measure each variant (see `variants`) on the same random inputs; a `BenchResult`.
    `rounds`: how many alternating rounds (default: as many as fit in `seconds`, 3 to 100).
    `kir`: a read `.kir` text (`schedule.kir.parse_kir`) to bench instead of the formula: its
    program as it is (the default variant runs no pass), with its schedule's decisions."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if len(sizes) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in sizes):
        raise ValueError(f"sizes: expected (M, N), two positive integers, got {sizes!r}")
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise ValueError(f"rounds: expected a positive integer, got {rounds!r}")
    target = host()
    found = variants(passes, schedules, DEFAULT_PIPELINE if kir is None else ())
    reds = []
    for v in found:
        if kir is None:
            red = CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2, passes=v.passes,
                                    schedule=v.schedule)
        else:
            red = CompiledReduction.from_program(PassManager(list(v.passes)).run(kir.program),
                                                 schedule=kir.decisions + parse_overrides(v.schedule))
        flops = registry.get("CPU").flops(red.program, dtype, target)
        v.flops_pair, v.flops_row = flops.pair, flops.row
        reds.append(red)
    arrays = random_inputs(reds[0], sizes, dtype, seed)
    for v, red in zip(found, reds):  # compile, warm the caches, check
        written = red.parsed if kir is None else kir.program
        v.error, v.checked_rows = _check(red, arrays, red.run_numpy(arrays, "CPU"), axis, written)
    start = time.perf_counter()
    k = 0
    while (k < rounds) if rounds is not None else (k < 3 or (time.perf_counter() - start < seconds and k < 100)):
        for v, red in zip(found, reds):
            t = time.perf_counter()
            red.run_numpy(arrays, "CPU")
            v.times.append(time.perf_counter() - t)
        k += 1
    peak, text = peak_text(target, dtype)
    return BenchResult(tuple(int(s) for s in sizes), dtype, found, peak, text, axis)
