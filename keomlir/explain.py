"""Every stage of the compiler for one formula, as data: the IR after parsing and
after each pass, the LLVM IR before and after LLVM's optimizer, the host
assembly, NVPTX, a Graphviz graph, and the time each stage took.

This is what the `keomlir ir` command prints; notebooks get the same object
(it renders itself as Markdown) and `to_dict()` for anything else.
"""

from __future__ import annotations

import dataclasses
import time

from .backends.cuda import runner
from .backends.llvm import toolchain
from .backends.llvm.renderer import render
from .compile import DTYPES, CompiledReduction
from .ir.node import index_name
from .passes import DEFAULT_PIPELINE, PassManager
from .schedule import FIELDS, parse_overrides, schedule as make_schedule, targets, with_env, with_sizes
from .workbench import bench as workbench_bench, page

EMIT_FORMS = ("ir", "llvm", "llvm-opt", "asm", "obj", "ptx", "dot")
NEEDS_LLVM = {"llvm", "llvm-opt", "asm", "obj"}
NEEDS_OPT = {"llvm-opt", "asm", "obj"}
# Graphviz fill colors by node.cat, the indices a node depends on
CAT_COLORS = {0: "#d9d9d9", 1: "#9ecae1", 2: "#a1d99b", 3: "#fdae6b"}
CAT_LEGEND = "grey: parameters and constants, blue: i, green: j, orange: i and j"


@dataclasses.dataclass
class Stage:
    """The IR after one stage ("parse" or a pass name) and the seconds it took."""

    name: str
    text: str
    seconds: float


@dataclasses.dataclass
class Explanation:
    stages: list  # Stage after parse, then after each pass, in order
    program: object  # the final Program
    outputs: dict  # emitted form -> text (bytes for "obj")
    timings: list  # (stage, seconds): parse, each pass, then the backend stages run
    schedule: object = None  # how the program runs on the target (keomlir.schedule.Schedule)
    source: dict = None  # explain()'s arguments, from which to_html makes the forms not made yet

    @property
    def ir(self):
        return self.stages[-1].text

    def __str__(self):
        stages = [f"{stage_header(s.name)}\n{s.text}" for s in self.stages]
        return "\n\n".join(stages + [f"{SCHEDULE_HEADER}\n{self.schedule.text()}"])

    def _repr_markdown_(self):
        parts = [f"**{s.name}** ({s.seconds * 1e3:.2f} ms)\n```\n{s.text}\n```" for s in self.stages]
        parts.append(f"**schedule**\n```\n{self.schedule.text()}\n```")
        parts += [f"**{form}**\n```\n{text}\n```" for form, text in self.outputs.items()
                  if isinstance(text, str) and form != "ir"]
        return "\n\n".join(parts)

    def to_dict(self):
        return {"stages": [dataclasses.asdict(s) for s in self.stages], "schedule": dict(
                    (name, FIELDS[name].show(value)) for name, value in self.schedule.fields()),
                "outputs": dict(self.outputs), "timings": [list(t) for t in self.timings]}


    def to_html(self, bench=None):
        """One self-contained HTML page (`keomlir.workbench.page`): the formula, the IR after each
        stage with its changes highlighted, the graph as SVG, the schedule, LLVM IR, assembly and PTX
        in tabs (the forms not made yet are made first), the stages' times as a bar chart and, with
        `bench` (sizes (M, N) to bench the kernel at, or a `keomlir.workbench.bench.BenchResult`),
        the bench numbers."""
        outputs, timings = dict(self.outputs), list(self.timings)
        src = self.source or {}
        if src:  # the CPU forms for the target explained (if a CPU), PTX for it (if a GPU) or for sm_80
            cpu = targets.target(src["target"] or "host").kind == "cpu"
            wanted = [(("llvm", "llvm-opt", "asm"), src["target"]), (("ptx",), None)] if cpu else \
                [(("ptx",), src["target"])]
            for forms, target in wanted:
                missing = [f for f in forms if f not in outputs]
                if not missing:
                    continue
                try:
                    more = explain(**{**src, "emit": missing, "target": target})
                except NotImplementedError as e:  # an operation this backend lacks
                    outputs.update({f: f"(not available: {e})" for f in missing})
                    continue
                outputs.update(more.outputs)
                timings += more.timings[len(more.stages):]  # the backend's stages, not parse and passes again
        if isinstance(bench, tuple):
            passes = [] if src.get("passes") is None else [",".join(pass_names(src["passes"]))]
            schedules = [src["schedule"]] if src.get("schedule") else []
            bench = workbench_bench.bench(src["formula"], src["aliases"], src["reduction_op"], src["axis"],
                                          src["opt_arg"], src["formula2"], bench, src["dtype"], passes, schedules)
        return page.render(self.stages, self.program, outputs, timings, self.schedule.text(), src,
                           None if bench is None else bench.to_dict())


SCHEDULE_HEADER = "// ----- schedule ----- //"


def stage_header(name):
    return f"// ----- IR after {name} ----- //"


def pass_names(passes):
    """None: the default pipeline; "a,b" or a list of names: exactly those, in order."""
    if passes is None:
        return list(DEFAULT_PIPELINE)
    if isinstance(passes, str):
        passes = passes.split(",")
    return [p.strip() for p in passes if p.strip()]


def _target(target, forms):
    """The Target the forms are made for: `target` (a name or a Target), else the host, or
    sm_80 for PTX alone; a GPU target makes PTX only, a CPU target everything else."""
    gpu_only = "ptx" in forms and not NEEDS_LLVM.intersection(forms)
    found = targets.target(target if target is not None else "sm_80" if gpu_only else "host")
    if found.kind == "gpu" and NEEDS_LLVM.intersection(forms):
        raise ValueError(f"emit {'/'.join(sorted(NEEDS_LLVM.intersection(forms)))}: {found.name} is a GPU "
                         f"target, whose code is ptx")
    if found.kind == "cpu" and "ptx" in forms:
        raise ValueError(f"emit ptx: {found.name} is a CPU target; name a GPU architecture (--target sm_90)")
    return found


def explain(formula, aliases, reduction_op="Sum", axis=1, opt_arg=None, formula2=None,
            dtype="float32", passes=None, emit=("ir",), target=None, schedule=None, sizes=None):
    """Compile `formula` as far as the forms in `emit` require and return every stage, with
    the schedule of the program on `target` (a name, see `keomlir.schedule.names()`; default:
    the host, or sm_80 for PTX alone) as the runtimes make it: $KEOMLIR_SCHEDULE's and
    `schedule`'s overrides applied, with the fields of a call of `sizes` = (M, N) if given.
    PTX is the very text the GPU runtime loads, and `asm` for another CPU is cross-compiled.

    Raises the library's SyntaxError/ValueError/TypeError for user errors and
    NotImplementedError for a form whose backend is missing.
    """
    forms = (emit,) if isinstance(emit, str) else tuple(emit)
    bad = [f for f in forms if f not in EMIT_FORMS]
    if bad:
        raise ValueError(f"emit: unknown form {', '.join(map(repr, bad))}; expected one of {', '.join(EMIT_FORMS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tgt = _target(target, forms)
    overrides = parse_overrides(schedule)
    stages = []
    manager = PassManager(pass_names(passes),
                          on_stage=lambda name, program, dt: stages.append(Stage(name, program.text(), dt)))
    t0 = time.perf_counter()
    red = CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2, passes=())
    stages.append(Stage("parse", red.parsed.text(), time.perf_counter() - t0))
    program = manager.run(red.parsed)
    timings = [(s.name, s.seconds) for s in stages]
    acc = red.acc_dtype(dtype)
    if tgt.kind == "gpu":
        sched = runner.gpu_schedule(program, dtype, tgt, overrides)
    else:
        sched = make_schedule(program, tgt, dtype=dtype, overrides=with_env(overrides))
    shown = sched if sizes is None else with_sizes(sched, sizes)
    described = f"\n{tgt.text()}" if target is not None else ""  # the descriptor of a target asked for
    outputs = {"ir": f"{stages[-1].text}\n{shown.text()}{described}"} if "ir" in forms else {}

    def timed(stage, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings.append((stage, time.perf_counter() - t))
        return result

    if NEEDS_LLVM.intersection(forms):
        tm = toolchain.target_machine(tgt)
        module = timed("LLVM IR rendering", render, program, dtype, acc, red.sum_scheme, "kernel", sched)
        if tgt.triple != targets.detect_host().triple:  # cross-compiled
            module.triple, module.data_layout = tgt.triple, str(tm.target_data)
        if "llvm" in forms:
            outputs["llvm"] = str(module)
        if NEEDS_OPT.intersection(forms):
            mod = timed("LLVM optimization", toolchain.optimize, module, tm)
            if "llvm-opt" in forms:
                outputs["llvm-opt"] = str(mod)
            if "obj" in forms:
                outputs["obj"] = timed("machine code", tm.emit_object, mod)
            if "asm" in forms:
                outputs["asm"] = timed("assembly", tm.emit_assembly, mod)
    if "ptx" in forms:
        outputs["ptx"] = timed("NVPTX", runner.ptx_for, program, dtype, acc, red.sum_scheme, sched)[1]
    if "dot" in forms:
        outputs["dot"] = to_dot(program)
    source = dict(formula=formula, aliases=list(aliases), reduction_op=reduction_op, axis=axis, opt_arg=opt_arg,
                  formula2=formula2, dtype=dtype, passes=passes, target=target, schedule=schedule, sizes=sizes)
    return Explanation(stages, program, outputs, timings, shown, source)


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(program):
    """A Graphviz digraph of the program: operands point to their users, nodes are
    labelled with operation and dimension and colored by the indices they depend on."""
    names = dict(program.names)
    head = program.text().splitlines()[0]
    lines = ["digraph keomlir {",
             f"  label={_quote(head + chr(10) + CAT_LEGEND)}; labelloc=t; fontname=monospace;",
             '  node [shape=box, style="rounded,filled", fontname=monospace];',
             "  edge [fontsize=9, fontname=monospace];"]
    k = f", K={program.opt_arg}" if program.opt_arg is not None else ""
    lines.append(f"  reduction [shape=doubleoctagon, label={_quote(f'{program.reduction}{k} over j')}];")
    ids = {}
    for label, root in program.roots():
        for n in root.walk():
            if id(n) in ids:
                continue
            ids[id(n)] = f"n{len(ids)}"
            attrs = n.op.format_attrs(n, names)
            text = f"{n.name}{f'[{attrs}]' if attrs else ''}\ndim {n.dim}, {index_name(n.cat)}"
            lines.append(f"  {ids[id(n)]} [label={_quote(text)}, fillcolor={_quote(CAT_COLORS[n.cat])}];")
            for k, a in enumerate(n.args):
                order = f" [label={k}]" if len(n.args) > 1 else ""
                lines.append(f"  {ids[id(a)]} -> {ids[id(n)]}{order};")
        lines.append(f"  {ids[id(root)]} -> reduction [label={label}];")
    return "\n".join(lines + ["}"])
