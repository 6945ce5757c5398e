"""Passes as small named objects over a Program, run in order by a PassManager that can verify
and print the IR after each one (as `mlir-opt --mlir-print-ir-after-all` does), time them,
count what each changed (`--pass-statistics`) and apply only the first N rewrites of the whole
pipeline (`--bisect-limit`, as LLVM's `-opt-bisect-limit`).

A pipeline is text, `simplify,mypass{threshold=3}`, or a list of such items: a pass name and
options, which the pass declares with their defaults (`options = {"threshold": 2}`).  Passes from
outside the package register with `register_pass`, or from a file with `load_pass_file`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import importlib.util
import pathlib
import re
import sys
import time

from ..ir.node import ssa_nodes, to_formula
from ..ir.ops import make
from ..ir.verify import VerificationError, verify_program

PASSES: dict[str, type] = {}
PASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*$")
CONSTANTS = ("IntCst", "IntInv", "Zero")


def register_pass(cls=None, *, replace=False):
    """Make a Pass class known by its `name` (a decorator, `@register_pass` or
    `@register_pass(replace=True)`).  A name already taken by another class is an error unless
    `replace`; the same class from the same file again (a file loaded twice) replaces it."""
    def add(cls):
        name = getattr(cls, "name", None)
        if not (isinstance(cls, type) and issubclass(cls, Pass)):
            raise TypeError(f"register_pass: expected a subclass of keomlir.passes.Pass, got {cls!r}")
        if not isinstance(name, str) or not PASS_NAME.match(name):
            raise ValueError(f"register_pass: {cls.__qualname__}.name must be a name such as 'my-pass' "
                             f"(letters, digits, _ . -), got {name!r}")
        old = PASSES.get(name)
        if old is not None and old is not cls and not replace and \
                (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"register_pass: a pass named {name!r} exists ({old.__module__}.{old.__qualname__}); "
                             f"choose another name or register_pass(replace=True)")
        for option, default in cls.options.items():
            if not isinstance(default, (bool, int, float, str)):
                raise TypeError(f"register_pass: {name}'s option {option} must default to a bool, int, float or "
                                f"str, got {default!r}")
        PASSES[name] = cls
        return cls

    return add if cls is None else add(cls)


def load_pass_file(path):
    """Run the Python file `path` (its @register_pass classes register); the names it added."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"load pass: no file {str(path)!r}")
    resolved = path.resolve()
    module_name = f"keomlir_passes_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_" \
                  f"{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    before = {name: cls for name, cls in PASSES.items()}
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # (dataclasses and pickling look modules up by name)
    spec.loader.exec_module(module)
    return [name for name, cls in PASSES.items() if before.get(name) is not cls]


class Pass:
    """A pass: `run(program)` returns the rewritten program.  `options` declares the options
    `--passes 'name{option=value}'` may set (their defaults give their types); they become
    attributes.  During a run, `self.applies(rule, before, after)` asks whether a rewrite may be
    made (False past `--bisect-limit`) and counts it under `rule`; `self.count(what)` adds to a
    named statistic."""

    name = ""
    options: dict = {}

    def __init__(self, **options):
        unknown = [k for k in options if k not in self.options]
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise ValueError(f"pass {self.name}: unknown option {', '.join(unknown)}; its options: {valid}")
        for key, default in self.options.items():
            setattr(self, key, _option_value(self.name, key, options.get(key, default), default))
        self.given = dict(options)
        self.log = None  # the Rewrites of the running pipeline, set by the PassManager

    @property
    def label(self):
        """The name and the options given, as a pipeline writes them."""
        opts = ",".join(f"{k}={_show(getattr(self, k))}" for k in getattr(self, "given", ()))
        return self.name + (f"{{{opts}}}" if opts else "")

    def run(self, program):
        raise NotImplementedError

    def applies(self, rule, before, after=None):
        return True if self.log is None else self.log.applies(self, rule, before, after)

    def count(self, what, n=1):
        if self.log is not None:
            self.log.current.counters[what] += n


KINDS = {bool: "a bool (on/off)", int: "an integer", float: "a number", str: "a string"}
BOOLS = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _option_value(pass_name, key, value, default):
    """An option's value of its default's type, from that type or from text."""
    kind = type(default)
    if type(value) is kind or (kind is float and type(value) is int):
        return kind(value)
    try:
        if not isinstance(value, str):
            raise ValueError
        return BOOLS[value.strip().lower()] if kind is bool else kind(value.strip())
    except (KeyError, ValueError):
        raise ValueError(f"pass {pass_name}: option {key}={value!r} is not {KINDS[kind]}") from None


def _show(value):
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def split_pipeline(text):
    """The items of a pipeline text, split at the commas outside braces."""
    items, depth, start = [], 0, 0
    for k, c in enumerate(text):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"pass pipeline {text!r}: '}}' without '{{' at character {k + 1}")
        elif c == "," and depth == 0:
            items.append(text[start:k])
            start = k + 1
    if depth:
        raise ValueError(f"pass pipeline {text!r}: a '{{' is not closed")
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parse_pipeline(pipeline):
    """[(name, {option: text})] of a pipeline: text 'a,b{k=v}', or a list of such items or of
    (name, options) pairs.  Unknown passes are errors naming the valid ones."""
    if pipeline is None:
        return []
    items = split_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
    found = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            name, options = item[0], dict(item[1])
        elif isinstance(item, str):
            m = re.fullmatch(r"\s*([^{}\s]+)\s*(?:\{(.*)\})?\s*", item, re.S)
            if m is None:
                raise ValueError(f"pass pipeline: {item!r} is not NAME or NAME{{option=value,...}}")
            name, options = m.group(1), {}
            for setting in split_pipeline(m.group(2) or ""):
                key, sep, value = setting.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"pass {name}: option {setting!r} is not option=value")
                options[key.strip()] = value.strip()
        else:
            raise TypeError(f"pass pipeline: expected pass names (text), got {item!r}")
        if name not in PASSES:
            raise ValueError(f"unknown pass {name}; valid passes: {', '.join(PASSES)}")
        found.append((name, options))
    return found


def rewrite(root, rule, applies=None):
    """Rebuild the DAG bottom-up, replacing each node by `rule(node)` until it returns None (or
    `applies(before, after)` refuses the replacement)."""
    memo = {}
    for n in root.walk():
        args = [memo[id(a)] for a in n.args]
        new = n if all(a is b for a, b in zip(args, n.args)) else make(n.name, args, n.attrs)
        for _ in range(64):  # rules build replacements from already rewritten operands
            repl = rule(new)
            if repl is None or repl is new or (applies is not None and not applies(new, repl)):
                break
            new = repl
        memo[id(n)] = new
    return memo[id(root)]


class NodePass(Pass):
    """A pass that rewrites each formula of the program node by node: `rule(node)` returns the
    replacement or None.  Its rewrites are named by `rule_name` in statistics and bisection."""

    def rule(self, node):
        raise NotImplementedError

    def rule_name(self, before, after):
        """'Old -> New', or 'Old -> operand' where a node becomes one of its operands (x*1 -> x)."""
        if any(after is a for a in before.args):
            return f"{before.name} -> operand"
        return f"{before.name} -> {after.name}"

    def run(self, program):
        def applies(before, after):
            return self.applies(self.rule_name(before, after), before, after)

        f2 = None if program.formula2 is None else rewrite(program.formula2, self.rule, applies)
        return program.with_formulas(rewrite(program.formula, self.rule, applies), f2)


@dataclasses.dataclass
class PassStatistics:
    """What one pass of a pipeline did."""

    name: str  # the pass and its options
    nodes_before: int
    nodes_after: int = 0
    seconds: float = 0.0
    changed: bool = False
    rewrites: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # rule -> count
    counters: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # what -> count

    def text(self):
        """One line of figures, then one a rule."""
        figures = [f"nodes {self.nodes_before} -> {self.nodes_after}"]
        figures += [f"{n} {what}" for what, n in sorted(self.counters.items())]
        total = sum(self.rewrites.values())
        figures.append(f"{total} rewrite{'s' if total != 1 else ''}")
        lines = [f"{self.name}: " + ", ".join(figures) + ("" if self.changed else " (unchanged)")]
        lines += [f"  {n:6d}  {rule}" for rule, n in sorted(self.rewrites.items(), key=lambda r: (-r[1], r[0]))]
        return "\n".join(lines)


def _changed(before, after):
    """Whether a pass changed the program: its printed text (sharing included) differs.  A pass
    that changed nothing mostly returns the same nodes, which is checked first."""
    if after is before or (after.formula is before.formula and after.formula2 is before.formula2
                           and after.names == before.names):
        return False
    return after.text() != before.text()


def count_nodes(program):
    """The distinct nodes of a program's formulas (as many as its printed SSA lines)."""
    return len(ssa_nodes(program.roots()))


class Rewrites:
    """The rewrites of one pipeline run: numbered, counted per pass and rule, and past `limit`
    refused (each reported to `out` as LLVM's opt-bisect does)."""

    def __init__(self, limit=None, out=None, names=None):
        self.limit, self.out, self.names = limit, out, names or {}
        self.number = 0
        self.current = None  # the PassStatistics of the running pass
        self.asked = 0  # rewrites the running pass asked about

    def applies(self, p, rule, before, after):
        self.number += 1
        self.asked += 1
        ok = self.limit is None or self.number <= self.limit
        if self.limit is not None and self.out is not None:
            where = "" if before is None else " on " + _short(to_formula(before, self.names))
            self.out(f"BISECT: {'applying' if ok else 'NOT applying'} rewrite ({self.number}) {p.label}: "
                     f"{rule}{where}")
        if ok:
            self.current.rewrites[rule] += 1
            if after is not None and after.name in CONSTANTS and before.name not in CONSTANTS:
                self.current.counters["constants folded"] += 1
        return ok


def _short(text, width=72):
    return text if len(text) <= width else text[:width - 3] + "..."


class PassManager:
    """Runs a pipeline: verifying the program before and after each pass (`verify`), calling
    `on_stage(name, program, seconds)` after each, keeping each pass's `PassStatistics` in
    `statistics`, and with `bisect_limit` N applying only the first N rewrites (`on_bisect`
    gets a line per rewrite)."""

    def __init__(self, names, verify=True, on_stage=None, bisect_limit=None, on_bisect=None):
        self.passes = [PASSES[name](**options) for name, options in parse_pipeline(names)]
        self.verify = verify
        self.on_stage = on_stage  # called as on_stage(name, program, seconds)
        if bisect_limit is not None and (isinstance(bisect_limit, bool) or not isinstance(bisect_limit, int)
                                         or bisect_limit < 0):
            raise ValueError(f"bisect limit: expected a non-negative integer, got {bisect_limit!r}")
        self.bisect_limit, self.on_bisect = bisect_limit, on_bisect
        self.timings = []
        self.statistics = []

    def run(self, program):
        if self.verify:
            verify_program(program)
        log = Rewrites(self.bisect_limit, self.on_bisect, dict(program.names))
        for p in self.passes:
            stats = PassStatistics(p.label, count_nodes(program))
            log.current, log.asked, p.log = stats, 0, log
            t0 = time.perf_counter()
            try:
                result = p.run(program)
            finally:
                p.log = None
            stats.seconds = dt = time.perf_counter() - t0
            self._check(p, program, result)
            changed = _changed(program, result)
            # a pass that asks about none of its rewrites is one rewrite, applied whole or not at all
            if changed and log.asked == 0 and not log.applies(p, "the whole pass", None, None):
                result, changed = program, False
            program = result
            stats.nodes_after, stats.changed = count_nodes(program), changed
            self.timings.append((p.label, dt))
            self.statistics.append(stats)
            if self.on_stage is not None:
                self.on_stage(p.label, program, dt)
        return program

    def _check(self, p, before, after):
        """A pass returns an equivalent program: valid, with the same reduction, arguments and
        output dimensions."""
        if not hasattr(after, "roots") or not hasattr(after, "reduction"):
            raise TypeError(f"pass {p.label} returned {type(after).__name__}, not a Program")
        if not self.verify:
            return
        try:
            verify_program(after)
        except VerificationError as e:
            raise VerificationError(f"the IR after pass {p.label} is invalid: {e}") from None
        for what in ("reduction", "opt_arg", "arguments"):
            if getattr(after, what) != getattr(before, what):
                raise VerificationError(f"pass {p.label} changed the program's {what} ({getattr(before, what)!r} "
                                        f"-> {getattr(after, what)!r}): a pass keeps the reduction it rewrites")
        for (label, old), (_, new) in zip(before.roots(), after.roots()):
            if new is None or old.dim != new.dim:
                raise VerificationError(f"pass {p.label} changed the dimension of {label} from {old.dim} to "
                                        f"{None if new is None else new.dim}")
        if len(before.roots()) != len(after.roots()):
            raise VerificationError(f"pass {p.label} added or removed the formula G")
