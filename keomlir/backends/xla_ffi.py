"""XLA FFI handlers for host kernels: how a program compiled by XLA (JAX's `jax.jit`) calls
keomlir's CPU kernels.

XLA calls a handler `XLA_FFI_Error *handler(XLA_FFI_CallFrame *frame)` (the C API of
xla/ffi/api/c_api.h, version 0.x, which XLA keeps binary compatible): the frame holds the
argument and result buffers (data pointer, rank, dimensions).  Two kinds here, neither
needing a C compiler or XLA's headers:

- `direct_handler(kernel, j_arg)`: machine code generated with llvmlite that reads the
  buffers' data pointers and the sizes from the frame and calls the kernel on XLA's
  thread, with no Python in the call path.  j-variables come in column-major layout,
  which is the (dim, rows) array kernels read (XLA transposes them if it must).
- `python_handler(run)`: a ctypes function that calls `run(inputs, outputs)` on NumPy
  views of the buffers (the threaded runtime, block-sparse calls, other backends, the
  conjugate gradient of KernelSolve) and reports its exceptions as XLA errors.

Both answer XLA's metadata query (the FFI version they were written for).
"""

from __future__ import annotations

import ctypes
import threading

import llvmlite.ir as ir
import numpy as np

from .launch import numpy_dtype
from .llvm import toolchain
from .llvm.emitter import counted_loop

API_VERSION = (0, 1)  # the FFI C API version these handlers read (its frame and buffer layouts)
HANDLER_NAME = "keomlir_xla_handler"
_METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata
_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_INVALID_ARGUMENT = 3  # XLA_FFI_Error_Code_INVALID_ARGUMENT
# XLA_FFI_DataType codes of the buffers a handler reads
DTYPES = {4: "int32", 5: "int64", 10: "float16", 11: "float32", 12: "float64", 16: "bfloat16"}


# ---- the C structures, as XLA lays them out (LP64) ------------------------------------------------------
class _Extension(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class _Version(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major_version", ctypes.c_int), ("minor_version", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _Version), ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _Extension), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("dtype", ctypes.c_int),
                ("data", ctypes.c_void_p), ("rank", ctypes.c_int64), ("dims", ctypes.POINTER(ctypes.c_int64))]


class _Buffers(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("size", ctypes.c_int64),
                ("types", ctypes.c_void_p), ("buffers", ctypes.POINTER(ctypes.POINTER(_Buffer)))]


class _Frame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.POINTER(_Extension)),
                ("api", ctypes.c_void_p), ("ctx", ctypes.c_void_p), ("stage", ctypes.c_int),
                ("args", _Buffers), ("rets", _Buffers)]


class _ErrorArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p), ("message", ctypes.c_char_p),
                ("errc", ctypes.c_int)]


_ERROR_ARGS_SIZE = _ErrorArgs.errc.offset + ctypes.sizeof(ctypes.c_int)
# XLA_FFI_Api: struct_size, extension_start, api_version (a _Version), internal_api, then XLA_FFI_Error_Create
_ERROR_CREATE_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p) + ctypes.sizeof(_Version) + ctypes.sizeof(ctypes.c_void_p)
_ERROR_CREATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorArgs))
HANDLER_TYPE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)

_FRAME_ARGS = _Frame.args.offset + _Buffers.buffers.offset
_FRAME_RETS = _Frame.rets.offset + _Buffers.buffers.offset
_FRAME_NARGS = _Frame.args.offset + _Buffers.size.offset


def _answer_metadata(frame):
    """True (and the metadata filled in) if XLA is asking for the handler's metadata."""
    ext = frame.extension_start
    if not ext or ext.contents.type != _METADATA_EXTENSION:
        return False
    meta = ctypes.cast(ext, ctypes.POINTER(_MetadataExtension)).contents.metadata.contents
    meta.api_version.major_version, meta.api_version.minor_version = API_VERSION
    meta.traits = 0
    return True


class _Memory:
    """A buffer's memory as NumPy reads it (`__array_interface__`: no ctypes type per call)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, address, shape, typestr):
        self.__array_interface__ = {"data": (address, False), "shape": shape, "typestr": typestr, "version": 3}


# (read as unsigned integers of the same size, then viewed: ml_dtypes' bfloat16 has no type string)
_NUMPY = {code: (f"<u{numpy_dtype(name).itemsize}", numpy_dtype(name)) for code, name in DTYPES.items()}


def _views(buffers):
    """NumPy arrays over XLA buffers (no copy), in their row-major layout."""
    out = []
    for k in range(buffers.size):
        buf = buffers.buffers[k].contents
        dims = buf.dims
        shape = tuple(dims[d] for d in range(buf.rank))
        typestr, dtype = _NUMPY[buf.dtype]
        out.append(np.asarray(_Memory(buf.data or 0, shape, typestr)).view(dtype))
    return out


def _error(frame, message):
    """An XLA_FFI_Error of `message`, made by XLA's own API (it owns and frees it)."""
    create = _ERROR_CREATE(ctypes.c_void_p.from_address(frame.api + _ERROR_CREATE_OFFSET).value)
    args = _ErrorArgs(_ERROR_ARGS_SIZE, None, message.encode("utf-8", "replace"), _INVALID_ARGUMENT)
    return create(ctypes.byref(args))


def python_handler(run):
    """An FFI handler calling `run(inputs, outputs)` (NumPy views of the buffers, outputs to
    be written) at the execute stage; an exception becomes XLA's error (raised by JAX).
    Returns the ctypes function: keep it alive while XLA may call it."""

    def handler(address):
        frame = _Frame.from_address(address)
        try:
            if _answer_metadata(frame) or frame.stage != _EXECUTE:
                return None
            run(_views(frame.args), _views(frame.rets))
            return None
        except BaseException as exc:  # a ctypes callback must not raise: XLA reports it
            return _error(frame, f"keomlir: {type(exc).__name__}: {exc}")

    return HANDLER_TYPE(handler)


def ctypes_address(function):
    """The address of a ctypes function (such as `python_handler`'s)."""
    return ctypes.cast(function, ctypes.c_void_p).value


# ---- the generated handler ---------------------------------------------------------------------------------
_I8P = ir.IntType(8).as_pointer()
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_PTR = ctypes.sizeof(ctypes.c_void_p)
# XLA_FFI_Api: after struct_size, extension_start, api_version and internal_api, its functions in order
_API_FUNCTIONS = _ERROR_CREATE_OFFSET
_ERROR_DESTROY = _API_FUNCTIONS + 2 * _PTR
_THREADPOOL_SCHEDULE = _API_FUNCTIONS + 11 * _PTR
_SCHEDULE_ARGS_SIZE = 5 * _PTR  # XLA_FFI_ThreadPool_Schedule_Args: struct_size, extension_start, ctx, task, data
_DESTROY_ARGS_SIZE = 3 * _PTR  # XLA_FFI_Error_Destroy_Args: struct_size, extension_start, error
# the state a threaded call shares with its tasks (malloc'ed, freed by the last of them): i64 words,
# then the argument and output data pointers
_REFS, _NEXT, _DONE, _NJ, _ARGS, _OUTS, _HEADER = range(7)
_direct = {}  # (kernel, j_arg, cuts) -> (kernel, engine, address): the kernel and the engine kept alive
_lock = threading.Lock()


def direct_handler(kernel, j_arg, cuts=None):
    """The address of a generated FFI handler calling `kernel` (a `cpu.CpuKernel` with a dense
    entry point): arguments in position order (j-variables column-major), outputs row-major;
    the reduced rows from argument `j_arg`'s first dimension (1 if -1: no j-variable).
    `cuts` None: every output row in one call on XLA's thread (the rows from the first
    output's first dimension); else the row bounds (0, ..., n_i) of shares that run in
    parallel, tasks on XLA's intra-op thread pool claiming shares with the calling thread,
    which returns when every share is done.  Compiled once per kernel, j_arg and cuts."""
    key = (id(kernel), j_arg, cuts)
    with _lock:
        found = _direct.get(key)
        if found is None:
            module = _handler_module(ctypes_address(kernel.fn), j_arg, cuts)
            engine = toolchain.host_engine(toolchain.host_object(module))
            found = _direct[key] = (kernel, engine, engine.get_function_address(HANDLER_NAME))
    return found[2]


def _const(value):
    return ir.Constant(_I64, value)


def _at(b, base, offset, ty):
    """A `ty` pointer to byte `offset` of pointer `base`."""
    return b.bitcast(b.gep(base, [_const(offset)]), ty.as_pointer())


def _load(b, base, offset, ty):
    """The `ty` at byte `offset` of pointer `base`."""
    return b.load(_at(b, base, offset, ty))


def _store(b, value, base, offset):
    b.store(value, _at(b, base, offset, value.type))


def _handler_module(kernel_address, j_arg, cuts):
    module = ir.Module("keomlir_xla_ffi")
    fn = ir.Function(module, ir.FunctionType(_I8P, [_I8P]), HANDLER_NAME)
    frame, = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    null = ir.Constant(_I8P, None)
    ext = _load(b, frame, _Frame.extension_start.offset, _I8P)
    with b.if_then(b.icmp_unsigned("!=", ext, null), likely=False):
        with b.if_then(b.icmp_unsigned("==", _load(b, ext, _Extension.type.offset, _I32),
                                       ir.Constant(_I32, _METADATA_EXTENSION))):
            meta = _load(b, ext, _MetadataExtension.metadata.offset, _I8P)
            version = _Metadata.api_version.offset
            _store(b, ir.Constant(_I32, API_VERSION[0]), meta, version + _Version.major_version.offset)
            _store(b, ir.Constant(_I32, API_VERSION[1]), meta, version + _Version.minor_version.offset)
            _store(b, ir.Constant(_I32, 0), meta, _Metadata.traits.offset)
            b.ret(null)
    with b.if_then(b.icmp_unsigned("!=", _load(b, frame, _Frame.stage.offset, _I32), ir.Constant(_I32, _EXECUTE))):
        b.ret(null)
    n_args = _load(b, frame, _FRAME_NARGS, _I64)
    n_rets = _load(b, frame, _Frame.rets.offset + _Buffers.size.offset, _I64)
    args = _load(b, frame, _FRAME_ARGS, _I8P.as_pointer())
    rets = _load(b, frame, _FRAME_RETS, _I8P.as_pointer())

    def rows(buffers, k):
        return b.load(_load(b, b.load(b.gep(buffers, [_const(k)])), _Buffer.dims.offset, _I64.as_pointer()))

    n_j = rows(args, j_arg) if j_arg >= 0 else _const(1)
    kernel = _kernel(b, kernel_address)
    if cuts is None:
        data = b.alloca(_I8P, b.add(n_args, n_rets))
    else:  # shared with the tasks, which may outlive this call
        malloc = ir.Function(module, ir.FunctionType(_I8P, [_I64]), "malloc")
        state = b.call(malloc, [b.mul(b.add(b.add(n_args, n_rets), _const(_HEADER)), _const(8))])
        data = b.gep(b.bitcast(state, _I8P.as_pointer()), [_const(_HEADER)])

    def copy(buffers, start):
        def body(k):
            b.store(_load(b, b.load(b.gep(buffers, [k])), _Buffer.data.offset, _I8P), b.gep(data, [b.add(start, k)]))
        return body

    for buffers, count, start, name in ((args, n_args, _const(0), "args"), (rets, n_rets, n_args, "outs")):
        with counted_loop(b, _const(0), count, name) as k:
            copy(buffers, start)(k)
    outs = b.gep(data, [n_args])
    if cuts is None:
        zero = _const(0)
        b.call(kernel, [zero, rows(rets, 0), zero, n_j, n_j, data, outs])
        b.ret(null)
        return module
    words = b.bitcast(state, _I64.as_pointer())
    for slot, value in ((_REFS, _const(1)), (_NEXT, _const(0)), (_DONE, _const(0)), (_NJ, n_j),
                        (_ARGS, b.ptrtoint(data, _I64)), (_OUTS, b.ptrtoint(outs, _I64))):
        b.store(value, b.gep(words, [_const(slot)]))
    run, task = _share_functions(module, kernel_address, cuts)
    _schedule_tasks(b, fn, module, frame, state, task, len(cuts) - 2)
    b.call(run, [state])
    # wait for the shares the tasks claimed (every other share this thread ran itself)
    sched_yield = ir.Function(module, ir.FunctionType(_I32, []), "sched_yield")
    wait, done = fn.append_basic_block("wait"), fn.append_basic_block("done")
    b.branch(wait)
    b.position_at_end(wait)
    finished = b.load_atomic(b.gep(words, [_const(_DONE)]), "acquire", 8)
    with b.if_then(b.icmp_signed("<", finished, _const(len(cuts) - 1))):
        b.call(sched_yield, [])
    b.cbranch(b.icmp_signed("<", finished, _const(len(cuts) - 1)), wait, done)
    b.position_at_end(done)
    b.call(module.get_global("keomlir_release"), [state])
    b.ret(null)
    return module


def _kernel(b, address):
    """The kernel entry point at `address` (keomlir_kernel's signature), in b's function."""
    kernel_type = ir.FunctionType(ir.VoidType(), [_I64] * 5 + [_I8P.as_pointer()] * 2)
    return b.inttoptr(_const(address), kernel_type.as_pointer())


def _share_functions(module, kernel_address, cuts):
    """`keomlir_shares(state)`: claim shares (rows cuts[s] to cuts[s + 1]) until none is left,
    run the kernel on each; `keomlir_task(state)`: the same on a pool thread, then releases
    the state; `keomlir_release(state)`: drop a reference, the last one frees it."""
    table = ir.GlobalVariable(module, ir.ArrayType(_I64, len(cuts)), "keomlir_cuts")
    table.initializer = ir.Constant(ir.ArrayType(_I64, len(cuts)), list(cuts))
    table.global_constant = True
    void = ir.FunctionType(ir.VoidType(), [_I8P])
    free = ir.Function(module, void, "free")
    release = ir.Function(module, void, "keomlir_release")
    b = ir.IRBuilder(release.append_basic_block("entry"))
    words = b.bitcast(release.args[0], _I64.as_pointer())
    with b.if_then(b.icmp_signed("==", b.atomic_rmw("sub", b.gep(words, [_const(_REFS)]), _const(1), "acq_rel"),
                                 _const(1))):
        b.call(free, [release.args[0]])
    b.ret_void()

    run = ir.Function(module, void, "keomlir_shares")
    b = ir.IRBuilder(run.append_basic_block("entry"))
    words = b.bitcast(run.args[0], _I64.as_pointer())
    n_j = b.load(b.gep(words, [_const(_NJ)]))
    data = b.inttoptr(b.load(b.gep(words, [_const(_ARGS)])), _I8P.as_pointer())
    outs = b.inttoptr(b.load(b.gep(words, [_const(_OUTS)])), _I8P.as_pointer())
    claim, work, done = (run.append_basic_block(name) for name in ("claim", "work", "done"))
    b.branch(claim)
    b.position_at_end(claim)
    share = b.atomic_rmw("add", b.gep(words, [_const(_NEXT)]), _const(1), "monotonic")
    b.cbranch(b.icmp_signed("<", share, _const(len(cuts) - 1)), work, done)
    b.position_at_end(work)
    lo = b.load(b.gep(table, [_const(0), share]))
    hi = b.load(b.gep(table, [_const(0), b.add(share, _const(1))]))
    b.call(_kernel(b, kernel_address), [lo, hi, _const(0), n_j, n_j, data, outs])
    b.atomic_rmw("add", b.gep(words, [_const(_DONE)]), _const(1), "release")
    b.branch(claim)
    b.position_at_end(done)
    b.ret_void()

    task = ir.Function(module, void, "keomlir_task")
    b = ir.IRBuilder(task.append_basic_block("entry"))
    b.call(run, [task.args[0]])
    b.call(release, [task.args[0]])
    b.ret_void()
    return run, task


def _schedule_tasks(b, fn, module, frame, state, task, n_tasks):
    """Hand `n_tasks` tasks to XLA's thread pool (XLA_FFI_ThreadPool_Schedule), each holding a
    reference to the state; none if this XLA has no such function or no pool (an error,
    destroyed), in which case the calling thread runs every share."""
    api = _load(b, frame, _Frame.api.offset, _I8P)
    with b.if_then(b.icmp_unsigned(">=", _load(b, api, 0, _I64), _const(_THREADPOOL_SCHEDULE + _PTR))):
        schedule_type = ir.FunctionType(_I8P, [_I8P])
        schedule = b.bitcast(_load(b, api, _THREADPOOL_SCHEDULE, _I8P), schedule_type.as_pointer())
        request = b.alloca(ir.ArrayType(_I64, 5))
        request = b.bitcast(request, _I8P)
        for offset, value in ((0, _const(_SCHEDULE_ARGS_SIZE)), (_PTR, _const(0)),
                              (2 * _PTR, b.ptrtoint(_load(b, frame, _Frame.ctx.offset, _I8P), _I64)),
                              (3 * _PTR, b.ptrtoint(task, _I64)), (4 * _PTR, b.ptrtoint(state, _I64))):
            _store(b, value, request, offset)
        refs = b.gep(b.bitcast(state, _I64.as_pointer()), [_const(_REFS)])
        destroy_args = b.bitcast(b.alloca(ir.ArrayType(_I64, 3)), _I8P)

        def one(k):
            b.atomic_rmw("add", refs, _const(1), "monotonic")
            error = b.call(schedule, [request])
            with b.if_then(b.icmp_unsigned("!=", error, ir.Constant(_I8P, None)), likely=False):
                b.atomic_rmw("sub", refs, _const(1), "monotonic")  # (the calling thread holds one: never the last)
                destroy = b.bitcast(_load(b, api, _ERROR_DESTROY, _I8P), ir.FunctionType(
                    ir.VoidType(), [_I8P]).as_pointer())
                _store(b, _const(_DESTROY_ARGS_SIZE), destroy_args, 0)
                _store(b, _const(0), destroy_args, _PTR)
                _store(b, b.ptrtoint(error, _I64), destroy_args, 2 * _PTR)
                b.call(destroy, [destroy_args])

        with counted_loop(b, _const(0), _const(n_tasks), "schedule") as k:
            one(k)
