"""Passes as small named objects over a Program, run in order by a PassManager
that can verify and print the IR after each one (as `mlir-opt
--mlir-print-ir-after-all` does) and time them."""

from __future__ import annotations

import time

from ..ir.ops import make
from ..ir.verify import verify_program

PASSES: dict[str, type] = {}


def register_pass(cls):
    PASSES[cls.name] = cls
    return cls


class Pass:
    name = ""

    def run(self, program):
        raise NotImplementedError


def rewrite(root, rule):
    """Rebuild the DAG bottom-up, replacing each node by `rule(node)` until it returns None."""
    memo = {}
    for n in root.walk():
        args = [memo[id(a)] for a in n.args]
        new = n if all(a is b for a, b in zip(args, n.args)) else make(n.name, args, n.attrs)
        for _ in range(64):  # rules build replacements from already rewritten operands
            repl = rule(new)
            if repl is None or repl is new:
                break
            new = repl
        memo[id(n)] = new
    return memo[id(root)]


class NodePass(Pass):
    """A pass that rewrites each formula of the program node by node."""

    def rule(self, node):
        raise NotImplementedError

    def run(self, program):
        f2 = None if program.formula2 is None else rewrite(program.formula2, self.rule)
        return program.with_formulas(rewrite(program.formula, self.rule), f2)


class PassManager:
    def __init__(self, names, verify=True, on_stage=None):
        unknown = [n for n in names if n not in PASSES]
        if unknown:
            raise ValueError(
                f"unknown pass {', '.join(unknown)}; valid passes: {', '.join(PASSES)}"
            )
        self.passes = [PASSES[n]() for n in names]
        self.verify = verify
        self.on_stage = on_stage  # called as on_stage(name, program, seconds)
        self.timings = []

    def run(self, program):
        if self.verify:
            verify_program(program)
        for p in self.passes:
            t0 = time.perf_counter()
            program = p.run(program)
            dt = time.perf_counter() - t0
            self.timings.append((p.name, dt))
            if self.verify:
                verify_program(program)
            if self.on_stage is not None:
                self.on_stage(p.name, program, dt)
        return program
