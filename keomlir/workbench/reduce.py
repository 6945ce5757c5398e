"""`keomlir reduce`: shrink a formula while a test stays true (delta debugging, as C-Reduce
and llvm-reduce do for C and LLVM IR).

A case is a formula (and formula2) over aliases.  Each round proposes smaller cases
(a node replaced by one of the nodes below it, by an alias's variable or by the constant
1; an alias's dimension lowered to 1), smallest first, and keeps the first for which the
test still holds; it stops when no proposal does (the case is then minimal for these
moves) or the time budget is spent.  Tests (`Compare`, `Crash`, `Command`):

- two sides disagree beyond a tolerance, a side being a backend (cpu, reference) and a
  pass pipeline, or the formula as written (derivatives expanded) on the reference;
- compiling and running raises (the same kind of exception as the formula given);
- a user's shell command exits with a given status, the case in its environment.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import time

import numpy as np

from ..compile import CompiledReduction, parse_aliases
from ..grammar import parse_formula
from ..ir import make, replace_vars, variables
from ..ir.node import DimensionError, ssa_nodes, to_formula
from ..passes import DEFAULT_PIPELINE

WRITTEN = "written"  # the pipeline of the formula as written: derivatives expanded, nothing else
BACKENDS = {"cpu": "CPU", "reference": "reference"}  # the name here: CompiledReduction.run_numpy's
CATEGORY_TEXT = {0: "Vi", 1: "Vj", 2: "Pm"}


@dataclasses.dataclass(frozen=True)
class Case:
    """A reduction to test: formulas over aliases whose positions are 0, 1, 2, ..."""

    formula: object  # Node
    formula2: object  # Node or None
    names: tuple  # ((alias, Var node), ...), by position
    reduction: str = "Sum"
    axis: int = 1
    opt_arg: int | None = None

    @property
    def roots(self):
        return [r for r in (self.formula, self.formula2) if r is not None]

    def size(self):
        """Distinct nodes of the formulas (variables included)."""
        return len(ssa_nodes([(None, r) for r in self.roots]))

    def weight(self):
        """What a move must lower: the nodes, then the variables' dimensions."""
        return self.size(), sum(v.dim for v in _variables(*self.roots))

    def labels(self):
        return {v.attrs: name for name, v in self.names}

    def text(self):
        return to_formula(self.formula, self.labels())

    def text2(self):
        return None if self.formula2 is None else to_formula(self.formula2, self.labels())

    def aliases(self):
        return [f"{name} = {CATEGORY_TEXT[v.attrs[2]]}({v.attrs[1]})" for name, v in self.names]

    def argv(self):
        """The case as `keomlir ir` arguments."""
        words = [self.text()] + [w for a in self.aliases() for w in ("-a", a)]
        words += ["--reduction", self.reduction, "--axis", str(self.axis)]
        if self.opt_arg is not None:
            words += ["--opt-arg", str(self.opt_arg)]
        if self.formula2 is not None:
            words += ["--formula2", self.text2()]
        return words

    def reduction_for(self, passes):
        """The CompiledReduction of this case through `passes` (WRITTEN: autodiff only)."""
        passes = ("autodiff",) if passes == WRITTEN else tuple(passes)
        return CompiledReduction.from_ir(self.formula, self.formula2, self.reduction, self.axis, self.opt_arg,
                                         dict(self.names), passes=passes)


def make_case(formula, aliases, reduction_op="Sum", axis=1, opt_arg=None, formula2=None):
    """The Case of a formula given as Genred takes it (checked as Genred checks it)."""
    names = parse_aliases(aliases)
    f = parse_formula(formula, names)
    g = parse_formula(formula2, names, "formula2") if formula2 is not None else None
    named = {v.attrs[0] for v in names.values()}
    inline = {f"_arg{v.attrs[0]}": v for v in _variables(f, g) if v.attrs[0] not in named}
    case = _canonical(f, g, {**names, **inline}, reduction_op, axis, opt_arg)
    case.reduction_for(())  # the checks of a reduction, raising the user's errors
    return case


def _variables(*roots):
    """The Var nodes of the formulas, those in attributes (the x of Grad(F, x, e)) included, by position."""
    found, attrs = {v.attrs: v for v in variables(*roots)}, []
    for r in roots:
        if r is not None:
            attrs += [a for n in r.walk() for a in n.attrs if hasattr(a, "op")]
    for v in _variables(*attrs) if attrs else ():
        found[v.attrs] = v
    return [found[k] for k in sorted(found)]


def _canonical(f, g, names, reduction, axis, opt_arg):
    """The case with only the variables its formulas use, at positions 0, 1, ... in their order."""
    used = _variables(f, g)
    label = {v.attrs: name for name, v in names.items()}
    moved = {v.attrs: (k, v.attrs[1], v.attrs[2]) for k, v in enumerate(used)}
    f = replace_vars(f, lambda *a: moved[a])
    g = None if g is None else replace_vars(g, lambda *a: moved[a])
    pairs = tuple((label.get(v.attrs, f"_arg{k}"), make("Var", (), moved[v.attrs])) for k, v in enumerate(used))
    return Case(f, g, pairs, reduction, axis, opt_arg)


def _substitute(root, old, new):
    """`root` with every occurrence of the node `old` replaced by `new` (DimensionError if that
    does not fit)."""
    if root is None:
        return None
    memo = {}
    for n in root.walk():
        if n == old:
            memo[id(n)] = new
        else:
            args = [memo[id(a)] for a in n.args]
            memo[id(n)] = n if all(a is b for a, b in zip(args, n.args)) else make(n.name, args, n.attrs)
    return memo[id(root)]


def proposals(case):
    """Smaller cases, smallest first (each may be invalid for the reduction: the caller checks)."""
    nodes = list(ssa_nodes([(None, r) for r in case.roots]).values())
    leaves = [v for _, v in case.names] + [make("IntCst", (), (1,))]
    found = {}
    for n in nodes:
        below = [m for m in n.walk() if m is not n]
        for repl in below + [v for v in leaves if v != n]:
            try:
                f, g = _substitute(case.formula, n, repl), _substitute(case.formula2, n, repl)
            except DimensionError:
                continue
            _add(found, case, f, g)
    for _, v in case.names:
        pos, dim, cat = v.attrs
        if dim > 1:
            def lower(p, d, c, pos=pos):
                return (p, 1 if p == pos else d, c)
            try:
                f = replace_vars(case.formula, lower)
                g = None if case.formula2 is None else replace_vars(case.formula2, lower)
            except DimensionError:
                continue
            _add(found, case, f, g, {name: make("Var", (), lower(*w.attrs)) for name, w in case.names})
    weight = case.weight()
    smaller = [c for c in found.values() if c.weight() < weight]
    return sorted(smaller, key=lambda c: (c.weight(), c.text()))


def _add(found, case, f, g, names=None):
    new = _canonical(f, g, names or dict(case.names), case.reduction, case.axis, case.opt_arg)
    found.setdefault((new.text(), new.text2(), tuple(new.aliases())), new)


# ---- tests ---------------------------------------------------------------------------------------


def random_arrays(case, sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    m, n = sizes
    return [rng.standard_normal((v.dim,) if v.attrs[2] == 2 else (m if v.attrs[2] == 0 else n, v.dim)).astype(dtype)
            for _, v in case.names]


def _passes(text):
    """None or 'default': the default pipeline; 'written': autodiff only; else names joined by ','."""
    if text is None or text == "default":
        return tuple(DEFAULT_PIPELINE)
    if text == WRITTEN:
        return WRITTEN
    return tuple(p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip())


def _check_backend(backend, what):
    if backend not in BACKENDS:
        raise ValueError(f"{what}: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


class Compare:
    """True when two sides disagree beyond rtol/atol on the same random inputs, both running."""

    def __init__(self, passes=None, backend="cpu", against_passes=WRITTEN, against_backend="reference",
                 rtol=1e-6, atol=1e-9, dtype="float64", sizes=(16, 16), seed=0):
        self.sides = [(_check_backend(backend, "backend"), _passes(passes)),
                      (_check_backend(against_backend, "against backend"), _passes(against_passes))]
        if self.sides[0] == self.sides[1]:
            raise ValueError("the two sides of the comparison are the same backend and pipeline")
        self.rtol, self.atol, self.dtype, self.sizes, self.seed = rtol, atol, dtype, tuple(sizes), seed

    def describe(self):
        a, b = (f"{backend} on the formula as written" if p == WRITTEN else f"{backend} after {','.join(p) or 'no passes'}"
                for backend, p in self.sides)
        return f"{a} and {b} disagree (rtol {self.rtol:g}, atol {self.atol:g}, {self.dtype})"

    @property
    def pipeline(self):
        return self.sides[0][1]

    def outputs(self, case, side):
        backend, passes = side
        red = case.reduction_for(passes)
        arrays = random_arrays(case, self.sizes, self.dtype, self.seed)
        return [np.asarray(o, np.float64) for o in red.run_numpy(arrays, BACKENDS[backend])]

    def __call__(self, case):
        try:
            a, b = (self.outputs(case, side) for side in self.sides)
        except Exception:  # a side that does not run is no disagreement (see Crash)
            return False
        return disagree(a, b, self.rtol, self.atol)

    def why_not(self, case):
        """Why the test does not hold for `case`: a side's error, or how close the sides are."""
        try:
            a, b = (self.outputs(case, side) for side in self.sides)
        except Exception as e:
            return f"a side raises {type(e).__name__}: {e}"
        worst = max((float(np.nanmax(np.abs(x - y), initial=0.0)) for x, y in zip(a, b) if x.shape == y.shape),
                    default=0.0)
        return f"the sides agree: largest difference {worst:.3g}"


def disagree(a, b, rtol, atol):
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return True
    return not all(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True) for x, y in zip(a, b))


class Crash:
    """True when building (passes included), compiling or running the case raises the same kind of
    exception as the first case tested (with `match` in its message, if given)."""

    def __init__(self, passes=None, backend="cpu", match=None, dtype="float64", sizes=(16, 16), seed=0):
        self.passes, self.backend = _passes(passes), _check_backend(backend, "backend")
        self.match, self.kind = match, None
        self.dtype, self.sizes, self.seed = dtype, tuple(sizes), seed

    @property
    def pipeline(self):
        return self.passes

    def describe(self):
        kind = f"{self.kind.__name__}" if self.kind else "an exception"
        return f"{self.backend} after {','.join(self.passes)} raises {kind}" + (
            f" containing {self.match!r}" if self.match else "")

    def __call__(self, case):
        try:
            case.reduction_for(())  # a case that is no valid reduction is not the crash looked for
        except Exception:
            return False
        try:
            red = case.reduction_for(self.passes)
            red.run_numpy(random_arrays(case, self.sizes, self.dtype, self.seed), BACKENDS[self.backend])
        except Exception as e:
            if self.match is not None and self.match not in str(e):
                return False
            if self.kind is None:
                self.kind = type(e)
            return type(e) is self.kind
        return False


class Command:
    """True when a shell command exits with `status`; it finds the case in its environment:
    KEOMLIR_REDUCE_ARGS (the case as `keomlir ir` arguments, shell-quoted), KEOMLIR_REDUCE_FORMULA,
    KEOMLIR_REDUCE_FORMULA2, KEOMLIR_REDUCE_ALIASES (one a line), KEOMLIR_REDUCE_REDUCTION."""

    pipeline = None

    def __init__(self, command, status=0, timeout=60.0):
        if not isinstance(command, str) or not command.strip():
            raise ValueError(f"command: expected a shell command, got {command!r}")
        self.command, self.status, self.timeout = command, status, timeout

    def describe(self):
        return f"`{self.command}` exits with status {self.status}"

    def __call__(self, case):
        env = dict(os.environ, KEOMLIR_REDUCE_ARGS=shlex.join(case.argv()), KEOMLIR_REDUCE_FORMULA=case.text(),
                   KEOMLIR_REDUCE_FORMULA2=case.text2() or "", KEOMLIR_REDUCE_ALIASES="\n".join(case.aliases()),
                   KEOMLIR_REDUCE_REDUCTION=case.reduction)
        try:
            done = subprocess.run(self.command, shell=True, env=env, timeout=self.timeout,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == self.status


# ---- the search ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reduced:
    case: Case
    start_nodes: int
    tests: int
    seconds: float
    minimal: bool  # no proposal holds (False: the budget ran out first)
    test: object
    blame: str | None = None  # the first pass after which the reference disagrees, if found

    def ir(self):
        """The case's IR after the pipeline under test (the default one for a command)."""
        passes = self.test.pipeline or tuple(DEFAULT_PIPELINE)
        try:
            return self.case.reduction_for(passes).program.text()
        except Exception as e:  # the crash reduced may be in the passes themselves
            return f"(the pipeline {passes if passes == WRITTEN else ','.join(passes)} raises {type(e).__name__}: {e}; as parsed:)\n" + \
                self.case.reduction_for(()).program.text()

    def lines(self):
        case = self.case
        state = "minimal" if self.minimal else "budget spent, not minimal"
        out = [f"test: {self.test.describe()}",
               f"reduced {self.start_nodes} -> {case.size()} nodes in {self.tests} tests, {self.seconds:.1f} s "
               f"({state})",
               f"formula: {case.text()}"]
        if case.formula2 is not None:
            out.append(f"formula2: {case.text2()}")
        out += [f"aliases: {', '.join(case.aliases()) or '(none)'}", f"reduction: {case.reduction}, axis={case.axis}"
                + (f", K={case.opt_arg}" if case.opt_arg is not None else "")]
        if self.blame is not None:
            out.append(f"pass to blame: {self.blame}")
        passes = self.test.pipeline
        shown = [] if passes in (None, WRITTEN, tuple(DEFAULT_PIPELINE)) else ["--passes", ",".join(passes)]
        out += [f"reproduce: keomlir ir {shlex.join(case.argv() + shown)}", "", self.ir()]
        return out


def reduce(case, test, budget=300.0, out=None):
    """The smallest case found for which `test(case)` holds, as a `Reduced`; `out` (e.g. print)
    hears of every step.  Raises ValueError if the test does not hold for `case` itself."""
    start, tests = time.perf_counter(), 1
    if not test(case):
        why = f"; {test.why_not(case)}" if hasattr(test, "why_not") else ""
        raise ValueError(f"the test does not hold for the formula given ({test.describe()}{why}): nothing to reduce")
    start_nodes, seen = case.size(), set()
    minimal = False
    while True:
        for candidate in proposals(case):
            if time.perf_counter() - start > budget:
                break
            key = (candidate.text(), candidate.text2(), tuple(candidate.aliases()))
            if key in seen:
                continue
            seen.add(key)
            tests += 1
            if test(candidate):
                case = candidate
                if out is not None:
                    out(f"  {case.size():3d} nodes: {case.text()}  ({', '.join(case.aliases())})")
                break
        else:
            minimal = True
            break
        if time.perf_counter() - start > budget:
            break
    blame = _blame(case, test) if isinstance(test, Compare) else None
    return Reduced(case, start_nodes, tests, time.perf_counter() - start, minimal, test, blame)


def _blame(case, test):
    """Which pass of the pipeline under test changes the results: the first after which the
    reference backend's outputs differ from the formula as written's (None: not a question here)."""
    passes = test.pipeline
    if passes == WRITTEN:
        return None
    try:
        written = test.outputs(case, ("reference", WRITTEN))
        for k in range(1, len(passes) + 1):
            if disagree(test.outputs(case, ("reference", passes[:k])), written, test.rtol, test.atol):
                return f"{passes[k - 1]} (the first pass after which the reference backend's results change)"
    except Exception as e:  # e.g. a derivative the reference cannot evaluate before autodiff
        return f"unknown (the reference backend raises {type(e).__name__} on a prefix of the pipeline)"
    return "none: on the reference backend the pipeline keeps the results (look at code generation)"
