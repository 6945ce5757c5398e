"""What every front end shares: from (formula, aliases, reduction) to an
optimized Program, and from arrays to checked, contiguous buffers.

The NumPy and torch `Genred` classes are thin layers over `Reduction`.
"""

from __future__ import annotations

import numpy as np

from .grammar import parse_alias, parse_formula
from .ir import Program, swap_ij, variables
from .ir.reductions import get as get_reduction
from .passes import DEFAULT_PIPELINE, PassManager

DTYPES = ("float32", "float64")
ACC_DTYPES = ("auto", "float32", "float64")
SUM_SCHEMES = ("auto", "direct_sum", "block_sum", "kahan_scheme")
CAT_WORDS = {0: "i-indexed (Vi)", 1: "j-indexed (Vj)", 2: "parameter (Pm)"}


def _check_str(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")


def check_backend(backend):
    if backend not in ("auto", "CPU", "GPU", "reference"):
        raise ValueError(f"backend must be 'auto', 'CPU', 'GPU' or 'reference', got {backend!r}")
    if backend == "GPU":
        from .backends import cuda

        if not cuda.available():
            raise ValueError(f"backend='GPU': the GPU backend is not available on this machine "
                             f"({cuda.unavailable_reason()}); use backend='CPU' or 'auto'")


RANGES_NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")


def _integer_array(value, what):
    """A NumPy int64 copy of an integer array (NumPy, torch on any device, nested lists)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):
        raise TypeError(f"{what}: expected an integer array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_half(arrays, names, n_rows, n_cols, rows_word, cols_word):
    """One direction of a ranges 6-tuple: blocks of rows, their slices, their intervals."""
    ranges, slices, red = arrays
    (rn, sn, dn) = names
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"{rn}: expected an integer array of shape (n_blocks, 2), got shape {ranges.shape}")
    if slices.shape != (ranges.shape[0],):
        raise ValueError(f"{sn}: expected shape ({ranges.shape[0]},), one end per block of {rn}, "
                         f"got shape {slices.shape}")
    if red.ndim != 2 or red.shape[1] != 2:
        raise ValueError(f"{dn}: expected an integer array of shape (n_intervals, 2), got shape {red.shape}")
    for a, name, limit, word in ((ranges, rn, n_rows, rows_word), (red, dn, n_cols, cols_word)):
        bad = np.flatnonzero((a[:, 0] < 0) | (a[:, 0] > a[:, 1]) | (a[:, 1] > limit))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{name}[{k}] = [{a[k, 0]}, {a[k, 1]}) is not an interval of the {limit} {word} "
                             f"(need 0 <= start <= end <= {limit})")
    if slices.size:
        bad = np.flatnonzero((slices < 0) | (slices > red.shape[0]) | (np.diff(slices, prepend=0) < 0))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{sn} must be non-decreasing ends in [0, {red.shape[0]}] (the length of {dn}); "
                             f"{sn}[{k}] = {slices[k]}")
        order = np.argsort(ranges[:, 0], kind="stable")
        starts, ends = ranges[order, 0], ranges[order, 1]
        overlap = np.flatnonzero(starts[1:] < ends[:-1])
        if overlap.size:
            a, b = int(order[overlap[0]]), int(order[overlap[0] + 1])
            raise ValueError(f"{rn}: blocks {a} and {b} share {rows_word} (each output row must belong to at "
                             f"most one block)")


def check_ranges(ranges, n_rows_i, n_rows_j):
    """pykeops's block-sparse `ranges`: a 6-tuple (ranges_i, slices_i, redranges_j,
    ranges_j, slices_j, redranges_i) of integer arrays, checked against M = n_rows_i
    and N = n_rows_j so that no kernel reads out of bounds.  Returns int64 arrays."""
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        raise ValueError("ranges: expected None or a 6-tuple (ranges_i, slices_i, redranges_j, ranges_j, "
                         f"slices_j, redranges_i) of integer arrays, got {type(ranges).__name__}"
                         f"{' of length ' + str(len(ranges)) if isinstance(ranges, (tuple, list)) else ''}")
    arrays = [_integer_array(a, f"ranges[{k}] ({name})") for k, (a, name) in enumerate(zip(ranges, RANGES_NAMES))]
    names = [f"ranges[{k}] ({name})" for k, name in enumerate(RANGES_NAMES)]
    _check_half(arrays[:3], names[:3], n_rows_i, n_rows_j, "i rows", "j rows")
    _check_half(arrays[3:], names[3:], n_rows_j, n_rows_i, "j rows", "i rows")
    return arrays


def coalesce_intervals(slices, redranges):
    """Join each block's consecutive j intervals that touch ([a, b) then [b, c) -> [a, c)),
    as from_matrix makes them for neighbouring clusters: the same j in the same order."""
    n_blocks = len(slices)
    block_of = np.repeat(np.arange(n_blocks), np.diff(slices, prepend=0))
    joins = np.zeros(len(redranges), bool)
    joins[1:] = (block_of[1:] == block_of[:-1]) & (redranges[1:, 0] == redranges[:-1, 1])
    first = ~joins
    last = np.append(first[1:], True)[:len(first)]
    joined = np.ascontiguousarray(np.stack([redranges[first, 0], redranges[last, 1]], axis=1))
    new_slices = np.searchsorted(block_of[first], np.arange(n_blocks), side="right").astype(np.int64)
    return [new_slices, joined.reshape(-1, 2)]


def batch_plan(reduction, shapes):
    """Leading batch dimensions of a call, pykeops's convention: i/j variables are
    `(..., n, d)` arrays and parameters `(..., d)`; batch dimensions broadcast (1
    stretches, missing leading ones count as 1).  A call is batched when an i/j variable
    has more than 2 dimensions or a parameter more than 2.  Returns None for a plain
    call (2-d variables, parameters `(d,)` or `(1, d)`), else (batch shape, each argument's
    batch shape left-padded to it, each argument's own number of batch dimensions).
    Shapes that fit neither are left to `check_arrays`, which names the argument."""
    if len(shapes) != len(reduction.arguments):
        return None
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


class Reduction:
    """A parsed, verified and optimized reduction, compiled per dtype on demand."""

    def __init__(self, formula, aliases=(), reduction_op="Sum", axis=0, opt_arg=None, formula2=None,
                 dtype_acc="auto", sum_scheme="auto", passes=DEFAULT_PIPELINE):
        _check_str(formula, "formula")
        _check_str(reduction_op, "reduction_op")
        if formula2 is not None:
            _check_str(formula2, "formula2")
        if isinstance(aliases, str) or not isinstance(aliases, (list, tuple)):
            raise TypeError(f"aliases must be a list of strings such as ['x = Vi(3)'], got {type(aliases).__name__}")
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (0, 1):
            raise ValueError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
        if dtype_acc not in ACC_DTYPES:
            raise ValueError(f"dtype_acc must be one of {', '.join(ACC_DTYPES)}, got {dtype_acc!r}")
        if sum_scheme not in SUM_SCHEMES:
            raise ValueError(f"sum_scheme must be one of {', '.join(SUM_SCHEMES)}, got {sum_scheme!r}")
        red = get_reduction(reduction_op)
        self.formula, self.formula2, self.aliases = formula, formula2, tuple(aliases)
        self.reduction_op, self.axis, self.opt_arg = reduction_op, axis, opt_arg
        self.dtype_acc = dtype_acc
        self.sum_scheme = "block_sum" if sum_scheme == "auto" else sum_scheme

        names = {}
        for index, text in enumerate(aliases):
            _check_str(text, f"aliases[{index}]")
            name, var = parse_alias(text, index)
            if name in names:
                raise ValueError(f"aliases[{index}]: alias {name!r} is defined twice")
            names[name] = var
        f = parse_formula(formula, names)
        g = parse_formula(formula2, names, "formula2") if formula2 is not None else None
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
        program = Program(reduction_op, f, g, opt_arg, self.kernel_arguments, tuple(sorted(alias_of.items())))
        self.parsed = program
        self.program = PassManager(list(passes)).run(program)
        self.outputs = red.outputs(f.dim, None if g is None else g.dim, opt_arg)
        self._kernels = {}

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
        """Validate shapes and dtypes; returns (dtype, n_i, n_j) in kernel terms
        (float16 passes: `run_numpy` decides whether a GPU can take it)."""
        n = len(self.arguments)
        if len(arrays) != n:
            names = dict((pos, name) for (pos, _, _), name in self.parsed.names)
            labels = ", ".join(names.get(p, f"#{p}") for p in range(n))
            raise ValueError(f"expected {n} arguments ({labels}), got {len(arrays)}")
        dtypes = {str(a.dtype) for a in arrays}
        if len(dtypes) > 1:
            detail = ", ".join(f"{self.arg_label(p)} is {a.dtype}" for p, a in enumerate(arrays))
            raise TypeError(f"all arguments must share one dtype: {detail}")
        dtype = dtypes.pop() if dtypes else "float64"
        if dtype not in DTYPES + ("float16",):
            raise TypeError(f"arguments must be float32 or float64 arrays (float16 on the GPU), got {dtype}")
        rows = {0: {}, 1: {}}
        for (pos, dim, cat), a in zip(self.kernel_arguments, arrays):
            label = self.arg_label(pos)
            if cat == 2:
                if not (a.ndim == 1 and a.shape[0] == dim) and not (a.ndim == 2 and a.shape == (1, dim)):
                    raise ValueError(f"{label}: a parameter of dimension {dim} must have shape ({dim},), got {tuple(a.shape)}")
                continue
            if a.ndim != 2:
                hint = " (leading batch dimensions are not supported yet)" if a.ndim > 2 else ""
                raise ValueError(f"{label}: expected a 2-d array of shape (n, {dim}), got shape {tuple(a.shape)}{hint}")
            if a.shape[1] != dim:
                raise ValueError(f"{label}: expected {dim} columns, got shape {tuple(a.shape)}")
            rows[cat][pos] = a.shape[0]
        counts = []
        for cat in (0, 1):
            sizes = set(rows[cat].values())
            if len(sizes) > 1:
                detail = ", ".join(f"{self.arg_label(p)} has {r}" for p, r in rows[cat].items())
                word = "i" if (cat == 0) == (self.axis == 1) else "j"
                raise ValueError(f"arguments indexed by {word} must have the same number of rows: {detail}")
            counts.append(sizes.pop() if sizes else 1)
        n_i, n_j = counts
        red = get_reduction(self.reduction_op)
        if red.needs_k and self.opt_arg > n_j:
            raise ValueError(
                f"opt_arg: K={self.opt_arg} is larger than the number of reduced rows {n_j} "
                f"(axis={self.axis})"
            )
        return dtype, n_i, n_j

    def acc_dtype(self, dtype):
        if self.dtype_acc == "auto":
            return "float32" if dtype == "float16" else dtype  # float16 data is summed in float32
        return self.dtype_acc

    def kernel(self, dtype):
        k = self._kernels.get(dtype)
        if k is None:
            from .backends.cpu import compile_program

            k = compile_program(self.program, dtype, self.acc_dtype(dtype), self.sum_scheme)
            self._kernels[dtype] = k
        return k

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
        return half[:1] + coalesce_intervals(*half[1:])

    def run_numpy(self, arrays, backend="auto", device_id=-1, ranges=None):
        """Run on NumPy arrays; returns the list of outputs."""
        check_backend(backend)
        from .backends import cuda

        dtype, n_i, n_j = self.check_arrays(arrays)
        if dtype == "float16" and not (backend in ("GPU", "auto") and cuda.available()):
            raise TypeError("float16 arguments run on the GPU backend only (backend='GPU', or CUDA tensors); "
                            "on the CPU, arguments must be float32 or float64 arrays")
        if ranges is not None:
            ranges = self.kernel_ranges(ranges, n_i, n_j)
        if backend == "reference":
            from .backends import reference

            outs = reference.run(self.program, [np.asarray(a, np.float64) for a in arrays], n_i, n_j, ranges)
            return [o.astype(dtype) if o.dtype.kind == "f" else o for o in outs]
        if backend == "GPU" or (backend == "auto" and (dtype == "float16" or cuda.wants_gpu(n_i, n_j))):
            try:
                return cuda.run_numpy(self, arrays, dtype, n_i, n_j, device_id, ranges=ranges)
            except NotImplementedError:  # a function the GPU backend lacks: 'auto' stays on the CPU
                if backend == "GPU" or dtype == "float16":  # (float16 has no CPU backend)
                    raise
        # j data transposed to (dim, rows) for contiguous vector loads; a copy only where
        # needed, inputs never written
        buffers = [np.ascontiguousarray(a.T if cat == 1 else a)
                   for a, (_, _, cat) in zip(arrays, self.kernel_arguments)]
        outs = [np.empty(shape, dtype=np.int64 if kind == "index" else dtype)
                for shape, kind in self.output_shapes(n_i)]
        pointers = ([b.ctypes.data for b in buffers], [o.ctypes.data for o in outs], n_i, n_j)
        if ranges is None:
            self.kernel(dtype)(*pointers)
        else:
            self.kernel(dtype).run_ranges(*pointers, *ranges)
        return outs


def generic_reductions(genred_cls):
    """pykeops's `generic_sum`, `generic_logsumexp`, `generic_argmin` and `generic_argkmin`
    for one front end: a Genred whose axis (and K) come from an output alias such as
    `"a = Vi(1)"` (indexed by i: reduce over j) written before the input aliases."""

    def make(reduction_op, formula, output, aliases, kwargs):
        _check_str(output, "output")
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
