"""Autotuning: candidate schedules of a program measured on the host at one size, the best
kept in the tuning database (backends/tuned.py), which every later call of that program at
sizes of the same class runs with (`keomlir tune`, `Genred(..., autotune=True)`).

The candidates are each searched field of the default schedule varied alone
(schedule/space.py), less those that generate the same code and split a call the same
way as one before.  On random data of a fixed seed each is compiled and called once: one
much slower than the default (PRUNE) goes no further.  The others race the default in
alternating pairs of samples (candidate, default, candidate, default...; a sample repeats
a short call to SAMPLE_S): one slower in every pair so far stops, one faster gets up to
PAIRS pairs, and its ratio to the default is the median of the pairs'.  The winners (a
ratio below 1 - NOISE) are combined, and the best winner and the combination run against
the default in alternating rounds of fresh samples: one is kept if its median ratio to the
default there is below 1 by more than the noise (NOISE, or the spread of those ratios) and
its median time below the default's, else the default is.  So a tuned schedule is never
measurably slower than the default at the size it was tuned for, and it computes the same
results (schedules are result-preserving by design).  The budget (seconds, compiling
included) bounds it all: a candidate that would not fit is not tried.  The candidates'
order, the data and the rules are fixed: only the timings vary from run to run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time

import numpy as np

from .backends import registry, tuned
from .backends.launch import rounded
from .schedule import host, schedule
from .schedule import space
from .schedule.record import ENV as SCHEDULE_ENV

CPU = registry.get("CPU")  # the backend whose schedules are tuned: the host's
BUDGET = 20.0  # seconds, compiling included
SEED = 0
NOISE = 0.02  # the least gain over the default that counts; below it, a difference is measurement noise
PRUNE = 1.5  # a first call this many times the default's: the candidate goes no further
SAMPLE_S = 0.05  # a timed sample repeats a shorter call until it lasts about this
PAIRS = 3  # most (candidate, default) pairs of samples of a candidate racing the default
CONFIRM = (3, 11)  # alternating rounds of the best against the default: the fewest, the most
MARGIN = 1.25  # time planned for samples: this many times what they took so far (the load varies)


def clock(overrides, call, calls):
    """Seconds per call of `call()`, which makes `calls` calls of the candidate `overrides`:
    the tuner's timer (a test gives its own, `tune(timer=...)`)."""
    t = time.perf_counter()
    call()
    return (time.perf_counter() - t) / calls


@dataclasses.dataclass
class Candidate:
    overrides: tuple  # () : the default schedule
    kernel: object = None
    first: float = 0.0  # seconds of its first call
    times: list = dataclasses.field(default_factory=list)  # seconds per call of its samples
    ratios: list = dataclasses.field(default_factory=list)  # to the default's samples beside them
    note: str = ""

    @property
    def median(self):
        return statistics.median(self.times) if self.times else math.inf

    @property
    def ratio(self):
        return statistics.median(self.ratios) if self.ratios else math.inf

    def line(self):
        name = space.text(self.overrides)
        if not self.times:
            return f"  {name:<40} {self.note}"
        note = f", {self.note}" if self.note else ""
        pairs = f"{len(self.ratios)} pair" + "s" * (len(self.ratios) != 1)
        return f"  {name:<40} {self.median:.4g} s  {self.ratio:.2f}x  ({pairs}{note})"


@dataclasses.dataclass
class Result:
    overrides: tuple  # of the tuned schedule (() : the default won)
    seconds: float  # its median time per call, in the last alternating rounds
    default_seconds: float  # the default's, in the same rounds
    candidates: list  # every candidate tried, the default first
    same: int  # candidates not tried: the same code as one before
    untried: int  # candidates not tried: over the budget
    tuning_s: float
    path: object = None  # the database entry

    @property
    def ratio(self):
        return self.seconds / self.default_seconds

    def best_line(self):
        return f"best: {space.text(self.overrides)} {self.seconds:.4g} s ({self.ratio:.2f}x the default)"


def data(launch, seed=SEED):
    """Random arguments of a launch (kernel terms): variables of about unit norm, parameters in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    rows = {0: launch.n_i, 1: launch.n_j}
    return [rounded(rng.uniform(0.5, 1.5, size=dim) if cat == 2 else rng.standard_normal((rows[cat], dim)) /
                    math.sqrt(dim), launch.dtype) for _, dim, cat in launch.program.arguments]


def check_budget(budget, what="budget"):
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < math.inf:
        raise ValueError(f"{what}: expected a positive number of seconds, got {budget!r}")
    return float(budget)


class _Session:
    """One tuning: the launch, its data, the timer, the budget and the default's samples."""

    def __init__(self, launch, budget, timer):
        self.launch, self.timer = launch, timer
        self.arrays = data(launch)
        self.deadline = time.monotonic() + budget
        self.seen = set()  # the code of each candidate kept (see `new_code`)
        self.compile_s = []
        self.default = Candidate(())
        self.calls = 1  # calls per sample

    def left(self):
        return self.deadline - time.monotonic()

    def compile(self, c):
        t = time.monotonic()
        L = self.launch
        c.kernel = CPU.compile(L.program, L.dtype, L.acc_dtype, L.sum_scheme, overrides=c.overrides)
        self.compile_s.append(time.monotonic() - t)

    def time(self, c, calls=None):
        calls = calls or self.calls

        def call():
            for _ in range(calls):
                CPU.run(self.launch, self.arrays, kernel=c.kernel)

        return self.timer(c.overrides, call, calls)

    def fits(self, samples, compiling=False):
        """Whether the budget leaves room for `samples` samples of the default (and a compilation)."""
        d = self.default
        need = MARGIN * samples * self.calls * (d.median if d.times else d.first)
        return self.left() > need + (max(self.compile_s) if compiling else 0.0)

    def new_code(self, sched):
        """False where `sched` renders the same kernel and splits the call the same way as a
        schedule seen before (it differs in fields this program's code never reads)."""
        L = self.launch
        code = (hash(CPU.emit(L.program, L.dtype, L.acc_dtype, L.sum_scheme, sched, ("llvm",))["llvm"]),
                sched.thread_plan(L.n_i, L.n_j, CPU.num_threads()))
        if code in self.seen:
            return False
        self.seen.add(code)
        return True

    def first_call(self, c):
        """Compile `c` and time a first sample (short calls: after a call untimed); False (and
        noted) where it is over PRUNE times the default's (twice, where the first call compiled
        variants of the kernel: split j)."""
        self.compile(c)
        if self.calls > 1:
            CPU.run(self.launch, self.arrays, kernel=c.kernel)
        loaded = CPU.kernels_loaded()
        c.first = self.time(c)
        limit = PRUNE * self.default.first
        if c.first > limit and (CPU.kernels_loaded() == loaded or self.time(c) > limit):
            c.note = f"pruned: first sample {c.first:.4g} s, {c.first / self.default.first:.1f}x the default's"
            return False
        return True

    def pair(self, c):
        """One sample of `c`, then one of the default: their ratio."""
        mine, theirs = self.time(c), self.time(self.default)
        c.times.append(mine)
        self.default.times.append(theirs)
        c.ratios.append(mine / theirs)

    def race(self, c):
        """Pairs of `c` and the default while `c` was faster in one of them, up to PAIRS (and while
        the confirmation still fits the budget)."""
        while len(c.ratios) < PAIRS and (not c.ratios or min(c.ratios) < 1) and self.fits(2 + 2 * CONFIRM[0]):
            self.pair(c)


def tune(launch, budget=BUDGET, fields=None, timer=clock, out=None, store=True):
    """Tune the schedule of a checked dense `launch` (its program, types and sizes) on the host
    within `budget` seconds; `fields`: search only these (default: every searched field);
    `out(line)` receives the report.  Stores the result (`store`) and returns a `Result`."""
    budget = check_budget(budget)
    if os.environ.get(SCHEDULE_ENV):
        raise ValueError(f"${SCHEDULE_ENV} is set ({os.environ[SCHEDULE_ENV]!r}): tuning measures schedules "
                         f"against the default one; unset it")
    if launch.ranges is not None:
        raise ValueError("tuning measures dense calls: block-sparse (ranges) calls keep the default schedule")
    if not launch.n_i or not launch.n_j:
        raise ValueError(f"sizes: M = {launch.n_i}, N = {launch.n_j}: nothing to tune, a call of no rows i or j")
    say = out or (lambda line: None)
    L, target = launch, host()
    s = _Session(launch, budget, timer)
    options = space.candidates(L.program, target, L.dtype, fields)
    say(f"tuning {L.program.reduction} at M = {L.n_i} output rows, N = {L.n_j} reduced rows "
        f"({tuned.class_text(L.n_i, L.n_j)}), {L.dtype}, on {target.name} ({target.cpu}, {CPU.num_threads()} "
        f"threads), budget {budget:g} s")
    default = s.default
    s.compile(default)
    s.new_code(default.kernel.schedule)
    loaded = CPU.kernels_loaded()
    default.first = max(s.time(default, 1), 1e-9)
    s.calls = max(1, math.ceil(SAMPLE_S / default.first))
    if s.calls > 1 or CPU.kernels_loaded() != loaded:  # (a short call, or one that compiled variants: split j)
        default.first = s.time(default)
    tried, same, untried = [], 0, 0
    for k, (overrides, sched) in enumerate(options):
        # room for compiling it, its first sample and a pair, then for confirming against the default
        if not s.fits(PRUNE + 2 + 2 * CONFIRM[0], compiling=True):
            untried = len(options) - k
            break
        if not s.new_code(sched):
            same += 1
            continue
        c = Candidate(overrides)
        tried.append(c)
        if s.first_call(c):
            s.race(c)
        say(c.line())
    say(f"{len(options)} candidates: {len(tried)} tried, {same} the same code as one before, {untried} not tried "
        f"(budget); the default {default.median if default.times else default.first:.4g} s")
    winners = sorted((c for c in tried if c.ratio < 1 - NOISE), key=lambda c: c.ratio)
    contenders = winners[:1] + _combination(s, winners)
    best, seconds, default_s = _confirm(s, contenders, say)
    found = Result(best.overrides, seconds, default_s, [default] + tried, same, untried, budget - s.left())
    if store:
        found.path = tuned.store(L.program, L.dtype, L.acc_dtype, L.sum_scheme, L.n_i, L.n_j,
                                 space.text(best.overrides) if best.overrides else "",
                                 {"seconds": seconds, "default_seconds": default_s, "sizes": [L.n_i, L.n_j],
                                  "threads": CPU.num_threads(), "budget": budget, "tuning_s": found.tuning_s})
    say(f"tuning took {found.tuning_s:.1f} s" + (f"; stored in {found.path}" if store else ""))
    say(found.best_line())
    return found


def _combination(s, winners):
    """The winners' overrides joined (best first; one that conflicts or that the program
    refuses left out), as a candidate of its own: [] where that is one of them."""
    L = s.launch
    joined = winners[0].overrides if winners else ()
    for w in winners[1:]:
        merged = space.combine(joined, w.overrides)
        try:
            if merged and s.new_code(schedule(L.program, host(), dtype=L.dtype, overrides=merged)):
                joined = merged
        except ValueError:  # not a schedule of this program
            pass
    if len(winners) < 2 or joined == winners[0].overrides or not s.fits(PRUNE + 3 * CONFIRM[0], compiling=True):
        return []
    c = Candidate(joined, note="the winners combined")
    return [c] if s.first_call(c) else []


def _confirm(s, contenders, say):
    """(best, its seconds, the default's): the contenders and the default in alternating
    rounds of fresh samples; the best contender if it beats the default beyond the noise,
    else the default (also where fewer than CONFIRM[0] rounds fit the budget)."""
    default = s.default
    base = default.median if default.times else default.first

    def rounds_left(pool):
        cost = MARGIN * s.calls * sum(c.median if c.times else c.first for c in pool)  # (seconds of a round)
        return min(CONFIRM[1], int(s.left() / cost))

    pool = [default] + contenders
    while len(pool) > 1 and rounds_left(pool) < CONFIRM[0]:
        pool.pop()  # (the combination first, then the best winner)
    if len(pool) == 1:
        if contenders:
            say(f"no time left for {CONFIRM[0]} rounds against the default: the default is kept")
        return default, base, base
    contenders, rounds = pool[1:], rounds_left(pool)
    for c in pool:
        c.times, c.ratios = [], []
    done, took = 0, 0.0
    while done < rounds and (done < CONFIRM[0] or s.left() > MARGIN * took):  # (the load may have grown)
        t = time.monotonic()
        theirs = s.time(default)
        default.times.append(theirs)
        for c in contenders:
            c.times.append(s.time(c))
            c.ratios.append(c.times[-1] / theirs)
        done, took = done + 1, time.monotonic() - t
    rounds, base = done, default.median
    best, seconds = default, base
    for c in contenders:
        middle = c.ratio
        noise = max(NOISE, statistics.median(abs(r - middle) for r in c.ratios))
        if middle < 1 - noise and c.median < seconds:
            best, seconds = c, c.median
    say(f"against the default in {rounds} alternating rounds: default {base:.4g} s; "
        + "; ".join(f"{space.text(c.overrides)} {c.median:.4g} s, {c.ratio:.2f}x" for c in contenders))
    return best, seconds, base


def ensure(launch, budget=BUDGET):
    """Before a call of an autotuned reduction: tune its program at the call's size class
    unless the database holds it already (or the schedule is set by hand)."""
    if launch.ranges is None and launch.n_i and launch.n_j and not launch.schedule and not os.environ.get(
            SCHEDULE_ENV) and tuned.lookup(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme,
                                           launch.n_i, launch.n_j) is None:
        tune(launch, budget)
