"""The compile entry: from a formula (text or IR) and a reduction to an optimized,
target-independent Program; from arrays to a checked `Launch` run by a backend.

Every front end goes through `CompiledReduction`: the NumPy and torch `Genred`
classes, LazyTensor, KernelSolve and the torch backward.  Formula text is only
one way in (`CompiledReduction(formula, aliases, ...)`); code that builds IR
calls `CompiledReduction.from_ir` and nothing is printed or parsed again.
"""

from __future__ import annotations

import operator

import numpy as np

from . import config, tune
from .backends import registry
from .backends.launch import DTYPES, HALF, Launch
from .grammar import parse_alias, parse_formula
from .ir import Program, make, replace_vars, serial, swap_ij, variables
from .ir.reductions import get as get_reduction
from .passes import DEFAULT_PIPELINE, PassManager, split_pipeline
from .schedule import host, parse_overrides, schedule as make_schedule
from .ranges import check_ranges, coalesce_intervals

ACC_DTYPES = ("auto", "float16", "float32", "float64")
SUM_SCHEMES = ("auto", "direct_sum", "block_sum", "kahan_scheme")
CAT_WORDS = {0: "i-indexed (Vi)", 1: "j-indexed (Vj)", 2: "parameter (Pm)"}


_DTYPE_NAMES: dict = {}


def _dtype_name(dtype):
    """'float32' of a NumPy or torch dtype (memoized: naming a dtype costs more than a small call)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def check_str(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")


def check_backend(backend):
    """The checked backend: 'auto' or a registered one's name ('CPU', 'GPU', 'reference',
    'host-sim'; pykeops's 'GPU_1D', 'GPU_2D_host'... are 'GPU'), available here."""
    found = "auto" if backend == "auto" else registry.canonical(backend) if isinstance(backend, str) else None
    if found is None:
        raise ValueError(f"backend must be 'auto', {', '.join(map(repr, registry.names()))} (or pykeops's "
                         f"'GPU_1D', 'GPU_2D'...), got {backend!r}")
    if found != "auto" and not registry.get(found).available():
        raise ValueError(f"backend={backend!r}: the {found} backend is not available on this machine "
                         f"({registry.get(found).unavailable_reason()}); use backend='CPU' or 'auto'")
    return found


def parse_aliases(aliases):
    """{name: Var node} from pykeops alias strings such as 'x = Vi(3)', in order."""
    if isinstance(aliases, str) or not isinstance(aliases, (list, tuple)):
        raise TypeError(f"aliases must be a list of strings such as ['x = Vi(3)'], got {type(aliases).__name__}")
    names = {}
    for index, text in enumerate(aliases):
        check_str(text, f"aliases[{index}]")
        name, var = parse_alias(text, index)
        if name in names:
            raise ValueError(f"aliases[{index}]: alias {name!r} is defined twice")
        names[name] = var
    return names


class CompiledReduction:
    """A verified, optimized reduction of a formula, compiled per dtype and target on demand.

    `CompiledReduction(formula, aliases, ...)` parses pykeops's text form;
    `CompiledReduction.from_ir(F, ...)` takes IR nodes built by code.
    """

    def __init__(self, formula, aliases=(), reduction_op="Sum", axis=0, opt_arg=None, formula2=None,
                 dtype_acc="auto", sum_scheme="auto", passes=DEFAULT_PIPELINE, schedule=None, autotune=False):
        check_str(formula, "formula")
        if formula2 is not None:
            check_str(formula2, "formula2")
        names = parse_aliases(aliases)
        f = parse_formula(formula, names)
        g = parse_formula(formula2, names, "formula2") if formula2 is not None else None
        self._build(f, g, names, reduction_op, axis, opt_arg, dtype_acc, sum_scheme, passes, schedule, autotune)

    @classmethod
    def from_ir(cls, formula, formula2=None, reduction_op="Sum", axis=0, opt_arg=None, names=None,
                dtype_acc="auto", sum_scheme="auto", passes=DEFAULT_PIPELINE, schedule=None):
        """The reduction of IR nodes F (and G); `names` ({alias: Var node}) only labels
        arguments in messages and printed IR.  Argument positions are those of the Vars."""
        self = cls.__new__(cls)
        self._build(formula, formula2, dict(names or {}), reduction_op, axis, opt_arg, dtype_acc, sum_scheme,
                    passes, schedule)
        return self

    @classmethod
    def from_program(cls, program, dtype_acc="auto", sum_scheme="auto", schedule=None):
        """The reduction of a `Program` as it is (one read from a `.kir` text, say): reducing over j,
        no pass run.  Every argument must be named or used (else the program has no caller's form)."""
        names = {alias: make("Var", (), attrs) for attrs, alias in program.names}
        self = cls.from_ir(program.formula, program.formula2, program.reduction, 1, program.opt_arg, names,
                           dtype_acc, sum_scheme, passes=(), schedule=schedule)
        if self.program.arguments != program.arguments:
            raise ValueError(f"program: arguments {program.arguments} are not those its named and used "
                             f"variables declare ({self.program.arguments}): name every argument the formulas "
                             f"do not use")
        return self

    def _build(self, f, g, names, reduction_op, axis, opt_arg, dtype_acc, sum_scheme, passes, schedule=None,
               autotune=False):
        check_str(reduction_op, "reduction_op")
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1):
            raise ValueError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
        if dtype_acc not in ACC_DTYPES:
            raise ValueError(f"dtype_acc must be one of {', '.join(ACC_DTYPES)}, got {dtype_acc!r}")
        if sum_scheme not in SUM_SCHEMES:
            raise ValueError(f"sum_scheme must be one of {', '.join(SUM_SCHEMES)}, got {sum_scheme!r}")
        red = get_reduction(reduction_op)
        if opt_arg is not None and not isinstance(opt_arg, bool):
            try:  # K as NumPy integers and 0-d integer tensors give it, as pykeops accepts
                opt_arg = operator.index(opt_arg)
            except TypeError:
                pass  # red.check names what was given
        self.reduction_op, self.axis, self.opt_arg = reduction_op, int(axis), opt_arg
        self.dtype_acc = dtype_acc
        self.sum_scheme = "block_sum" if sum_scheme == "auto" else sum_scheme
        self.formula, self.formula2 = f, g  # IR nodes, in the caller's i/j terms
        self.names = names  # {alias: Var node}, in the caller's terms
        self.passes = tuple(split_pipeline(passes)) if isinstance(passes, str) else tuple(passes)
        self.arguments = self._argument_table(list(names.values()) + variables(f, g))
        red.check(f.dim, None if g is None else g.dim, opt_arg)

        alias_of = {v.attrs: name for name, v in names.items()}
        if axis == 0:  # reduce over i: the same kernel with i and j exchanged
            f, g = swap_ij(f), (swap_ij(g) if g is not None else None)
            swap = {0: 1, 1: 0, 2: 2}
            alias_of = {(p, d, swap[c]): n for (p, d, c), n in alias_of.items()}
            self.kernel_arguments = tuple((p, d, swap[c]) for p, d, c in self.arguments)
        else:
            self.kernel_arguments = self.arguments
        self.arg_cats = tuple(cat for _, _, cat in self.kernel_arguments)
        # argument indices where pykeops reads a 1-d array (n,) as one column (n, 1)
        self.column_args = tuple(k for k, (_, dim, cat) in enumerate(self.arguments) if cat != 2 and dim == 1)
        program = Program(reduction_op, f, g, opt_arg, self.kernel_arguments, tuple(sorted(alias_of.items())))
        self.parsed = program
        self.program = PassManager(list(self.passes)).run(program)
        # the caller's schedule overrides (keomlir.schedule): checked now against the host's schedule,
        # so that a field this program does not allow is an error here, not at the first call
        self.schedule = parse_overrides(schedule)
        if self.schedule:
            make_schedule(self.program, host(), overrides=self.schedule)
        # autotune: the budget (seconds) of tuning the schedule at the first call of each size class, or None
        self.autotune = None if autotune is False or autotune is None else tune.BUDGET if autotune is True else \
            tune.check_budget(autotune, "autotune (True, False or a budget in seconds)")
        if self.autotune and self.schedule:
            raise ValueError("autotune and schedule: the schedule is either tuned or given; set one of the two")
        self.outputs = red.outputs(f.dim, None if g is None else g.dim, opt_arg)
        self._variants = {}
        self.spec = self.spec_of(self.formula, self.formula2, names, reduction_op, axis, opt_arg, dtype_acc,
                                 sum_scheme, self.passes)

    @staticmethod
    def spec_of(f, g, names, reduction_op, axis, opt_arg=None, dtype_acc="auto", sum_scheme="auto",
                passes=DEFAULT_PIPELINE):
        """The `spec` of the reduction `from_ir` builds from these arguments: exact text
        from which `from_spec` rebuilds an equal reduction, its name by content (the
        torch custom operators' key).  Fields joined by `|`: the reduction, axis, K,
        accumulator, summation, passes, alias names, then the formulas and the aliases'
        Var nodes (`ir.serial`)."""
        opt = "-" if opt_arg is None else str(operator.index(opt_arg))
        scheme = "block_sum" if sum_scheme == "auto" else sum_scheme
        dag = serial.dumps(f, g, *names.values())
        return "|".join((reduction_op, str(int(axis)), opt, dtype_acc, scheme, ",".join(passes), ",".join(names),
                         dag))

    @classmethod
    def from_spec(cls, spec):
        """The reduction a `spec` text names (see `_spec`)."""
        fields = spec.split("|") if isinstance(spec, str) else []
        if len(fields) != 8:
            raise ValueError(f"not a keomlir reduction spec (8 fields joined by '|'): {spec!r:.80}")
        op, axis, opt, acc, scheme, passes, names, dag = fields
        f, g, *vars_ = serial.loads(dag)
        labels = names.split(",") if names else []
        if len(labels) != len(vars_) or f is None:
            raise ValueError(f"not a keomlir reduction spec (its aliases do not match its nodes): {spec!r:.80}")
        return cls.from_ir(f, g, op, int(axis), None if opt == "-" else int(opt), dict(zip(labels, vars_)), acc,
                           scheme, tuple(split_pipeline(passes)))

    @property
    def options(self):
        """The compile options, for reductions derived from this one (gradients)."""
        return dict(dtype_acc=self.dtype_acc, sum_scheme=self.sum_scheme, passes=self.passes)

    def argument_vars(self):
        """{label: Var node} for every argument in the caller's terms, named or written
        inline (`_arg<pos>`): a reduction derived from this one takes the same arguments."""
        named = {v.attrs[0] for v in self.names.values()}
        extra = {f"_arg{p}": make("Var", (), (p, d, c)) for p, d, c in self.arguments if p not in named}
        return {**self.names, **extra}

    def with_categories(self, positions, cat):
        """This reduction with the arguments at `positions` made variables of category
        `cat` (a batched call turns parameters that vary over the batch into variables
        of the output index); cached."""
        key = (tuple(positions), cat)
        found = self._variants.get(key)
        if found is None:
            def recat(pos, dim, c):
                return (pos, dim, cat) if pos in key[0] else (pos, dim, c)

            f = replace_vars(self.formula, recat)
            g = replace_vars(self.formula2, recat) if self.formula2 is not None else None
            names = {name: make("Var", (), recat(*v.attrs)) for name, v in self.argument_vars().items()}
            found = self._variants[key] = CompiledReduction.from_ir(f, g, self.reduction_op, self.axis,
                                                                    self.opt_arg, names, **self.options,
                                                                    schedule=self.schedule)
        return found

    @staticmethod
    def _argument_table(vars_):
        by_pos = {}
        for v in vars_:
            pos = v.attrs[0]
            if pos in by_pos and by_pos[pos] != v.attrs:
                a, b = by_pos[pos], v.attrs
                raise ValueError(
                    f"argument {pos} is declared twice: as a {CAT_WORDS[a[2]]} variable of dimension {a[1]} "
                    f"and as a {CAT_WORDS[b[2]]} variable of dimension {b[1]}"
                )
            by_pos[pos] = v.attrs
        missing = [p for p in range(len(by_pos)) if p not in by_pos]
        if missing or (by_pos and max(by_pos) != len(by_pos) - 1):
            gaps = [p for p in range(max(by_pos) + 1) if p not in by_pos]
            raise ValueError(f"argument position(s) {gaps} are never declared: positions must be 0, 1, 2, ...")
        return tuple(by_pos[p] for p in sorted(by_pos))

    # ---- argument checking -------------------------------------------------------
    def arg_label(self, pos):
        for name_pos, name in self.parsed.names:
            if name_pos[0] == pos:
                return f"argument {pos} ('{name}')"
        return f"argument {pos}"

    def check_arrays(self, arrays):
        """Validate shapes and dtypes; returns (dtype, n_i, n_j) in kernel terms."""
        n = len(self.arguments)
        if len(arrays) != n:
            names = dict((pos, name) for (pos, _, _), name in self.parsed.names)
            labels = ", ".join(names.get(p, f"#{p}") for p in range(n))
            raise ValueError(f"expected {n} arguments ({labels}), got {len(arrays)}")
        dtypes = {a.dtype for a in arrays}  # dtype objects: naming each one costs more than the call
        if len(dtypes) > 1:
            detail = ", ".join(f"{self.arg_label(p)} is {a.dtype}" for p, a in enumerate(arrays))
            raise TypeError(f"all arguments must share one dtype: {detail}")
        dtype = _dtype_name(dtypes.pop()) if dtypes else "float64"
        if dtype not in DTYPES:
            raise TypeError(f"arguments must be float16, bfloat16, float32 or float64 arrays, got {dtype}")
        rows = {0: {}, 1: {}}
        for (pos, dim, cat), a in zip(self.kernel_arguments, arrays):
            shape = tuple(a.shape)
            if cat == 2:
                if shape != (dim,) and shape != (1, dim):
                    raise ValueError(f"{self.arg_label(pos)}: a parameter of dimension {dim} must have shape "
                                     f"({dim},), got {shape}")
                continue
            if len(shape) != 2:
                hint = {0: "", 1: " (a 1-d array is read as (n, 1) for a variable of dimension 1 only)"}.get(
                    len(shape), " (leading batch dimensions are not supported yet)")
                raise ValueError(f"{self.arg_label(pos)}: expected a 2-d array of shape (n, {dim}), got shape "
                                 f"{shape}{hint}")
            if shape[1] != dim:
                raise ValueError(f"{self.arg_label(pos)}: expected {dim} columns, got shape {shape}")
            rows[cat][pos] = shape[0]
        counts = []
        for cat in (0, 1):
            sizes = list(rows[cat].values())  # compared, not hashed: torch.compile's symbolic sizes do not hash
            if any(r != sizes[0] for r in sizes[1:]):
                detail = ", ".join(f"{self.arg_label(p)} has {r}" for p, r in rows[cat].items())
                word = "i" if (cat == 0) == (self.axis == 1) else "j"
                raise ValueError(f"arguments indexed by {word} must have the same number of rows: {detail}")
            counts.append(sizes[0] if sizes else 1)
        n_i, n_j = counts
        if get_reduction(self.reduction_op).needs_k and self.opt_arg > n_j:
            raise ValueError(
                f"opt_arg: K={self.opt_arg} is larger than the number of reduced rows {n_j} "
                f"(axis={self.axis})"
            )
        return dtype, n_i, n_j

    def acc_dtype(self, dtype):
        """The accumulator dtype for `dtype` data.  Half data (float16, bfloat16) is computed in
        float32 and summed in float32 or float64, so dtype_acc='float16' (which pykeops allows for
        float16 data only; here for bfloat16 too) gets float32 sums: at least as accurate as asked."""
        if self.dtype_acc == "float16":
            if dtype not in HALF:
                raise ValueError(f"dtype_acc='float16' is allowed for float16 or bfloat16 arguments only, got "
                                 f"{dtype} arguments (use dtype_acc='auto', 'float32' or 'float64')")
            return "float32"
        if self.dtype_acc == "auto":
            return "float32" if dtype in HALF else dtype  # half data is summed in float32
        return self.dtype_acc

    def kernel(self, dtype, sizes=None):
        """The host CPU kernel for `dtype` (compiled, or from the caches); with sizes=(n_i, n_j)
        (kernel terms), the one a dense call of those sizes runs (tuned, if `keomlir tune` was)."""
        cpu = registry.get("CPU")
        if sizes is None:
            return cpu.compile(self.program, dtype, self.acc_dtype(dtype), self.sum_scheme, overrides=self.schedule)
        return cpu.launch_kernel(Launch(self.program, dtype, self.acc_dtype(dtype), self.sum_scheme, self.arg_cats,
                                        *sizes, (), None, self.schedule))

    def output_shapes(self, n_i):
        return [((n_i,) + shape, kind) for shape, kind in self.outputs]

    def kernel_ranges(self, ranges, n_i, n_j):
        """The checked half of a `ranges` 6-tuple this reduction's kernel uses: the
        blocks of its output rows, their slices and the intervals they reduce over
        (consecutive intervals that touch joined: longer SIMD runs, fewer tails)."""
        if self.axis == 1:
            half = check_ranges(ranges, n_i, n_j)[:3]
        else:
            half = check_ranges(ranges, n_j, n_i)[3:]
        return tuple(half[:1] + coalesce_intervals(*half[1:]))

    def launch(self, arrays, ranges=None):
        """The checked `Launch` of a call on `arrays` (anything with .shape and .dtype)."""
        dtype, n_i, n_j = self.check_arrays(arrays)
        if ranges is not None:
            ranges = self.kernel_ranges(ranges, n_i, n_j)
        return Launch(self.program, dtype, self.acc_dtype(dtype), self.sum_scheme, self.arg_cats, n_i, n_j,
                      tuple(self.output_shapes(n_i)), ranges, self.schedule)

    def run_numpy(self, arrays, backend="auto", device_id=-1, ranges=None, launch=None):
        """Run on NumPy arrays; returns the list of outputs.  `launch`: the checked launch of the
        call, where the arrays hold bits the checks would not read (torch.bfloat16 as int16)."""
        launch = launch or self.launch(arrays, ranges)
        *first, last = backends_for(check_backend(backend), launch)
        for tried in first:
            try:
                return tried.run(launch, arrays, device_id)
            except NotImplementedError:  # a function the GPU backend lacks: 'auto' goes on to the CPU
                pass
        if self.autotune and last.kind == "cpu":  # (tuned on the host, for the host's runs)
            tune.ensure(launch, self.autotune)
        return last.run(launch, arrays, device_id)

    def tune_call(self, arrays, ranges=None):
        """An autotuned reduction's schedule tuned, if not yet, for a CPU call on `arrays`."""
        if self.autotune and ranges is None:
            tune.ensure(self.launch(arrays), self.autotune)


def backends_for(backend, launch):
    """The backends that run `launch` when `backend` (checked: available) is asked for, in order of
    trial: that one, or for 'auto' the GPU where it wants the launch (large, and `config.use_cuda`)
    then the CPU.  Data of a dtype the chosen backend does not take is a TypeError."""
    if backend != "auto":
        chosen = [registry.get(backend)]
    elif _GPU.wants(launch) and config.use_cuda:
        chosen = [_GPU, _CPU]
    else:
        chosen = [_CPU]
    if launch.dtype not in chosen[0].dtypes:
        raise TypeError(f"{launch.dtype} arguments: the {chosen[0].name} backend runs "
                        f"{', '.join(chosen[0].dtypes)} arguments")
    return chosen


_CPU, _GPU = registry.get("CPU"), registry.get("GPU")  # what backend='auto' chooses between
