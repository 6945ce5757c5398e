"""The CUDA driver API (libcuda) through ctypes: the only module that calls it.

- Importing this module never touches libcuda; `available()` says whether a
  driver and a GPU are usable (and never raises), `unavailable_reason()` why not.
- Every driver call goes through `call`: a failure raises `CudaError` with the
  call's name and the driver's own error name and string.
- A device's primary context is the one PyTorch uses, so torch CUDA tensors are
  read and written in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading

import numpy as np

from ..llvm.nvptx import arch_for

MIN_COMPUTE_CAPABILITY = (7, 5)  # the oldest GPU the PTX (sm_75) runs on

CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
_CU_JIT_ERROR_LOG_BUFFER = 5
_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6


class CudaError(RuntimeError):
    """A CUDA driver call failed."""


_lock = threading.RLock()
_driver = None  # (lib or None, reason)
_library_name = ""  # the libcuda that loaded


def _load_driver():
    global _driver, _library_name
    with _lock:
        if _driver is not None:
            return _driver
        names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
        found = ctypes.util.find_library("cuda")
        if found:
            names.insert(0, found)
        lib, reason = None, "no CUDA driver: libcuda was not found"
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                _library_name = name
                break
            except OSError:
                continue
        if lib is not None:
            try:
                rc = lib.cuInit(0)
                count = ctypes.c_int(0)
                if rc == 0:
                    rc = lib.cuDeviceGetCount(ctypes.byref(count))
                if rc != 0:
                    reason = f"the CUDA driver does not initialize: {_error_text(lib, rc)}"
                    lib = None
                elif count.value == 0:
                    reason, lib = "the CUDA driver sees no GPU", None
                else:
                    reason = ""
            except (AttributeError, OSError) as e:  # not a usable libcuda
                reason, lib = f"libcuda is not usable: {e}", None
        _driver = (lib, reason)
        return _driver


def _error_text(lib, rc):
    name, text = ctypes.c_char_p(), ctypes.c_char_p()
    try:
        lib.cuGetErrorName(rc, ctypes.byref(name))
        lib.cuGetErrorString(rc, ctypes.byref(text))
    except (AttributeError, OSError):
        pass
    n = name.value.decode() if name.value else f"CUresult {rc}"
    return f"{n} ({rc}): {text.value.decode() if text.value else 'unknown error'}"


def available():
    """A CUDA driver and at least one GPU are usable.  Never raises."""
    try:
        return _load_driver()[0] is not None
    except Exception:  # pragma: no cover - defensive: availability must never raise
        return False


def unavailable_reason():
    return _load_driver()[1] if not available() else ""


def library_name():
    """The file libcuda was loaded from ('' when none loaded)."""
    _load_driver()
    return _library_name


def _lib():
    lib, reason = _load_driver()
    if lib is None:
        raise ValueError(f"backend='GPU': the GPU backend is not available on this machine ({reason})")
    return lib


def call(name, *args):
    """lib.name(*args), raising CudaError with the driver's explanation on failure."""
    lib = _lib()
    rc = getattr(lib, name)(*args)
    if rc != 0:
        raise CudaError(f"{name} failed: {_error_text(lib, rc)}")


def device_count():
    if not available():
        return 0
    n = ctypes.c_int()
    call("cuDeviceGetCount", ctypes.byref(n))
    return n.value


def version():
    """(major, minor) of the CUDA version the driver supports."""
    v = ctypes.c_int()
    call("cuDriverGetVersion", ctypes.byref(v))
    return v.value // 1000, v.value % 1000 // 10


def _device_handle(ordinal):
    dev = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(dev), ordinal)
    return dev


def _name_of(dev):
    buf = ctypes.create_string_buffer(256)
    call("cuDeviceGetName", buf, 256, dev)
    return buf.value.decode(errors="replace")


def device_name(ordinal):
    """The GPU's name, without retaining its context (for `keomlir info`)."""
    return _name_of(_device_handle(ordinal))


# ---- devices, contexts, modules ------------------------------------------------------------


class Device:
    """One GPU: its primary context (shared with PyTorch) and its loaded modules."""

    def __init__(self, ordinal):
        self.ordinal = ordinal
        dev = _device_handle(ordinal)
        self.handle = dev.value
        self.name = _name_of(dev)
        self.cc = (self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                   self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        if self.cc < MIN_COMPUTE_CAPABILITY:  # PTX is JIT-compiled forward only, never to older GPUs
            raise NotImplementedError(
                f"GPU {ordinal} ({self.name}) has compute capability {self.cc[0]}.{self.cc[1]}; keomlir's GPU "
                f"backend needs {MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer (its PTX "
                "targets sm_75+): use backend='CPU'")
        self.sm_count = self.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.threads_per_sm = self.attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)
        self.arch = arch_for(*self.cc)
        ctx = ctypes.c_void_p()
        call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        self.ctx = ctx
        self._loaded = {}
        self._lock = threading.Lock()

    def attribute(self, attr):
        v = ctypes.c_int()
        call("cuDeviceGetAttribute", ctypes.byref(v), attr, self.handle)
        return v.value

    @contextlib.contextmanager
    def current(self):
        """This device's primary context is current inside (restored after)."""
        call("cuCtxPushCurrent_v2", self.ctx)
        try:
            yield self
        except BaseException:  # the first error is the one to see: the pop's is dropped
            _lib().cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
            raise
        call("cuCtxPopCurrent_v2", ctypes.byref(ctypes.c_void_p()))

    def loaded(self, key, load):
        """What `load()` returns, once per key on this device (modules are per context)."""
        found = self._loaded.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = self._loaded[key] = load()
            return found

    def load_module(self, ptx, names):
        """Load PTX (JIT-compiled by the driver) into this device's context;
        returns {name: CUfunction} for the kernels `names`."""
        with self.current():
            lib = _lib()
            module = ctypes.c_void_p()
            log = ctypes.create_string_buffer(1 << 14)
            opts = (ctypes.c_int * 2)(_CU_JIT_ERROR_LOG_BUFFER, _CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
            vals = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
            rc = lib.cuModuleLoadDataEx(ctypes.byref(module), ctypes.c_char_p(ptx.encode() + b"\0"), 2, opts, vals)
            if rc != 0:
                detail = log.value.decode(errors="replace").strip()
                raise CudaError(f"cuModuleLoadDataEx failed: {_error_text(lib, rc)}"
                                + (f"\n{detail}" if detail else ""))
            functions = {}
            for name in names:
                fn = ctypes.c_void_p()
                call("cuModuleGetFunction", ctypes.byref(fn), module, name.encode())
                functions[name] = fn
            return functions


_devices = {}


def device(device_id=-1):
    """The Device for `device_id` (-1: GPU 0), checked against the GPUs present."""
    if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)):
        raise ValueError(f"device_id must be an integer (-1 for the default GPU), got {device_id!r}")
    _lib()  # raises the clear error without a driver
    n = device_count()
    ordinal = 0 if device_id == -1 else int(device_id)
    if not 0 <= ordinal < n:
        raise ValueError(f"device_id: expected -1 (the default GPU) or a GPU index in [0, {n}), got {device_id!r}")
    with _lock:
        if ordinal not in _devices:
            _devices[ordinal] = Device(ordinal)
        return _devices[ordinal]


# ---- memory and launches (the current context's) ---------------------------------------------


class DeviceMemory:
    """cuMemAlloc'd buffers, freed together."""

    def __init__(self):
        self.ptrs = []

    def alloc(self, nbytes):
        p = ctypes.c_uint64()
        call("cuMemAlloc_v2", ctypes.byref(p), ctypes.c_size_t(max(int(nbytes), 8)))
        self.ptrs.append(p.value)
        return p.value

    def free(self, check=True):
        """Free every buffer; check=False (on an error path): ignore the driver's answers,
        so that the first error stays the one raised."""
        lib, failed = _lib(), 0
        while self.ptrs:
            rc = lib.cuMemFree_v2(ctypes.c_uint64(self.ptrs.pop()))
            failed = failed or rc
        if check and failed:
            raise CudaError(f"cuMemFree_v2 failed: {_error_text(lib, failed)}")


def copy_to_device(dst, array):
    """A synchronous copy of a contiguous NumPy array to device address `dst`."""
    if array.nbytes:
        call("cuMemcpyHtoD_v2", ctypes.c_uint64(dst), array.ctypes.data_as(ctypes.c_void_p),
             ctypes.c_size_t(array.nbytes))


def copy_to_host(array, src):
    """A synchronous copy from device address `src` into a contiguous NumPy array."""
    if array.nbytes:
        call("cuMemcpyDtoH_v2", array.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(src),
             ctypes.c_size_t(array.nbytes))


def launch_kernel(function, grid, block, params, stream):
    """One kernel launch: grid (x, y) of 1-D blocks; every parameter a 64-bit word."""
    values = [ctypes.c_uint64(p) for p in params]
    ptrs = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    gx, gy = grid
    call("cuLaunchKernel", function, ctypes.c_uint(gx), ctypes.c_uint(gy), ctypes.c_uint(1),
         ctypes.c_uint(block), ctypes.c_uint(1), ctypes.c_uint(1), ctypes.c_uint(0), ctypes.c_void_p(stream),
         ptrs, None)
