"""The `keomlir` command: watch a formula go through every stage of the compiler
(as `mlir-opt` and LLVM's `opt`/`llc` do), inspect the kernel cache, and see
what this machine offers.  A thin layer over `keomlir.explain`."""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import textwrap

import llvmlite
import llvmlite.binding as llvm
import numpy

from ._version import __version__
from .backends import cache, tuned
from .backends.cuda import driver
from .backends.launch import numpy_dtype
from .backends.registry import VARIANTS
from .compile import DTYPES, CompiledReduction
from .explain import explain, opt
from .ir.reductions import REDUCTIONS
from .passes import DEFAULT_PIPELINE, PASSES, load_pass_file
from .schedule import names, target
from .schedule.record import settable
from .schedule.space import searched
from .schedule.targets import detect_host, size_text
from .tune import BUDGET, check_budget, tune
from .workbench import cli as workbench

CLI_FORMS = ("ir", "llvm", "llvm-opt", "asm", "ptx", "dot")
VECTOR_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "sve")
PROBED_TARGETS = ("x86_64-unknown-linux-gnu", "nvptx64-nvidia-cuda", "aarch64-unknown-linux-gnu",
                  "amdgcn-amd-amdhsa")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keomlir", description="keomlir, a compiler of kernel reductions: see and steer every stage.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"keomlir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{ir,opt,explain,reduce,bench,tune,cache,info}")

    ir = sub.add_parser(
        "ir", help="show a formula's IR, LLVM IR, assembly, PTX or graph",
        description="Compile a formula and print it after the stages asked for (default: the IR after the "
                    "default pass pipeline).",
        epilog='example: keomlir ir "Exp(-SqDist(x,y))*b" -a "x=Vi(3)" -a "y=Vj(3)" -a "b=Vj(1)" --emit asm')
    _formula_options(ir)
    _compile_options(ir, f"run exactly this pipeline, in order ('' for none): NAME or NAME{{option=value,...}} "
                         f"items; default: {','.join(DEFAULT_PIPELINE)}")

    opt_cmd = sub.add_parser(
        "opt", help="read IR as `keomlir ir` prints it (a .kir file), run passes on it, print it or its code",
        description="The mlir-opt of keomlir: read a program as `keomlir ir` prints it (header, nodes, roots, and "
                    "optionally its schedule: a .kir file, or - for standard input), verify it, run the passes "
                    "asked for (none by default) and print the result (IR and schedule, reading back the same) "
                    "or its LLVM IR, assembly, PTX or graph.  Its schedule keeps the fields the file set away "
                    "from their defaults; the others follow the program.",
        epilog="example: keomlir ir \"Exp(-SqDist(x,y))*b\" -a \"x=Vi(3)\" -a \"y=Vj(3)\" -a \"b=Vj(1)\" --passes '' "
               "> k.kir; keomlir opt k.kir --passes simplify,cse --pass-statistics")
    opt_cmd.add_argument("file", metavar="FILE.kir", help="the IR to read ('-': standard input)")
    opt_cmd.add_argument("--dtype", choices=DTYPES,
                     help="floating-point type of the generated code (default: the file's schedule's, or float32)")
    _compile_options(opt_cmd, "run exactly this pipeline, in order: NAME or NAME{option=value,...} items (default: "
                          "none, the file's program as it is)")

    tune = sub.add_parser(
        "tune", help="find the fastest schedule of a formula at a size on this machine, for later calls",
        description="Measure candidate schedules of a formula's kernel on this machine at one size (the default "
                    "schedule always among them: each searched field of the schedule varied alone, then the "
                    "winners combined), print each with its time, and keep the best in the tuning database "
                    "beside the kernel cache: every later call of this program at sizes of the same class (log2 "
                    "buckets of M and N) runs with it.  The last line is 'best: OVERRIDES SECONDS s (RATIO x the "
                    "default)'; a schedule that does not beat the default beyond the measurement noise is not "
                    "kept (best: default).",
        epilog='example: keomlir tune "Exp(-SqDist(x,y))*b" -a "x=Vi(3)" -a "y=Vj(3)" -a "b=Vj(1)" --size 20000,20000')
    _formula_options(tune)
    tune.add_argument("--size", required=True, metavar="M,N",
                      help="rows of the i variables (Vi) and of the j variables (Vj) of the calls to tune for")
    tune.add_argument("--budget", type=float, default=BUDGET, metavar="SECONDS",
                      help=f"time allowed, compiling included (default: {BUDGET:g})")
    tune.add_argument("--fields", metavar="NAME,NAME,...",
                      help=f"search only these fields of the schedule (default: all of "
                           f"{', '.join(searched('cpu'))})")

    cache = sub.add_parser("cache", help="where the kernel cache is and how big",
                           description="Show the on-disk kernel cache ($KEOMLIR_CACHE_DIR or ~/.cache/keomlir).")
    cache.add_argument("--clear", action="store_true", help="remove every cached kernel")
    info = sub.add_parser("info", help="versions, LLVM targets, host CPU features, CUDA driver and GPUs",
                   description="Show versions, LLVM targets, host CPU features and whether a CUDA driver and "
                               "GPU are visible.")
    extra = workbench.add_commands(sub, _formula_options)
    usages = "".join(textwrap.indent(p.format_usage(), "  ") for p in (ir, opt_cmd, *extra, tune, cache, info))
    parser.epilog = f"commands:\n{usages}\n'keomlir COMMAND --help' explains each option."
    return parser


def _compile_options(command, passes_help):
    """The options of the commands that run passes and print what they made (ir, opt)."""
    command.add_argument("--passes", metavar="PIPELINE", help=f"{passes_help}; passes: {', '.join(PASSES)} and "
                                                               f"those --load-pass adds")
    command.add_argument("--load-pass", action="append", default=[], metavar="FILE.py",
                         help="run this Python file first: the passes it registers (@keomlir.passes.register_pass) "
                              "may then be named in --passes; repeat for several")
    command.add_argument("--print-ir-after-all", action="store_true",
                         help="print the IR after parsing and after each pass, each under a header naming the stage")
    command.add_argument("--print-ir-after-change", action="store_true",
                         help="print the IR after parsing and after each pass that changed it")
    command.add_argument("--pass-statistics", action="store_true",
                         help="print to stderr what each pass did: nodes before and after, rewrites by rule, CSE "
                              "merges, constants folded")
    command.add_argument("--verify-each", dest="verify", action="store_true", default=True,
                         help="verify the IR before the pipeline and after each pass (default)")
    command.add_argument("--no-verify", dest="verify", action="store_false",
                         help="do not verify: to study broken IR")
    command.add_argument("--bisect-limit", type=int, metavar="N",
                         help="make only the first N rewrites of the pipeline, printing to stderr each one's number, "
                              "pass and rule (as LLVM's -opt-bisect-limit): bisect N to find a faulty rewrite")
    command.add_argument("--emit", choices=CLI_FORMS, default="ir",
                         help="what to print: ir (keomlir IR and its schedule, default), llvm (LLVM IR as generated), "
                              "llvm-opt (after LLVM's O3), asm (host assembly), ptx (NVPTX assembly, needs no GPU), "
                              "dot (Graphviz graph of the IR, colored by index: render with dot -Tsvg)")
    command.add_argument("--target", metavar="NAME",
                         help=f"the machine to schedule and compile for: {', '.join(names())} or any sm_XX (default: "
                              f"the host, $KEOMLIR_TARGET's instruction set if set; sm_80 for --emit ptx); asm of "
                              f"another CPU is cross-compiled")
    command.add_argument("--variant", choices=VARIANTS, default="kernel",
                         help="the CPU entry points of llvm, llvm-opt and asm: kernel (whole rows, default), split_j "
                              "(parts of j for few rows, their states merged) or ranges (block-sparse)")
    command.add_argument("--schedule", metavar="FIELD=VALUE,...",
                         help=f"override fields of the schedule (ir: after $KEOMLIR_SCHEDULE's; opt: after the "
                              f"file's), e.g. rows=4,cache_block=256KiB; fields: {', '.join(settable())}")
    command.add_argument("--sizes", metavar="M,N",
                         help="also show the fields of a call with M rows i and N j (threads, GPU plan)")
    command.add_argument("--time-passes", action="store_true",
                         help="print to stderr the seconds spent in each stage: parse, each pass, LLVM IR rendering, "
                              "LLVM optimization, machine code")


def _formula_options(command):
    """The options naming a reduction, as Genred takes them."""
    command.add_argument("formula", help='the formula F, e.g. "Exp(-SqDist(x,y))*b"')
    command.add_argument("-a", "--alias", action="append", default=[], metavar="ALIAS",
                         help='a variable, e.g. "x = Vi(3)", "y = Vj(3)", "p = Pm(1)"; repeat for each, in argument '
                              'order')
    command.add_argument("--reduction", default="Sum", metavar="NAME",
                         help=f"the reduction: {', '.join(sorted(REDUCTIONS))} (default: Sum)")
    command.add_argument("--axis", type=int, choices=(0, 1), default=1,
                         help="1: reduce over j, one output per i (default); 0: reduce over i")
    command.add_argument("--opt-arg", type=int, metavar="K", help="K of KMin, ArgKMin and KMin_ArgKMin")
    command.add_argument("--formula2", metavar="G",
                         help="the second formula of weighted LogSumExp and SumSoftMaxWeight")
    command.add_argument("--dtype", choices=DTYPES, default="float32",
                         help="floating-point type of the data (default: float32; half data, float16 and "
                              "bfloat16, is computed in float32)")


def _emit_forms(args):
    return [args.emit] + (["obj"] if args.time_passes and args.emit != "ptx" else [])


def _pipeline_options(args):
    """The passes files loaded, and the options of `explain`/`opt` every such command shares."""
    for path in args.load_pass:
        load_pass_file(path)
    bisect = None if args.bisect_limit is None else (lambda line: print(line, file=sys.stderr))
    return dict(emit=_emit_forms(args), target=args.target, schedule=args.schedule, sizes=_sizes(args.sizes),
                variant=args.variant, verify=args.verify, bisect_limit=args.bisect_limit, on_bisect=bisect)


def cmd_ir(args):
    options = _pipeline_options(args)
    ex = explain(args.formula, args.alias, args.reduction, args.axis, args.opt_arg, args.formula2,
                 args.dtype, args.passes, **options)
    _show(ex, args)


def cmd_opt(args):
    options = _pipeline_options(args)
    if args.file == "-":
        text, what = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, what = pathlib.Path(args.file).read_text(), args.file
        except OSError as e:
            raise ValueError(f"FILE.kir: cannot read {args.file!r} ({e.strerror})") from None
    _show(opt(text, args.passes or (), dtype=args.dtype, what=what, **options), args)


def _show(ex, args):
    """Print what was asked of an Explanation: stages or the form emitted, then to stderr the
    statistics and timings."""
    if args.print_ir_after_all or args.print_ir_after_change:
        print(ex.text(changed_only=not args.print_ir_after_all))
        if args.emit != "ir":  # else the last stage printed is already the output
            print(f"\n// ----- {args.emit} ----- //\n{ex.outputs[args.emit].rstrip()}")
    else:
        print(ex.outputs[args.emit].rstrip())
    if args.pass_statistics:
        print(ex.statistics_text(), file=sys.stderr)
    if args.time_passes:
        width = max(len(name) for name, _ in ex.timings)
        total = sum(s for _, s in ex.timings)
        rows = [f"{'stage':<{width}}  {'seconds':>9}"] + [f"{n:<{width}}  {s:9.6f}" for n, s in ex.timings]
        print("\n".join(rows + [f"{'total':<{width}}  {total:9.6f}"]), file=sys.stderr)


def _sizes(text, option="--sizes", least=0):
    if text is None:
        return None
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= least for p in parts):
        kind = "positive" if least else "non-negative"
        raise ValueError(f"{option}: expected M,N (two {kind} integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def cmd_tune(args):
    m, n = _sizes(args.size, "--size", 1)
    budget = check_budget(args.budget, "--budget")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields is not None else None
    red = CompiledReduction(args.formula, args.alias, args.reduction, args.axis, args.opt_arg, args.formula2)
    # (shapes only: the tuner makes its own data)
    arrays = [numpy.empty((dim,) if cat == 2 else (m if cat == 0 else n, dim), numpy_dtype(args.dtype))
              for _, dim, cat in red.arguments]
    tune(red.launch(arrays), budget, fields, out=print)


def cmd_cache(args):
    entries = cache.entries()
    size = sum(p.stat().st_size for p in entries)
    print(f"cache directory: {cache.cache_dir()}")
    print(f"entries:         {len(entries)}")
    print(f"size:            {size} bytes ({size / 2**20:.2f} MiB)")
    print(f"tuned schedules: {len(tuned.entries())} (keomlir tune, in {cache.cache_dir() / tuned.FOLDER})")
    if args.clear:
        print(f"cleared:         {cache.clear()} entries removed")


def cuda_status():
    """The CUDA driver and its GPUs as the GPU runtime sees them, never raising."""
    if not driver.available():
        return driver.unavailable_reason(), "none visible"
    try:
        major, minor = driver.version()
        gpus = [f"{k}: {driver.device_name(k)}" for k in range(driver.device_count())]
    except (driver.CudaError, AttributeError, OSError) as e:  # a libcuda without these calls
        return f"{driver.library_name()} loads, but is not usable ({e})", "none visible"
    return f"{driver.library_name()}, CUDA {major}.{minor}", ", ".join(gpus) or "none visible"


def cmd_info(args):
    llvm.initialize_all_targets()
    targets = []
    for triple in PROBED_TARGETS:
        try:
            t = llvm.Target.from_triple(triple)
            targets.append(f"{t.name} ({t.description})")
        except RuntimeError:
            pass
    # the detected host's (LLVM's map, or AArch64 Linux's hardware capabilities where LLVM reads none)
    enabled = [f[1:] for f in detect_host().features.split(",") if f.startswith("+")]
    vector = sorted(f for f in enabled if f.startswith(VECTOR_PREFIXES))
    driver, gpus = cuda_status()
    host = target("host")
    rows = [("keomlir", __version__), ("python", platform.python_version()), ("numpy", numpy.__version__),
            ("llvmlite", llvmlite.__version__), ("LLVM", ".".join(map(str, llvm.llvm_version_info))),
            ("LLVM targets", ", ".join(targets)), ("host triple", llvm.get_process_triple()),
            ("host CPU", llvm.get_host_cpu_name()), ("vector features", " ".join(vector)),
            ("host target", f"{host.name} ({host.cpu}): {host.vector_bits}-bit vectors x {host.vector_registers}, "
                            f"L1 {size_text(host.l1_bytes)}, L2 {size_text(host.l2_bytes)}, L3 "
                            f"{size_text(host.l3_bytes)} per core, {host.cores} cores"),
            ("named targets", ", ".join(names()[1:]) + ", sm_XX"),
            ("CUDA driver", driver), ("GPUs", gpus)]
    for key, value in rows:
        print(f"{key + ':':<17}{value}")


def _option_strings(parser):
    """Every option string of the parser and its subcommands."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _formulas_as_operands(parser, argv):
    """A formula may start with '-' ("-SqDist(x,y)", "-x"): argparse would read it as an
    option.  A word with one leading '-' that does not start with a short option (-a, -h)
    is passed with a leading space (the grammar ignores it), so argparse takes it as an operand."""
    options = _option_strings(parser)
    return [" " + w if w.startswith("-") and not w.startswith("--") and w[:2] not in options and w != "-" else w
            for w in argv]


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(_formulas_as_operands(parser, sys.argv[1:] if argv is None else list(argv)))
    try:
        status = {"ir": cmd_ir, "opt": cmd_opt, "tune": cmd_tune, "cache": cmd_cache, "info": cmd_info,
                  **workbench.COMMANDS}[args.command](args)
    except (SyntaxError, ValueError, TypeError, NotImplementedError) as e:
        print(f"keomlir: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `keomlir ir ... | head`: stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status or 0
