"""The workbench's commands, `keomlir reduce`, `keomlir bench` and `keomlir explain`, added to
the `keomlir` command by `keomlir/cli.py`."""

from __future__ import annotations

import pathlib
import sys

from ..explain import explain
from ..passes import DEFAULT_PIPELINE, load_pass_file
from ..schedule.kir import parse_kir
from . import bench as benchmod
from . import reduce as reducemod


def add_commands(sub, formula_options):
    """Add the commands (see COMMANDS) to the subparsers `sub`; `formula_options(parser)` adds the
    options naming a reduction.  Returns their parsers."""
    red = sub.add_parser(
        "reduce", help="shrink a formula while a test stays true (delta debugging)",
        description="Shrink a formula while a test stays true, as C-Reduce and llvm-reduce do: nodes replaced "
                    "by the nodes below them, by variables or by the constant 1, dimensions of aliases lowered "
                    "to 1, smallest first, until no such move keeps the test true.  Prints the smallest formula "
                    "found, its aliases, the pass to blame (for a pipeline that changes results) and its IR.  "
                    "The test (default): the CPU backend after --passes and the reference backend on the formula "
                    "as written disagree beyond --rtol/--atol on random inputs.",
        epilog="example: keomlir reduce 'Exp(-SqDist(x,y))*b' -a 'x=Vi(3)' -a 'y=Vj(3)' -a 'b=Vj(1)' "
               "--passes autodiff,simplify,mypass,cse")
    formula_options(red)
    red.set_defaults(dtype="float64")
    red.add_argument("--passes", metavar="NAME,NAME,...",
                     help=f"the pipeline under test (default: {','.join(DEFAULT_PIPELINE)})")
    red.add_argument("--backend", choices=reducemod.BACKENDS, default="cpu",
                     help="the backend that runs the pipeline under test (default: cpu; reference: test the "
                          "passes alone, without compiling)")
    red.add_argument("--against-passes", metavar="NAME,NAME,...", default=reducemod.WRITTEN,
                     help="the other side's pipeline (default: 'written', the formula as written, derivatives "
                          "expanded; 'default': the default pipeline)")
    red.add_argument("--against-backend", choices=reducemod.BACKENDS, default="reference",
                     help="the other side's backend (default: reference)")
    red.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of the comparison (default 1e-6)")
    red.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance of the comparison (default 1e-9)")
    kind = red.add_mutually_exclusive_group()
    kind.add_argument("--crash", action="store_true",
                      help="the test: building, compiling or running after --passes raises the same kind of "
                           "exception as the formula given")
    kind.add_argument("--command", dest="shell_command", metavar="SHELL",
                      help="the test: a shell command exits with --status; it reads the case from "
                           "$KEOMLIR_REDUCE_ARGS (keomlir ir arguments, shell-quoted), $KEOMLIR_REDUCE_FORMULA, "
                           "$KEOMLIR_REDUCE_FORMULA2, $KEOMLIR_REDUCE_ALIASES (one a line), $KEOMLIR_REDUCE_REDUCTION")
    red.add_argument("--match", metavar="TEXT", help="with --crash: the exception's message must contain TEXT")
    red.add_argument("--status", type=int, default=0, help="with --command: the exit status that keeps a case "
                                                           "(default 0)")
    red.add_argument("--timeout", type=float, default=60.0, help="with --command: seconds a run may take (default 60)")
    red.add_argument("--size", default="16,16", metavar="M,N", help="rows of the random inputs (default 16,16)")
    red.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    red.add_argument("--budget", type=float, default=300.0, metavar="SECONDS",
                     help="stop after this long with the smallest case so far (default 300)")
    red.add_argument("-q", "--quiet", action="store_true", help="do not print each smaller case as it is found")

    bench = sub.add_parser(
        "bench", help="time a formula's kernel: Gpairs/s, GFLOP/s and the fraction of the machine's peak",
        description="Run a formula's kernel on random inputs (standard normal) of the given sizes on the CPU and "
                    "print each variant's median time, pairs a second, GFLOP/s (counted from the optimized IR, "
                    "exp and log at their polynomial cost) and the fraction of the host's peak (SIMD lanes x FMA "
                    "units x 2 x clock x cores), each output checked against the reference backend on a slice of "
                    "its rows.  Variants: the default pipeline and schedule, then one per --passes and per "
                    "--schedule, timed in alternating rounds, with their ratios to the default.  The last line: "
                    "'default: SECONDS s, X Gpairs/s, Y GFLOP/s, Z % of peak'.  FORMULA may be a .kir file (or - for "
                    "standard input), as `keomlir ir` prints: its program as it is, then one variant per --passes.",
        epilog="example: keomlir bench 'Exp(-SqDist(x,y)) * b' -a 'x = Vi(3)' -a 'y = Vj(3)' -a 'b = Vj(1)' "
               "--size 20000,20000 --schedule rows=2")
    formula_options(bench)
    bench.add_argument("--size", required=True, metavar="M,N", help="rows of the i variables and of the j variables")
    bench.add_argument("--passes", action="append", default=[], metavar="NAME,NAME,...",
                       help="a variant with this pipeline ('' for none); repeat for more")
    bench.add_argument("--schedule", action="append", default=[], metavar="FIELD=VALUE,...",
                       help="a variant with these schedule overrides; repeat for more")
    bench.add_argument("--rounds", type=int, metavar="K",
                       help="alternating rounds to time (default: as many as fit in --seconds, 3 to 100)")
    bench.add_argument("--seconds", type=float, default=2.0, help="time for the rounds (default 2)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")

    page = sub.add_parser(
        "explain", help="every stage of a formula; --html: one self-contained page to look at",
        description="Print the IR after parsing and after each pass, then the schedule; with --html, write one "
                    "self-contained HTML page instead: the formula, the IR after each stage with its changes "
                    "highlighted, the graph (SVG), the schedule, LLVM IR, assembly and PTX in tabs, the time of "
                    "each stage as a bar chart and, with --bench, the bench numbers.",
        epilog="example: keomlir explain 'Exp(-SqDist(x,y))*b' -a 'x=Vi(3)' -a 'y=Vj(3)' -a 'b=Vj(1)' --html k.html")
    formula_options(page)
    page.add_argument("--passes", metavar="NAME,NAME,...", help="run exactly these passes, in order ('' for none)")
    page.add_argument("--target", metavar="NAME", help="the CPU to schedule and compile for (default: the host)")
    page.add_argument("--schedule", metavar="FIELD=VALUE,...", help="override fields of the schedule")
    page.add_argument("--html", metavar="FILE", help="write the page to FILE")
    page.add_argument("--bench", metavar="M,N", help="with --html: also bench the kernel at these sizes on the page")
    for command in (page, red, bench):
        command.add_argument("--load-pass", action="append", default=[], metavar="FILE.py",
                             help="run this Python file first: the passes it registers may then be named in "
                                  "--passes; repeat for several")
    return [page, red, bench]


def _load_passes(args):
    for path in args.load_pass:
        load_pass_file(path)


def cmd_reduce(args):
    _load_passes(args)
    case = reducemod.make_case(args.formula, args.alias, args.reduction, args.axis, args.opt_arg, args.formula2)
    sizes = benchmod.parse_sizes(args.size)
    if args.shell_command is not None:
        test = reducemod.Command(args.shell_command, args.status, args.timeout)
    elif args.crash:
        test = reducemod.Crash(args.passes, args.backend, args.match, args.dtype, sizes, args.seed)
    else:
        test = reducemod.Compare(args.passes, args.backend, args.against_passes, args.against_backend, args.rtol,
                                 args.atol, args.dtype, sizes, args.seed)
    if args.budget <= 0:
        raise ValueError(f"--budget: expected a positive number of seconds, got {args.budget:g}")
    done = reducemod.reduce(case, test, args.budget, None if args.quiet else print)
    print("\n".join(done.lines()))


def cmd_bench(args):
    _load_passes(args)
    kir = None
    if args.formula == "-" or args.formula.endswith(".kir"):  # a program as `keomlir ir` prints it
        if args.alias:
            raise ValueError(f"-a/--alias: {args.formula} declares its own arguments; give no aliases")
        kir = parse_kir(sys.stdin.read() if args.formula == "-" else pathlib.Path(args.formula).read_text(),
                        args.formula)
    result = benchmod.bench(args.formula, args.alias, args.reduction, args.axis, args.opt_arg, args.formula2,
                            benchmod.parse_sizes(args.size), args.dtype, args.passes, args.schedule, args.rounds,
                            args.seconds, args.seed, kir)
    print("\n".join(result.lines()))
    return 0 if result.passed else 1


def cmd_explain(args):
    _load_passes(args)
    forms = ("ir", "llvm", "llvm-opt", "asm") if args.html else ("ir",)
    ex = explain(args.formula, args.alias, args.reduction, args.axis, args.opt_arg, args.formula2, args.dtype,
                 args.passes, forms, args.target, args.schedule)
    if not args.html:
        if args.bench:
            raise ValueError("--bench: the bench numbers go on the page: give --html FILE too")
        print(ex)
        return 0
    sizes = benchmod.parse_sizes(args.bench, "--bench")
    text = ex.to_html(bench=sizes)
    pathlib.Path(args.html).write_text(text, encoding="utf-8")
    print(f"wrote {args.html} ({len(text.encode())} bytes)")
    return 0


COMMANDS = {"explain": cmd_explain, "reduce": cmd_reduce, "bench": cmd_bench}  # handlers: exit status or None
