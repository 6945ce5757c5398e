"""What every array front end (NumPy, torch) shares: the Genred constructors, leading
batch dimensions (one block-sparse call for a whole batch), and pykeops's `generic_*`
shortcuts."""

from __future__ import annotations

import math

import numpy as np

from .compile import CompiledReduction, check_str
from .grammar import parse_alias
from .passes import DEFAULT_PIPELINE
from .schedule.kir import parse_kir

class GenredBase:
    """What the NumPy and torch `Genred` share: pykeops's constructor, `from_ir` for code
    that builds IR, and the program; each front end adds its `__call__`."""

    def __init__(self, formula, aliases, reduction_op="Sum", axis=0, dtype=None, opt_arg=None,
                 formula2=None, cuda_type=None, dtype_acc="auto", use_double_acc=False,
                 sum_scheme="auto", enable_chunks=True, rec_multVar_highdim=False, use_fast_math=True,
                 passes=DEFAULT_PIPELINE, schedule=None, autotune=False):
        # pykeops 2.3's keywords, in its order.  Accepted and ignored: dtype and cuda_type
        # (deprecated there; the dtype comes from the arguments at call time) and the CUDA
        # compile hints enable_chunks, rec_multVar_highdim and use_fast_math (keomlir's
        # kernels choose their own schemes and keep accurate math).  schedule: fields of the
        # schedule of this reduction's kernels to override (keomlir.schedule), e.g. {"rows": 4,
        # "cache_block": "256KiB"} (its gradients, other programs, are scheduled by default).
        # autotune=True (or a budget in seconds, default 20): the first CPU call at each size
        # class (log2 buckets of M and N) is slow: it measures candidate schedules of this
        # program at its sizes (`keomlir tune`) and keeps the best in the tuning database,
        # which every later call of the program at sizes of that class uses (any Genred).
        dtype_acc = acc_option(dtype_acc, use_double_acc)
        self._set_reduction(CompiledReduction(formula, aliases, reduction_op, axis, opt_arg, formula2,
                                              dtype_acc, sum_scheme, passes, schedule, autotune))

    @classmethod
    def from_ir(cls, formula, formula2=None, reduction_op="Sum", axis=0, opt_arg=None, names=None,
                dtype_acc="auto", sum_scheme="auto", passes=DEFAULT_PIPELINE, schedule=None):
        """A Genred of IR nodes (see CompiledReduction.from_ir): for code that builds
        formulas (LazyTensor, KernelSolve, gradients) instead of writing text."""
        self = cls.__new__(cls)
        self._set_reduction(CompiledReduction.from_ir(formula, formula2, reduction_op, axis, opt_arg, names,
                                                      dtype_acc, sum_scheme, passes, schedule))
        return self

    @classmethod
    def from_kir(cls, text, dtype_acc="auto", sum_scheme="auto"):
        """The Genred of a program as `keomlir ir` prints it (a `.kir` text, edited or `keomlir opt`'s):
        reducing over j, no pass run, its schedule's decisions (fields set away from their defaults)
        kept on the host."""
        kir = parse_kir(text)
        self = cls.__new__(cls)
        self._set_reduction(CompiledReduction.from_program(kir.program, dtype_acc, sum_scheme, kir.decisions))
        return self

    @classmethod
    def from_spec(cls, spec):
        """The Genred of a reduction's `spec` text (see CompiledReduction.spec)."""
        self = cls.__new__(cls)
        self._set_reduction(CompiledReduction.from_spec(spec))
        return self

    def _set_reduction(self, reduction):
        """Every constructor ends here (a front end may attach more to the reduction)."""
        self.reduction = reduction

    @property
    def program(self):
        """The optimized IR this Genred compiles."""
        return self.reduction.program


def acc_option(dtype_acc, use_double_acc):
    """dtype_acc with pykeops's use_double_acc=True folded in (it means dtype_acc='float64')."""
    if not use_double_acc:
        return dtype_acc
    if dtype_acc != "auto":
        raise ValueError(f"use_double_acc=True and dtype_acc={dtype_acc!r}: set one of the two options only")
    return "float64"


def as_columns(reduction, args):
    """`args` with each 1-d array (n,) given for a dimension-1 Vi/Vj variable reshaped to
    (n, 1), as pykeops reads it: a view, never a copy, so torch autograd gives such an
    argument's gradient back with its own shape (n,).  Outputs keep their 2-d shapes."""
    out = args
    for k in reduction.column_args:
        if k < len(args) and len(args[k].shape) == 1:
            out = list(out) if out is args else out
            out[k] = args[k].reshape(args[k].shape[0], 1)
    return out


def batch_plan(reduction, shapes):
    """Leading batch dimensions of a call, pykeops's convention: i/j variables are
    `(..., n, d)` arrays and parameters `(..., d)`; batch dimensions broadcast (1
    stretches, missing leading ones count as 1).  A call is batched when an i/j variable
    has more than 2 dimensions or a parameter more than 2.  Returns None for a plain
    call (2-d variables, parameters `(d,)` or `(1, d)`), else (batch shape, each argument's
    batch shape left-padded to it, each argument's own number of batch dimensions).
    Shapes that fit neither are left to `check_arrays`, which names the argument."""
    if len(shapes) != len(reduction.arguments) or all(len(shape) <= 2 for shape in shapes):
        return None  # (no argument can have batch dimensions: the plain call, answered first)
    leads, batched = [], False
    for (_, _, cat), shape in zip(reduction.kernel_arguments, shapes):
        core = 1 if cat == 2 else 2
        if len(shape) < core:
            return None
        lead = tuple(int(s) for s in shape[:len(shape) - core])
        leads.append(lead)
        if lead and (cat != 2 or len(lead) > 1):  # as pykeops: a (n, d) parameter alone is no batch
            batched = True
    if not batched:
        return None
    nb = max(len(lead) for lead in leads)
    own = [len(lead) for lead in leads]
    leads = [(1,) * (nb - len(lead)) + lead for lead in leads]
    batch = []
    for t in range(nb):
        sizes = {lead[t] for lead in leads} - {1}
        if len(sizes) > 1:
            detail = ", ".join(f"{reduction.arg_label(p)} has {lead[nb - n:]}"
                               for p, (lead, n) in enumerate(zip(leads, own)))
            raise ValueError(f"batch dimensions do not broadcast: {detail}")
        batch.append(sizes.pop() if sizes else 1)
    return tuple(batch), leads, own


def run_batched(plan, args, call_one, stack):
    """Run a batched call one batch element at a time: `call_one(elements)` is the
    plain call (returning an array or a tuple of arrays), `stack` np.stack or
    torch.stack.  Reshaping, indexing and stacking are ordinary array operations, so
    torch autograd flows through them (a broadcast argument gets the sum of its
    elements' gradients)."""
    batch, leads, own = plan
    if any(s == 0 for s in batch):
        raise ValueError(f"batch dimensions {batch} hold no element")
    padded = [a.reshape((1,) * (len(lead) - n) + tuple(a.shape)) for a, lead, n in zip(args, leads, own)]
    results = []
    for idx in np.ndindex(*batch):
        elements = [a[tuple(0 if s == 1 else i for s, i in zip(lead, idx))] for a, lead in zip(padded, leads)]
        results.append(call_one(elements))
    if isinstance(results[0], tuple):
        return tuple(stack([r[k] for r in results]).reshape(batch + tuple(results[0][k].shape))
                     for k in range(len(results[0])))
    return stack(results).reshape(batch + tuple(results[0].shape))


def stack_batch(reduction, plan, args, xp):
    """A batched call as ONE block-sparse call (no loop over the batch): the rows of every
    batch element are stacked, and a `ranges` 6-tuple makes element b's output rows reduce
    over element b's rows only.  Arguments of the reduced index that no element changes are
    not copied (every block reads the same rows); a parameter that varies over the batch
    becomes a variable of the output index (one row per output row: `recat`).  Returns
    (recat positions, stacked arguments, ranges, unstack(outputs) -> batched outputs)."""
    batch, leads, own = plan
    if any(s == 0 for s in batch):
        raise ValueError(f"batch dimensions {batch} hold no element")
    first = [a[(0,) * n] for a, n in zip(args, own)]
    reduction.check_arrays(first)  # every element's shapes and dtypes, with the usual messages
    n_batch = math.prod(batch)
    out_cat = 0 if reduction.axis == 1 else 1  # caller categories: output rows, reduced rows
    red_cat = 1 - out_cat
    rows = {0: 1, 1: 1}
    for (_, _, cat), a in zip(reduction.arguments, first):
        if cat != 2:
            rows[cat] = a.shape[0]
    m, n = rows[out_cat], rows[red_cat]
    varies = [any(s != 1 for s in lead) for lead in leads]
    red_varies = any(v for (_, _, cat), v in zip(reduction.arguments, varies) if cat == red_cat)
    recat = tuple(pos for (pos, _, cat), v in zip(reduction.arguments, varies) if cat == 2 and v)
    stacked = []
    for (pos, dim, cat), a, lead, k in zip(reduction.arguments, args, leads, own):
        core = tuple(a.shape[k:])
        a = a.reshape(lead + core)
        if pos in recat:  # (batch, dim) -> one row per output row of its element
            a = xp.broadcast_to(a.reshape(lead + (1, dim)), batch + (m, dim)).reshape(n_batch * m, dim)
        elif cat == 2:
            a = a.reshape(dim)
        elif cat == out_cat or red_varies:
            a = xp.broadcast_to(a, batch + core).reshape(n_batch * core[0], dim)
        else:
            a = a.reshape(core)
        stacked.append(a)
    # the ranges from Python integers (sizes only): a tracer such as torch.compile's Dynamo
    # makes them constants of the trace
    blocks = range(n_batch)
    out_blocks = [[k * m, k * m + m] for k in blocks]
    slices = [k + 1 for k in blocks]
    if red_varies:
        red_blocks = [[k * n, k * n + n] for k in blocks]
        red_half = [red_blocks, slices, out_blocks]
    else:  # one shared block of reduced rows, read by every element
        red_blocks = [[0, n]] * n_batch
        red_half = [[[0, n]], [n_batch], out_blocks]
    out_half = [out_blocks, slices, red_blocks]
    ranges = tuple(xp.ranges_array(r) for r in (out_half + red_half if out_cat == 0 else red_half + out_half))
    kinds = [kind for _, kind in reduction.outputs]

    def unstack(outs):
        """Stacked outputs back to batch + (rows, ...), indices made local to their element."""
        results = []
        for out, kind in zip(outs, kinds):
            out = out.reshape((n_batch, m) + tuple(out.shape[1:]))
            if kind == "index" and red_varies:
                offset = xp.array([k * n for k in blocks], "int64", xp.device(out))
                offset = offset.reshape((n_batch,) + (1,) * (out.ndim - 1))
                out = xp.where(out >= 0, out - offset, out)  # -1: no j, stays -1
            results.append(out.reshape(batch + tuple(out.shape[1:])))
        return results

    return recat, stacked, ranges, unstack


def generic_reductions(genred_cls):
    """pykeops's `generic_sum`, `generic_logsumexp`, `generic_argmin` and `generic_argkmin`
    for one front end: a Genred whose axis (and K) come from an output alias such as
    `"a = Vi(1)"` (indexed by i: reduce over j) written before the input aliases."""

    def make(reduction_op, formula, output, aliases, kwargs):
        check_str(output, "output")
        _, var = parse_alias(output, 0)
        _, dim, cat = var.attrs
        if cat == 2:
            raise ValueError(f"output {output!r}: the output is indexed by i or j, write Vi(...) or Vj(...)")
        if reduction_op == "ArgKMin":
            kwargs = dict(kwargs, opt_arg=dim)
        genred = genred_cls(formula, list(aliases), reduction_op=reduction_op, axis=1 if cat == 0 else 0, **kwargs)
        if reduction_op != "ArgKMin":
            width = int(np.prod(genred.reduction.outputs[0][0]))
            if width != dim:
                raise ValueError(f"output {output!r}: the {reduction_op} reduction of this formula has dimension "
                                 f"{width}, not {dim}")
        return genred

    def generic_sum(formula, output, *aliases, **kwargs):
        """Genred(formula, aliases, "Sum", axis from `output`)."""
        return make("Sum", formula, output, aliases, kwargs)

    def generic_logsumexp(formula, output, *aliases, **kwargs):
        """Genred(formula, aliases, "LogSumExp", axis from `output`)."""
        return make("LogSumExp", formula, output, aliases, kwargs)

    def generic_argmin(formula, output, *aliases, **kwargs):
        """Genred(formula, aliases, "ArgMin", axis from `output`)."""
        return make("ArgMin", formula, output, aliases, kwargs)

    def generic_argkmin(formula, output, *aliases, **kwargs):
        """Genred(formula, aliases, "ArgKMin", axis from `output`, K = its dimension)."""
        return make("ArgKMin", formula, output, aliases, kwargs)

    return generic_sum, generic_logsumexp, generic_argmin, generic_argkmin
