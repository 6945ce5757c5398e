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

from .llvm import toolchain

API_VERSION = (0, 1)  # the FFI C API version these handlers read (its frame and buffer layouts)
HANDLER_NAME = "keomlir_xla_handler"
_METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata
_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_INVALID_ARGUMENT = 3  # XLA_FFI_Error_Code_INVALID_ARGUMENT
DTYPES = {4: np.int32, 5: np.int64, 10: np.float16, 11: np.float32, 12: np.float64}  # XLA_FFI_DataType


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


_TYPESTR = {code: np.dtype(t).str for code, t in DTYPES.items()}


def _views(buffers):
    """NumPy arrays over XLA buffers (no copy), in their row-major layout."""
    out = []
    for k in range(buffers.size):
        buf = buffers.buffers[k].contents
        dims = buf.dims
        shape = tuple(dims[d] for d in range(buf.rank))
        out.append(np.asarray(_Memory(buf.data or 0, shape, _TYPESTR[buf.dtype])))
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
_direct = {}  # (kernel, j_arg) -> (kernel, engine, address): the kernel and the engine kept alive
_lock = threading.Lock()


def direct_handler(kernel, j_arg):
    """The address of a generated FFI handler calling `kernel` (a `cpu.CpuKernel` with a dense
    entry point) on every output row in one call: arguments in position order (j-variables
    column-major), outputs row-major; the rows from the first output's first dimension, the
    reduced rows from argument `j_arg`'s (1 if -1: no j-variable).  Compiled once per kernel."""
    key = (id(kernel), j_arg)
    with _lock:
        found = _direct.get(key)
        if found is None:
            address = ctypes_address(kernel.fn)
            engine = toolchain.host_engine(toolchain.host_object(_handler_module(address, j_arg)))
            found = _direct[key] = (kernel, engine, engine.get_function_address(HANDLER_NAME))
    return found[2]


def _load(b, base, offset, ty):
    """The `ty` at byte `offset` of pointer `base`."""
    return b.load(b.bitcast(b.gep(base, [ir.Constant(_I64, offset)]), ty.as_pointer()))


def _store(b, value, base, offset):
    b.store(value, b.bitcast(b.gep(base, [ir.Constant(_I64, offset)]), value.type.as_pointer()))


def _handler_module(kernel_address, j_arg):
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
    args = _load(b, frame, _FRAME_ARGS, _I8P.as_pointer())
    rets = _load(b, frame, _FRAME_RETS, _I8P.as_pointer())
    n_rets = _load(b, frame, _Frame.rets.offset + _Buffers.size.offset, _I64)

    def data_pointers(buffers, n):
        """An array of the buffers' data pointers (a loop over the n buffers)."""
        out = b.alloca(_I8P, n)
        entry, loop, done = b.block, fn.append_basic_block("copy"), fn.append_basic_block("copied")
        b.cbranch(b.icmp_signed(">", n, ir.Constant(_I64, 0)), loop, done)
        b.position_at_end(loop)
        k = b.phi(_I64)
        k.add_incoming(ir.Constant(_I64, 0), entry)
        b.store(_load(b, b.load(b.gep(buffers, [k])), _Buffer.data.offset, _I8P), b.gep(out, [k]))
        nxt = b.add(k, ir.Constant(_I64, 1))
        k.add_incoming(nxt, loop)
        b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
        b.position_at_end(done)
        return out

    arg_data, out_data = data_pointers(args, n_args), data_pointers(rets, n_rets)

    def rows(buffers, k):
        return b.load(_load(b, b.load(b.gep(buffers, [ir.Constant(_I64, k)])), _Buffer.dims.offset,
                            _I64.as_pointer()))

    n_i = rows(rets, 0)
    n_j = rows(args, j_arg) if j_arg >= 0 else ir.Constant(_I64, 1)
    kernel_type = ir.FunctionType(ir.VoidType(), [_I64] * 5 + [_I8P.as_pointer()] * 2)
    kernel = b.inttoptr(ir.Constant(_I64, kernel_address), kernel_type.as_pointer())
    zero = ir.Constant(_I64, 0)
    b.call(kernel, [zero, n_i, zero, n_j, n_j, arg_data, out_data])
    b.ret(null)
    return module
