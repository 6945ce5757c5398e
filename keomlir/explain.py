"""Every stage of the compiler for one formula, as data: the IR after parsing and
after each pass, the LLVM IR before and after LLVM's optimizer, the host
assembly, NVPTX, a Graphviz graph, and the time each stage took.

This is what the `keomlir ir` command prints; notebooks get the same object
(it renders itself as Markdown) and `to_dict()` for anything else.
"""

from __future__ import annotations

import dataclasses
import time

from .backends import registry
from .backends.registry import VARIANTS
from .compile import DTYPES, CompiledReduction
from .ir.node import index_name
from .passes import DEFAULT_PIPELINE, PassManager, split_pipeline
from .schedule import FIELDS, parse_overrides, targets, with_sizes
from .schedule.kir import kir_text, parse_kir, reschedule
from .workbench import bench as workbench_bench, page

EMIT_FORMS = ("ir", "llvm", "llvm-opt", "asm", "obj", "ptx", "dot")
NEEDS_LLVM = {"llvm", "llvm-opt", "asm", "obj"}
# Graphviz fill colors by node.cat, the indices a node depends on
CAT_COLORS = {0: "#d9d9d9", 1: "#9ecae1", 2: "#a1d99b", 3: "#fdae6b"}
CAT_LEGEND = "grey: parameters and constants, blue: i, green: j, orange: i and j"


@dataclasses.dataclass
class Stage:
    """The IR after one stage ("parse", "input" or a pass) and the seconds it took."""

    name: str
    text: str
    seconds: float
    changed: bool = True  # whether the stage changed the program (the first stage made it)


@dataclasses.dataclass
class Explanation:
    stages: list  # Stage after parse, then after each pass, in order
    program: object  # the final Program
    outputs: dict  # emitted form -> text (bytes for "obj")
    timings: list  # (stage, seconds): parse, each pass, then the backend stages run
    schedule: object = None  # how the program runs on the target (keomlir.schedule.Schedule)
    statistics: list = dataclasses.field(default_factory=list)  # PassStatistics of each pass
    describe_target: bool = False  # the target's descriptor follows the schedule in `outputs["ir"]`
    source: dict = None  # explain()'s arguments, from which to_html makes the forms not made yet

    @property
    def ir(self):
        return self.stages[-1].text

    def __str__(self):
        return self.text()

    def text(self, changed_only=False):
        """Each stage under its header (with `changed_only`, the first and those that changed the
        program), then the schedule."""
        shown = [s for k, s in enumerate(self.stages) if not changed_only or k == 0 or s.changed]
        stages = [f"{stage_header(s.name)}\n{s.text}" for s in shown]
        return "\n\n".join(stages + [f"{SCHEDULE_HEADER}\n{self.schedule.text()}"])

    def statistics_text(self):
        return "\n".join([STATISTICS_HEADER] + [s.text() for s in self.statistics])

    def _repr_markdown_(self):
        parts = [f"**{s.name}** ({s.seconds * 1e3:.2f} ms)\n```\n{s.text}\n```" for s in self.stages]
        parts.append(f"**schedule**\n```\n{self.schedule.text()}\n```")
        parts += [f"**{form}**\n```\n{text}\n```" for form, text in self.outputs.items()
                  if isinstance(text, str) and form != "ir"]
        return "\n\n".join(parts)

    def to_dict(self):
        return {"stages": [dataclasses.asdict(s) for s in self.stages], "schedule": dict(
                    (name, FIELDS[name].show(value)) for name, value in self.schedule.fields()),
                "outputs": dict(self.outputs), "timings": [list(t) for t in self.timings],
                "statistics": [dict(name=s.name, nodes_before=s.nodes_before, nodes_after=s.nodes_after,
                                    changed=s.changed, rewrites=dict(s.rewrites), counters=dict(s.counters))
                               for s in self.statistics]}


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
STATISTICS_HEADER = "// ----- pass statistics ----- //"


def stage_header(name):
    return f"// ----- IR after {name} ----- //"


def pass_names(passes):
    """None: the default pipeline; "a,b{option=value}" or a list of items: exactly those, in order."""
    if passes is None:
        return list(DEFAULT_PIPELINE)
    if isinstance(passes, str):
        return split_pipeline(passes)
    return [p.strip() if isinstance(p, str) else p for p in passes if not isinstance(p, str) or p.strip()]


def _target(target, forms):
    """The Target the forms are made for: `target` (a name or a Target), else the host, or
    sm_80 for PTX alone; a GPU target makes PTX only, a CPU target everything else."""
    gpu_only = "ptx" in forms and not NEEDS_LLVM.intersection(forms)
    found = targets.target(target if target is not None else "sm_80" if gpu_only else "host")
    _check_forms(found, forms)
    return found


def _check_forms(found, forms):
    if found.kind == "gpu" and NEEDS_LLVM.intersection(forms):
        raise ValueError(f"emit {'/'.join(sorted(NEEDS_LLVM.intersection(forms)))}: {found.name} is a GPU "
                         f"target, whose code is ptx")
    if found.kind == "cpu" and "ptx" in forms:
        raise ValueError(f"emit ptx: {found.name} is a CPU target; name a GPU architecture (--target sm_90)")


def _forms(emit, dtype):
    forms = (emit,) if isinstance(emit, str) else tuple(emit)
    bad = [f for f in forms if f not in EMIT_FORMS]
    if bad:
        raise ValueError(f"emit: unknown form {', '.join(map(repr, bad))}; expected one of {', '.join(EMIT_FORMS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return forms


def _run_passes(program, passes, stages, verify, bisect_limit, on_bisect):
    """`program` after the passes, each stage appended to `stages`; and their statistics."""
    manager = PassManager(passes, verify=verify, bisect_limit=bisect_limit, on_bisect=on_bisect)
    manager.on_stage = lambda name, prog, dt: stages.append(
        Stage(name, prog.text(), dt, manager.statistics[-1].changed))
    return manager.run(program), manager.statistics


def explain(formula, aliases, reduction_op="Sum", axis=1, opt_arg=None, formula2=None,
            dtype="float32", passes=None, emit=("ir",), target=None, schedule=None, sizes=None,
            verify=True, bisect_limit=None, on_bisect=None, variant="kernel"):
    """Compile `formula` as far as the forms in `emit` require and return every stage, with
    the schedule of the program on `target` (a name, see `keomlir.schedule.names()`; default:
    the host, or sm_80 for PTX alone) as the runtimes make it: $KEOMLIR_SCHEDULE's and
    `schedule`'s overrides applied, with the fields of a call of `sizes` = (M, N) if given.
    PTX is the very text the GPU runtime loads, and `asm` for another CPU is cross-compiled.
    `passes` is a pipeline (None: the default one), run verified unless `verify` is False; with
    `bisect_limit` N only its first N rewrites are made, each reported to `on_bisect`.
    `variant` names the CPU entry points compiled: 'kernel' (whole rows), 'split_j' (parts
    of j, for few rows) or 'ranges' (block-sparse).

    Raises the library's SyntaxError/ValueError/TypeError for user errors and
    NotImplementedError for a form whose backend is missing.
    """
    forms = _forms(emit, dtype)
    tgt = _target(target, forms)
    overrides = parse_overrides(schedule)
    stages = []
    t0 = time.perf_counter()
    red = CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2, passes=())
    stages.append(Stage("parse", red.parsed.text(), time.perf_counter() - t0))
    program, statistics = _run_passes(red.parsed, pass_names(passes), stages, verify, bisect_limit, on_bisect)
    # (the backend compiling for the target: its schedule, as the runtimes make it)
    sched = registry.for_target(tgt).schedule(program, dtype, overrides, target=tgt)
    # (the descriptor of a target asked for is printed)
    result = _emit(program, stages, statistics, sched, forms, red.acc_dtype(dtype), red.sum_scheme, sizes,
                   target is not None, variant)
    result.source = dict(formula=formula, aliases=list(aliases), reduction_op=reduction_op, axis=axis,
                         opt_arg=opt_arg, formula2=formula2, dtype=dtype, passes=passes, target=target,
                         schedule=schedule, sizes=sizes)
    return result


def opt(text, passes=(), emit=("ir",), target=None, dtype=None, schedule=None, sizes=None, verify=True,
        bisect_limit=None, on_bisect=None, what="IR", variant="kernel"):
    """`keomlir opt`: the program of a `.kir` text (as `keomlir ir` prints it) through the
    pipeline `passes` (default: none), scheduled as the text decided (its target, dtype and
    fields set away from their defaults; `target`, `dtype` and the overrides `schedule` change
    them), then made into the forms of `emit`.  A text without a schedule block runs on the host
    (sm_80 for PTX alone) in float32.  The same Explanation as `explain`."""
    forms = _forms(emit, dtype)
    t0 = time.perf_counter()
    kir = parse_kir(text, what)
    stages = [Stage("input", kir.program.text(), time.perf_counter() - t0)]
    program, statistics = _run_passes(kir.program, pass_names(passes), stages, verify, bisect_limit, on_bisect)
    tgt = target if target is not None or kir.schedule is not None else _target(None, forms)
    sched = reschedule(kir, program, tgt, dtype, parse_overrides(schedule))
    _check_forms(sched.target, forms)
    acc = "float32" if sched.dtype == "float16" else sched.dtype
    return _emit(program, stages, statistics, sched, forms, acc, "block_sum", sizes,
                 kir.describe_target or target is not None, variant)


def _emit(program, stages, statistics, sched, forms, acc, sum_scheme, sizes, describe, variant="kernel"):
    """The Explanation of `program` run as `sched` says, with the forms asked for made (of the
    CPU entry points `variant`)."""
    tgt, dtype = sched.target, sched.dtype
    if variant not in VARIANTS or (variant != "kernel" and tgt.kind != "cpu"):
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (other than kernel: a CPU target's), "
                         f"got {variant!r} for {tgt.name}")
    timings = [(s.name, s.seconds) for s in stages]
    shown = sched if sizes is None else with_sizes(sched, sizes)
    outputs = {"ir": kir_text(program, shown, describe)} if "ir" in forms else {}

    def timed(stage, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings.append((stage, time.perf_counter() - t))
        return result

    outputs.update(registry.for_target(tgt).emit(program, dtype, acc, sum_scheme, sched, forms, timed, variant))
    if "dot" in forms:
        outputs["dot"] = to_dot(program)
    return Explanation(stages, program, outputs, timings, shown, statistics, describe)


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
