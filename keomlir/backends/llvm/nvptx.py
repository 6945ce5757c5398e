"""Program -> NVPTX kernels (PTX text, through llvmlite), for the CUDA runtime in `cuda/`.

One PTX module holds the five kernels of `KERNELS`; every pointer is a device address, rows are
row-major `(rows, dim)` for i- and j-variables alike (torch CUDA tensors are
used in place), parameters one row, outputs one row per i:

    keomlir_1d(i64 n_i, i64 n_j, T* arg_0, ..., out_0*, ...)
        The 1-D scheme, KeOps's main kernel: grid (ceil(n_i / BLOCK), 1), one
        thread per row i.  The block walks j in tiles of TILE (<= BLOCK) rows; each tile of
        every j-variable is staged in shared memory by the whole block (coalesced:
        a tile of a row-major variable is one contiguous run), then each thread
        folds the tile into its reduction state.  A tile is a block of the
        compensated sum (`end_block`).
    keomlir_partial(i64 n_i, i64 n_j, i64 chunk, T* arg_0, ..., i64* states)
        The 2-D scheme, for few i and many j: grid (ceil(n_i / BLOCK), n_chunks);
        block (x, c) runs the same loop over j in [c*chunk, min(n_j, (c+1)*chunk))
        and writes its thread's raw state to states[(c*S + s) * n_i + i].
    keomlir_merge(i64 n_i, i64 n_in, i64 fan, i64* src, i64* dst)
        grid (ceil(n_i / merge_block), ceil(n_in / fan)): group g merges the states
        [g*fan, (g+1)*fan) of src, in order, into state g of dst (`Reduction.merge`).
    keomlir_final(i64 n_i, i64 n_in, i64* src, out_0*, ...)
        merges the n_in states of src in order and finalizes them.
    keomlir_ranges(i64 n_i, i64 n_j, i64* plan, i64* redranges, T* arg_0, ..., out_0*, ...)
        Block-sparse reductions (`ranges`): grid (n_chunks, 1); block b owns the rows
        [plan[4b], plan[4b+1]) (at most BLOCK rows of one block of ranges_i) and runs
        the 1-D loop over each j interval redranges[l], l in [plan[4b+2], plan[4b+3]).
        Every thread of a block sees the same intervals, so the tiles and barriers
        stay uniform.  Rows of no block are written first by keomlir_1d with n_j = 0.

Block, tile, staging and fast math are the schedule's (`keomlir.schedule`): tiles hold
one j row per thread while that fits the target's static shared memory (at 256, 128
or 64 threads); wider j-variables get tiles of fewer rows than threads, and only a
single j row above it is not staged at all: each thread then reads the j rows from
global memory (one row serves the whole block through the L1 cache).

Wide formulas (nodes or a Sum state above the schedule's `wide_threshold` components) are
loops over components, as on the CPU (`wide.py` through the skeleton): the
kernel's size and compile time do not grow with the width.  A wide Sum state,
which no register file holds, is a per-thread array in local memory (cached
in L1/L2, interleaved across threads so that a warp's accesses coalesce).
KeOps's "chunked" mode (one pass per slice of a long dimension) is not
implemented.

Reductions are composed, not re-implemented: `Reduction.init/update/end_block/
finalize/merge` run per thread on slots, exactly as on the CPU.  Math goes
through `NVPTXEmitter.call`: `mathlib` (IR, accurate, any target) where it has
the function, LLVM intrinsics that NVPTX selects (sqrt, fabs, floor, round),
and the IR below for pow and the inverse trigonometric functions.

The same kernels can be built for the host (`target="host-sim"`): thread and
block ids and the shared tile become parameters, the barrier a call.  The CUDA
runtime's simulator (`cuda/simulator.py`) runs them with one OS thread per GPU
thread, so the tiling, the 2-D scheme and the merges are tested without a GPU.
"""

from __future__ import annotations

import dataclasses
import math

from llvmlite import ir

from ...schedule import gpu, host, schedule as make_schedule
from . import halfconv, mathlib, toolchain
from .emitter import Emitter, counted_loop
from .skeleton import FLOAT_TYPES, I64, KernelSkeleton, Values, c64, cell_index, imin, intervals, n_cells


I32 = ir.IntType(32)
# half data (float16, bfloat16) is loaded, staged and stored in 16 bits and computed in float32
DATA_TYPES = halfconv.STORAGE
KERNELS = ("keomlir_1d", "keomlir_partial", "keomlir_merge", "keomlir_final", "keomlir_ranges")
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_89", "sm_90", "sm_100", "sm_120")


# ---- math on NVPTX ------------------------------------------------------------------

# LLVM intrinsics NVPTX selects for f32 and f64
_SELECTED = frozenset({"sqrt", "fabs", "floor", "round"})


class NVPTXEmitter(Emitter):
    """The Emitter for GPU kernels: no libm exists on NVPTX, so every math
    function is IR (mathlib, or the functions below) or a selected intrinsic."""

    target_name = "NVPTX"
    fast_math = False  # f32 exp/log through ex2.approx/lg2.approx (FastNVPTXEmitter)

    def call(self, name, *args):
        if self.fast_math and self.bits == 32 and name in _FAST:
            return _FAST[name](self, *args)
        if name in mathlib.FUNCTIONS:
            return mathlib.call(self, name, *args)
        if name in _SELECTED:
            return self.intrinsic(name, *args)
        raise NotImplementedError(f"{name} is not available on {self.target_name} for "
                                  f"{'float32' if self.bits == 32 else 'float64'}")


class FastNVPTXEmitter(NVPTXEmitter):
    fast_math = True
    host_approx = False  # the simulator's stand-in: exact exp2/log2 for ex2/lg2.approx


class _HostFastEmitter(FastNVPTXEmitter):
    host_approx = True


def _approx(em, name, x):
    """An f32 NVVM approximate intrinsic (MUFU), flushing subnormals to zero."""
    full = {"ex2": "llvm.exp2.f32", "lg2": "llvm.log2.f32"}[name] if em.host_approx \
        else f"llvm.nvvm.{name}.approx.ftz.f"
    fn = em.module.globals.get(full)
    if fn is None:
        fn = ir.Function(em.module, ir.FunctionType(em.t, [em.t]), full)
    return em.b.call(fn, [x])


def _fast_exp(em, x):
    """exp(x) = 2^n ex2.approx(r / ln 2), r = x - n ln 2 reduced exactly by two FMAs
    (|r / ln 2| <= 1/2), 2^n added to the exponent bits: about 11 instructions and one
    MUFU op instead of the polynomial's 30, within a few ulp (ex2.approx's error on
    the reduced argument, not |x| times it as for __expf); results below 2^-126 flush
    to zero."""
    n = em.call("floor", em.fma(x, em.const(1 / math.log(2)), em.const(0.5)))
    n = em.select(em.isnan(n), em.const(0), n)
    r = em.fma(n, em.const(-0.693145751953125), x)
    r = em.fma(n, em.const(-1.428606765330187e-06), r)
    p = _approx(em, "ex2", em.mul(r, em.const(1 / math.log(2))))
    y = em.as_float(em.b.add(em.as_int(p), em.b.shl(em.to_int(n), em.iconst(23))))
    y = em.select(em.cmp(">", x, em.const(88.72283935546875)), em.const(math.inf), y)
    return em.select(em.cmp("<", x, em.const(-126 * math.log(2))), em.const(0), y)


def _fast_log(em, x):
    """log(x) = lg2.approx(x) ln 2, as CUDA's __logf (lg2.approx handles 0, inf, NaN, x < 0)."""
    return em.mul(_approx(em, "lg2", x), em.const(math.log(2)))


_FAST = {"exp": _fast_exp, "log": _fast_log}




def _j_dims(program):
    """(pos, dim) of every j-variable the formulas read, by position."""
    found = {}
    for _, root in program.roots():
        for n in root.walk():
            if n.name == "Var" and n.attrs[2] == 1:
                found[n.attrs[0]] = n.attrs[1]
    return sorted(found.items())


# ---- targets: where ids, barriers and shared memory come from ---------------------------


class _NVPTXTarget:
    name = "nvptx"

    def kernel(self, module, name, param_types, block):
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), param_types), name)
        fn.calling_convention = "ptx_kernel"
        md = module.add_metadata([fn, ir.MetaDataString(module, "maxntidx"), ir.Constant(I32, block)])
        module.add_named_metadata("nvvm.annotations", md)
        self.fn = fn
        return fn, list(fn.args)

    def _sreg(self, b, reg):
        full = f"llvm.nvvm.read.ptx.sreg.{reg}"
        fn = b.module.globals.get(full) or ir.Function(b.module, ir.FunctionType(I32, []), full)
        return b.zext(b.call(fn, []), I64)

    def tid(self, b):
        return self._sreg(b, "tid.x")

    def ctaid(self, b, axis):
        return self._sreg(b, f"ctaid.{axis}")

    def barrier(self, b):
        fn = b.module.globals.get("llvm.nvvm.barrier0") or \
            ir.Function(b.module, ir.FunctionType(ir.VoidType(), []), "llvm.nvvm.barrier0")
        b.call(fn, [])

    def shared(self, b, elem, n):
        ty = ir.ArrayType(elem, max(n, 1))
        gv = ir.GlobalVariable(b.module, ty, f"{self.fn.name}.tile", addrspace=3)
        gv.linkage = "internal"
        gv.initializer = ir.Constant(ty, ir.Undefined)
        gv.align = 16
        return b.gep(gv, [ir.Constant(I32, 0), ir.Constant(I32, 0)])


class _HostSimTarget:
    """Host code with the GPU's ids as parameters: (tid, ctaid.x, ctaid.y,
    void() *barrier, i8 *shared, kernel parameters...)."""

    name = "host-sim"
    hidden = 5

    def kernel(self, module, name, param_types, block):
        hidden = [I64, I64, I64, ir.FunctionType(ir.VoidType(), []).as_pointer(), ir.IntType(8).as_pointer()]
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), hidden + param_types), name)
        self.fn = fn
        return fn, list(fn.args[self.hidden:])

    def tid(self, b):
        return self.fn.args[0]

    def ctaid(self, b, axis):
        return self.fn.args[1 if axis == "x" else 2]

    def barrier(self, b):
        b.call(self.fn.args[3], [])

    def shared(self, b, elem, n):
        return b.bitcast(self.fn.args[4], elem.as_pointer())


TARGETS = {"nvptx": _NVPTXTarget, "host-sim": _HostSimTarget}


# ---- the kernels ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    """What the runtime needs besides the code."""

    block: int
    merge_block: int
    state_slots: int  # i64 words per thread state in the 2-D scheme's buffers
    stage: bool
    shared_bytes: int  # shared tile of the 1-D and partial kernels (host-sim: its size)
    tile: int  # j rows per tile: the 2-D scheme's chunks are multiples of it

    def header(self):
        return (f"// keomlir: block={self.block} merge_block={self.merge_block} state_slots={self.state_slots} "
                f"stage={int(self.stage)} shared_bytes={self.shared_bytes} tile={self.tile}")

    @classmethod
    def from_header(cls, line):
        fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split())
        return cls(int(fields["block"]), int(fields["merge_block"]), int(fields["state_slots"]),
                   bool(int(fields["stage"])), int(fields["shared_bytes"]), int(fields["tile"]))


class _GpuModule(KernelSkeleton):
    """The GPU kernels of one program on the shared skeleton: what is GPU-only is here
    (one thread per row, shared-memory tiles of j, the 2-D scheme's state buffers)."""

    def __init__(self, program, dtype, acc_dtype, sum_scheme, schedule, target):
        arith = halfconv.arithmetic(dtype)
        super().__init__(program, FLOAT_TYPES[arith], FLOAT_TYPES[acc_dtype or arith], sum_scheme, "keomlir_gpu")
        self.schedule = schedule
        self.target = TARGETS[target]()
        self.dtype, self.t_data = dtype, DATA_TYPES[dtype]  # arrays, tiles and outputs; `t` is the arithmetic type
        # the machine that converts half data: the GPU, or the simulator's host (software where it lacks them)
        self.converter = schedule.target if target == "nvptx" else host()
        self.emitter_class = NVPTXEmitter if not schedule.fast_math else \
            _HostFastEmitter if target == "host-sim" else FastNVPTXEmitter
        self.n_args = len(program.arguments)
        self.j_vars = _j_dims(program)
        self.tile_offsets, off = {}, 0
        for pos, dim in self.j_vars:
            self.tile_offsets[pos] = off
            off += schedule.tile * dim
        self.tile_size = off
        self.state_slots = None

    # ---- helpers --------------------------------------------------------------------
    def _start(self, name, params, block):
        """Start kernel `name`: its arguments past the target's hidden ones."""
        fn, args = self.target.kernel(self.module, name, params, block)
        self.begin(fn)
        self.em.wide_threshold = self.ea.wide_threshold = self.schedule.wide_threshold
        # float64 sums of half data reach float32 rounded to odd: then rounded once to half (halfconv)
        self.em.narrow_to_odd = self.ea.narrow_to_odd = self.dtype in halfconv.HALF
        return args

    def _arg_types(self):
        return [self.t_data.as_pointer()] * self.n_args

    def _out_types(self):
        return [(I64 if kind == "index" else self.t_data).as_pointer() for _, kind in self.outputs]

    def _new_state(self):
        st = self.fresh_state()
        n = n_cells(st)
        assert self.state_slots in (None, n)
        self.state_slots = n
        return st

    # the 2-D scheme's buffers hold slot s of (chunk, row i) at (chunk*S + s) * n_i + i:
    # consecutive threads touch consecutive i64 words
    def _cells_of(self, buf, chunk, n_i, i):
        b = self.b

        def cell(s, ty):
            return b.gep(buf, [b.add(b.mul(b.add(b.mul(chunk, c64(self.state_slots)), cell_index(s)), n_i), i)])

        return cell

    def to_cell(self, v):
        """A slot's value as the raw bits of an i64 word."""
        ty = v.type
        if ty != I64:
            b = self.b
            v = b.bitcast(v, ir.IntType(ty.width if isinstance(ty, ir.IntType) else
                                        (32 if isinstance(ty, ir.FloatType) else 64)))
            if v.type != I64:
                v = b.zext(v, I64)
        return v

    def from_cell(self, v, ty):
        if ty != I64:
            if isinstance(ty, ir.FloatType):
                v = self.b.trunc(v, I32)
            v = self.b.bitcast(v, ty)
        return v

    def _widen(self, v):
        return halfconv.extend(self.b, v, self.dtype, self.converter)

    def output_value(self, v, kind):
        return v if kind == "index" else halfconv.narrow(self.b, v, self.dtype, self.converter)

    # ---- the 1-D and partial kernels ---------------------------------------------------------
    def tiles_kernel(self, kind):
        """kind: '1d', 'partial' (the 2-D scheme's first pass) or 'ranges' (block-sparse)."""
        cfg, tgt = self.schedule, self.target
        B, T = cfg.block, cfg.tile
        head = {"1d": [I64, I64], "partial": [I64, I64, I64], "ranges": [I64, I64, I64.as_pointer(), I64.as_pointer()]}[kind]
        tail = [I64.as_pointer()] if kind == "partial" else self._out_types()
        args = self._start(f"keomlir_{kind}", head + self._arg_types() + tail, B)
        b, em, ea = self.b, self.em, self.ea
        n_i, n_j = args[0], args[1]
        data = args[len(head):len(head) + self.n_args]
        for p in data:
            p.add_attribute("noalias")
        rest = args[len(head) + self.n_args:]

        tid = tgt.tid(b)
        if kind == "ranges":
            plan, redranges = args[2], args[3]
            entry = [b.load(b.gep(plan, [b.add(b.mul(tgt.ctaid(b, "x"), c64(4)), c64(k))])) for k in range(4)]
            row_lo, row_hi, first, last = entry
            i = b.add(row_lo, tid)
            active = b.icmp_signed("<", i, row_hi)
            row = b.select(active, i, row_lo)  # a chunk holds at least one row
        else:
            i = b.add(b.mul(tgt.ctaid(b, "x"), c64(B)), tid)
            active = b.icmp_signed("<", i, n_i)
            row = b.select(active, i, b.sub(n_i, c64(1)))  # inactive threads read a valid row, store nothing
        stage = cfg.stage and self.tile_size > 0
        tile = tgt.shared(b, self.t_data, self.tile_size) if stage else None
        cursor = {}  # the current tile start and j

        def load_var(n, em_):
            pos, dim, cat = n.attrs
            src = data[pos]
            if cat == 1:
                if stage:
                    jj = b.sub(cursor["j"], cursor["jt"])
                    src, base = tile, b.add(c64(self.tile_offsets[pos]), b.mul(jj, c64(dim)))
                else:
                    base = b.mul(cursor["j"], c64(dim))
            else:
                base = b.mul(row, c64(dim)) if cat == 0 else c64(0)
            if em_.is_wide(dim):  # loaded component by component inside the consumer's loop
                return em_.wide(dim, lambda c: self._widen(b.load(b.gep(src, [b.add(base, c)]))), cheap=True)
            return [self._widen(b.load(b.gep(src, [b.add(base, c64(c))]))) for c in range(dim)]

        values = Values(em, load_var)
        self.emit_row_scope(values)  # once per thread
        st = self._new_state()

        def tiles(j_lo, j_hi):
            with counted_loop(b, j_lo, j_hi, "jt", T) as jt:
                cursor["jt"] = jt
                tile_end = imin(b, j_hi, b.add(jt, c64(T)))
                if stage:
                    tgt.barrier(b)  # the previous tile is no longer read
                    rows = b.sub(tile_end, jt)
                    for pos, dim in self.j_vars:  # one contiguous run per variable
                        src = b.mul(jt, c64(dim))
                        off = c64(self.tile_offsets[pos])
                        with counted_loop(b, tid, b.mul(rows, c64(dim)), f"ld{pos}", B) as e:
                            v = b.load(b.gep(data[pos], [b.add(src, e)]))
                            b.store(v, b.gep(tile, [b.add(off, e)]))
                    tgt.barrier(b)
                with b.if_then(active):
                    with counted_loop(b, jt, tile_end, "j") as j:
                        cursor["j"] = j
                        self.update([values], em, ea, [st], j)
                    self.red.end_block(em, ea, st)

        if kind == "ranges":
            with intervals(b, redranges, first, last) as (j_lo, j_hi):
                tiles(j_lo, j_hi)
        elif kind == "partial":
            chunk = tgt.ctaid(b, "y")
            j_lo = b.mul(chunk, args[2])
            tiles(j_lo, imin(b, n_j, b.add(j_lo, args[2])))
        else:
            tiles(c64(0), n_j)
        with b.if_then(active):
            if kind == "partial":
                self.save_state(st, self._cells_of(rest[0], chunk, n_i, i))
            else:
                self.write_outputs(rest, i, st)
        b.ret_void()

    # ---- the merges of the 2-D scheme ------------------------------------------------------
    def merge_kernel(self, final):
        tgt = self.target
        if final:
            params = [I64, I64, I64.as_pointer()] + self._out_types()
        else:
            params = [I64, I64, I64, I64.as_pointer(), I64.as_pointer()]
        merge_block = self.schedule.merge_block
        args = self._start("keomlir_final" if final else "keomlir_merge", params, merge_block)
        b, em, ea = self.b, self.em, self.ea
        n_i, n_in = args[0], args[1]
        i = b.add(b.mul(tgt.ctaid(b, "x"), c64(merge_block)), tgt.tid(b))
        st, other = self._new_state(), self._new_state()
        with b.if_then(b.icmp_signed("<", i, n_i)):
            if final:
                lo, hi, src = c64(0), n_in, args[2]
            else:
                fan, src, dst = args[2], args[3], args[4]
                group = tgt.ctaid(b, "y")
                lo = b.mul(group, fan)
                hi = imin(b, n_in, b.add(lo, fan))
            self.load_state(st, self._cells_of(src, lo, n_i, i))
            with counted_loop(b, b.add(lo, c64(1)), hi, "c") as c:
                self.load_state(other, self._cells_of(src, c, n_i, i))
                self.red.merge(em, ea, st, other)
            if final:
                self.write_outputs(args[3:], i, st)
            else:
                self.save_state(st, self._cells_of(dst, group, n_i, i))
        b.ret_void()

    def build(self):
        for kind in ("1d", "partial", "ranges"):
            self.tiles_kernel(kind)
        self.merge_kernel(final=False)
        self.merge_kernel(final=True)
        elem = {"float32": 4, "float64": 8}.get(self.dtype, 2)
        stage = self.schedule.stage and self.tile_size > 0
        info = KernelInfo(self.schedule.block, self.schedule.merge_block, self.state_slots, stage,
                          self.tile_size * elem if stage else 0, self.schedule.tile)
        return self.module, info


def render_module(program, dtype, acc_dtype=None, sum_scheme="block_sum", schedule=None, target="nvptx"):
    """(llvmlite module of the kernels of KERNELS, KernelInfo) for `program` and `dtype`, run
    as `schedule` says (default: sm_80's)."""
    schedule = schedule or make_schedule(program, gpu("sm_80"), dtype=dtype)
    return _GpuModule(program, dtype, acc_dtype, sum_scheme, schedule, target).build()


# ---- PTX -------------------------------------------------------------------------------


def check_arch(arch):
    if not (isinstance(arch, str) and arch.startswith("sm_") and arch[3:].rstrip("af").isdigit()):
        raise ValueError(f"arch: expected an NVIDIA architecture such as 'sm_80' or 'sm_90', got {arch!r}")
    return arch


def compile_ptx(program, dtype, acc_dtype, sum_scheme, schedule):
    """(PTX text, KernelInfo) of `program` run as `schedule` says, for its target: the text
    starts with the KernelInfo header comment."""
    target = schedule.target
    tm = toolchain.target_machine(target)
    module, info = render_module(program, dtype, acc_dtype, sum_scheme, schedule)
    module.triple = target.triple
    module.data_layout = str(tm.target_data)
    ptx = tm.emit_assembly(toolchain.optimize(module, tm))
    return info.header() + "\n" + ptx, info


def render_ptx(program, dtype, arch="sm_80", acc_dtype=None, sum_scheme="block_sum", fast_math=False):
    """PTX assembly of `program`'s GPU kernels for `dtype` (float16, bfloat16, float32, float64) and `arch`,
    on the default schedule (with `fast_math`)."""
    sched = make_schedule(program, gpu(check_arch(arch)), dtype=dtype, overrides={"fast_math": fast_math})
    return compile_ptx(program, dtype, acc_dtype, sum_scheme, sched)[0]


def arch_for(major, minor):
    """The newest architecture LLVM knows that a device of compute capability
    major.minor runs (PTX is JIT-compiled forward by the driver)."""
    cc = major * 10 + minor
    known = [a for a in ARCHS if int(a[3:]) <= cc]
    return known[-1] if known else ARCHS[0]
