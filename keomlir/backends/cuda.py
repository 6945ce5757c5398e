"""The GPU runtime: PTX from `llvm/nvptx.py`, loaded and launched through the
CUDA driver API (libcuda) with ctypes.  No CUDA toolkit, nvrtc or compiler is
needed at run time: the driver JIT-compiles the PTX (and caches the result).

- Importing this module never touches libcuda; `available()` says whether a
  driver and a GPU are usable (and never raises), `unavailable_reason()` why not.
- Every driver call is checked: a failure raises `CudaError` with the call's
  name and the driver's own error name and string.
- A device's primary context is the one PyTorch uses: torch CUDA tensors are
  read and written in place and kernels run on torch's current stream.
- Modules are cached per device; PTX is cached in memory and on disk (the
  kernel cache of `cache.py`, keyed by the program, options, arch and versions).
- Launch plans (`plan`) are plain data, run by the driver or, for tests
  without a GPU, by `simulate` on host-compiled copies of the same kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import sys
import threading

import numpy as np

from . import cache

CUresult = ctypes.c_int
FAN = 32  # states merged per thread in one merge pass of the 2-D scheme
MIN_COMPUTE_CAPABILITY = (7, 5)  # the oldest GPU the PTX (sm_75) runs on
AUTO_MIN_PAIRS = 1 << 26  # backend='auto' sends NumPy problems at least this big to a present GPU
# float32 exp/log through the GPU's approximate ex2/lg2 (not yet measured on hardware: off by default)
FAST_MATH = os.environ.get("KEOMLIR_GPU_FAST_MATH", "") == "1"

_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
_CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
_CU_JIT_ERROR_LOG_BUFFER = 5
_CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6


class CudaError(RuntimeError):
    """A CUDA driver call failed."""


# ---- the driver ---------------------------------------------------------------------

_lock = threading.RLock()
_driver = None  # (lib or None, reason)


def _load_driver():
    global _driver
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


# ---- devices, contexts, modules ------------------------------------------------------------


class Device:
    """One GPU: its primary context (shared with PyTorch) and its loaded modules."""

    def __init__(self, ordinal):
        self.ordinal = ordinal
        dev = ctypes.c_int()
        call("cuDeviceGet", ctypes.byref(dev), ordinal)
        self.handle = dev.value
        buf = ctypes.create_string_buffer(256)
        call("cuDeviceGetName", buf, 256, dev)
        self.name = buf.value.decode(errors="replace")
        self.cc = (self._attr(_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                   self._attr(_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        if self.cc < MIN_COMPUTE_CAPABILITY:  # PTX is JIT-compiled forward only, never to older GPUs
            raise NotImplementedError(
                f"GPU {ordinal} ({self.name}) has compute capability {self.cc[0]}.{self.cc[1]}; keomlir's GPU "
                f"backend needs {MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer (its PTX "
                "targets sm_75+): use backend='CPU'")
        self.sm_count = self._attr(_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.threads_per_sm = self._attr(_CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)
        from .llvm.nvptx import arch_for

        self.arch = arch_for(*self.cc)
        ctx = ctypes.c_void_p()
        call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        self.ctx = ctx
        self._modules = {}
        self._lock = threading.Lock()

    def _attr(self, attr):
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

    def kernels(self, program, dtype, acc_dtype, sum_scheme):
        from .llvm.nvptx import config_for

        config = config_for(program, dtype, FAST_MATH)
        key = kernel_key(program, dtype, acc_dtype, sum_scheme, self.arch, config)
        found = self._modules.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._modules.get(key)
            if found is None:
                ptx, info = ptx_for(key, program, dtype, acc_dtype, sum_scheme, self.arch, config)
                with self.current():
                    found = self._modules[key] = GpuKernels(_load_module(ptx), info)
            return found


def _load_module(ptx):
    lib = _lib()
    module = ctypes.c_void_p()
    log = ctypes.create_string_buffer(1 << 14)
    opts = (ctypes.c_int * 2)(_CU_JIT_ERROR_LOG_BUFFER, _CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
    vals = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
    rc = lib.cuModuleLoadDataEx(ctypes.byref(module), ctypes.c_char_p(ptx.encode() + b"\0"), 2, opts, vals)
    if rc != 0:
        detail = log.value.decode(errors="replace").strip()
        raise CudaError(f"cuModuleLoadDataEx failed: {_error_text(lib, rc)}" + (f"\n{detail}" if detail else ""))
    functions = {}
    from .llvm.nvptx import KERNELS

    for name in KERNELS:
        fn = ctypes.c_void_p()
        call("cuModuleGetFunction", ctypes.byref(fn), module, name.encode())
        functions[name] = fn
    return functions


@dataclasses.dataclass
class GpuKernels:
    functions: dict  # kernel name -> CUfunction
    info: object  # nvptx.KernelInfo


_devices = {}


def device(device_id=-1):
    """The Device for `device_id` (-1: GPU 0), checked against the GPUs present."""
    if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)):
        raise ValueError(f"device_id must be an integer (-1 for the default GPU), got {device_id!r}")
    lib = _lib()  # noqa: F841 - raises the clear error without a driver
    n = device_count()
    ordinal = 0 if device_id == -1 else int(device_id)
    if not 0 <= ordinal < n:
        raise ValueError(f"device_id: expected -1 (the default GPU) or a GPU index in [0, {n}), got {device_id!r}")
    with _lock:
        if ordinal not in _devices:
            _devices[ordinal] = Device(ordinal)
        return _devices[ordinal]


# ---- PTX: render, cache ----------------------------------------------------------------------


_ptx = {}


def kernel_key(program, dtype, acc_dtype, sum_scheme, arch, config=None):
    import llvmlite

    from .. import __version__
    from .cpu import compiler_digest
    from .llvm.nvptx import config_for

    config = config or config_for(program, dtype)
    if getattr(program, "tiling", None) is not None:  # the host CPU's schedule: not the GPU's
        program = dataclasses.replace(program, tiling=None)
    return "\n".join([f"keomlir {__version__} ({compiler_digest()}) llvmlite {llvmlite.__version__}",
                      f"target nvptx64 {arch}",
                      f"dtype {dtype} acc {acc_dtype} scheme {sum_scheme} {config}", program.text()])


def ptx_for(key, program, dtype, acc_dtype, sum_scheme, arch, config=None):
    """(PTX, KernelInfo) from memory, from the disk cache, or freshly generated."""
    from .llvm.nvptx import KernelInfo, compile_ptx

    found = _ptx.get(key)
    if found is None:
        payload = cache.load(key)
        if payload is not None:
            try:
                text = payload.decode()
                found = (text, KernelInfo.from_header(text.split("\n", 1)[0]))
            except (UnicodeDecodeError, ValueError, KeyError, IndexError):
                found = None
        if found is None:
            found = compile_ptx(program, dtype, arch, acc_dtype, sum_scheme, config)
            cache.store(key, found[0].encode())
        _ptx[key] = found
    return found


# ---- launch plans ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    kernel: str
    grid: tuple  # (blocks along x, blocks along y)
    block: int
    params: tuple  # ints, or buffer names: 'in<k>', 'out<k>', 's0', 's1'


def _cdiv(a, b):
    return -(-a // b)


def plan(n_i, n_j, n_in, n_out, info, sm_count, threads_per_sm=2048, scheme="auto", chunk=None, fan=FAN):
    """The kernel launches of one reduction, and the state buffers they need
    ({name: i64 words}).  scheme: '1d', '2d' or 'auto' (2-D when the rows alone
    leave most of the GPU idle and there are many j)."""
    B = info.block
    gx = _cdiv(n_i, B)
    ins = tuple(f"in{k}" for k in range(n_in))
    outs = tuple(f"out{k}" for k in range(n_out))
    one_d = ([Step("keomlir_1d", (gx, 1), B, (n_i, n_j) + ins + outs)], {})
    if n_i == 0:
        return [], {}
    if n_j == 0 or scheme == "1d":
        return one_d
    if chunk is None:
        if scheme == "auto":
            resident = sm_count * max(1, threads_per_sm // B)
            if 2 * gx > resident or n_j < 8 * B:
                return one_d
            gj = min(_cdiv(2 * resident, gx), _cdiv(n_j, 4 * B))
            if gj < 2:
                return one_d
        else:
            gj = min(_cdiv(n_j, B), 64)
        chunk = _cdiv(_cdiv(n_j, gj), B) * B
    chunk = max(chunk, _cdiv(n_j, 65535))  # the y dimension of a grid is at most 65535
    gj = _cdiv(n_j, chunk)
    S = info.state_slots
    steps = [Step("keomlir_partial", (gx, gj), B, (n_i, n_j, chunk) + ins + ("s0",))]
    buffers = {"s0": gj * S * n_i}
    mx = _cdiv(n_i, info.merge_block)
    n, src, dst = gj, "s0", "s1"
    while n > fan:
        groups = _cdiv(n, fan)
        buffers[dst] = max(buffers.get(dst, 0), groups * S * n_i)
        steps.append(Step("keomlir_merge", (mx, groups), info.merge_block, (n_i, n, fan, src, dst)))
        n, src, dst = groups, dst, src
    steps.append(Step("keomlir_final", (mx, 1), info.merge_block, (n_i, n, src) + outs))
    return steps, buffers


def ranges_plan(ranges_i, slices_i, block):
    """The (n_chunks, 4) int64 launch plan of the block-sparse kernel: every block
    of ranges_i cut into chunks of at most `block` rows, each with its slice of
    intervals: (first row, end row, first interval, end interval)."""
    first = np.concatenate([[0], slices_i[:-1]]).astype(np.int64)
    chunks = -(-(ranges_i[:, 1] - ranges_i[:, 0]) // block)  # per block of rows (0 when empty)
    owner = np.repeat(np.arange(len(ranges_i)), chunks)
    index = np.arange(len(owner)) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    start = ranges_i[owner, 0] + index * block
    end = np.minimum(start + block, ranges_i[owner, 1])
    return np.ascontiguousarray(np.stack([start, end, first[owner], slices_i[owner]], axis=1), dtype=np.int64)


def ranges_steps(n_i, n_j, n_in, n_out, info, ranges):
    """Launches of a block-sparse reduction (`ranges`: the kernel's checked half of the
    6-tuple) and the int64 tables they read: every row gets the empty reduction
    (keomlir_1d over no j), then the blocks' rows are reduced over their intervals."""
    if n_i == 0:
        return [], {}
    ranges_i, slices_i, redranges = ranges
    chunks = ranges_plan(ranges_i, slices_i, info.block)
    ins = tuple(f"in{k}" for k in range(n_in))
    outs = tuple(f"out{k}" for k in range(n_out))
    steps = [Step("keomlir_1d", (_cdiv(n_i, info.block), 1), info.block, (n_i, 0) + ins + outs)]
    if len(chunks):
        steps.append(Step("keomlir_ranges", (len(chunks), 1), info.block, (n_i, n_j, "plan", "redranges") + ins + outs))
    return steps, {"plan": chunks, "redranges": np.ascontiguousarray(redranges, dtype=np.int64)}


# ---- running on a GPU -------------------------------------------------------------------------


def _launch(kernels, steps, buffers, stream):
    for st in steps:
        values = [ctypes.c_uint64(buffers[p] if isinstance(p, str) else p) for p in st.params]
        ptrs = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        gx, gy = st.grid
        call("cuLaunchKernel", kernels.functions[st.kernel], ctypes.c_uint(gx), ctypes.c_uint(gy),
             ctypes.c_uint(1), ctypes.c_uint(st.block), ctypes.c_uint(1), ctypes.c_uint(1), ctypes.c_uint(0),
             ctypes.c_void_p(stream), ptrs, None)


def _plan_for(dev, kernels, n_i, n_j, n_in, n_out, scheme="auto"):
    return plan(n_i, n_j, n_in, n_out, kernels.info, dev.sm_count, dev.threads_per_sm, scheme)


class _DeviceMemory:
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


def _steps_and_tables(dev, kernels, n_i, n_j, n_in, n_out, scheme, ranges):
    """(launches, scratch state buffers {name: i64 words}, int64 tables to upload {name: array})."""
    if ranges is None:
        return (*_plan_for(dev, kernels, n_i, n_j, n_in, n_out, scheme), {})
    steps, tables = ranges_steps(n_i, n_j, n_in, n_out, kernels.info, ranges)
    return steps, {}, tables


def run_numpy(reduction, arrays, dtype, n_i, n_j, device_id=-1, scheme="auto", ranges=None):
    """Run a frontend Reduction on NumPy arrays on a GPU; returns NumPy outputs.
    `ranges`: the kernel's checked half of a block-sparse 6-tuple, or None."""
    dev = device(device_id)
    program = reduction.program
    kernels = dev.kernels(program, dtype, reduction.acc_dtype(dtype), reduction.sum_scheme)
    outs = [np.empty(shape, dtype=np.int64 if kind == "index" else dtype)
            for shape, kind in reduction.output_shapes(n_i)]
    steps, scratch, tables = _steps_and_tables(dev, kernels, n_i, n_j, len(arrays), len(outs), scheme, ranges)
    if not steps:
        return outs
    host = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]  # row-major; inputs never written
    uploads = {f"in{k}": a for k, a in enumerate(host)}
    uploads.update(tables)
    mem = _DeviceMemory()
    with dev.current():
        try:
            buffers = {}
            for name, a in uploads.items():
                buffers[name] = mem.alloc(a.nbytes)
                if a.nbytes:
                    call("cuMemcpyHtoD_v2", ctypes.c_uint64(buffers[name]), a.ctypes.data_as(ctypes.c_void_p),
                         ctypes.c_size_t(a.nbytes))
            for k, o in enumerate(outs):
                buffers[f"out{k}"] = mem.alloc(o.nbytes)
            for name, words in scratch.items():
                buffers[name] = mem.alloc(8 * words)
            _launch(kernels, steps, buffers, 0)
            for k, o in enumerate(outs):
                if o.nbytes:
                    call("cuMemcpyDtoH_v2", o.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(buffers[f"out{k}"]),
                         ctypes.c_size_t(o.nbytes))
            # the copies are synchronous on the legacy default stream: the results are ready, and
            # a kernel's asynchronous error surfaces here (no context-wide synchronize, which
            # would also wait for other threads' torch streams)
        except BaseException:
            mem.free(check=False)
            raise
        mem.free()
    return outs


class _Meta:
    """A tensor's shape and dtype as `Reduction.check_arrays` reads them."""

    def __init__(self, t):
        self.shape = tuple(t.shape)
        self.ndim = t.dim()
        self.dtype = str(t.dtype).replace("torch.", "")


def run_torch(reduction, tensors, device_id=-1, scheme="auto", ranges=None):
    """Run on torch CUDA tensors (all on one device), in place, on torch's
    current stream of that device; returns CUDA tensors.  `ranges`: unchecked
    6-tuple (checked here against the sizes), or None."""
    import torch

    devices = {t.device for t in tensors}
    if len(devices) != 1:
        detail = ", ".join(f"{reduction.arg_label(k)} is on {t.device}" for k, t in enumerate(tensors))
        raise ValueError(f"all tensors must be on one device: {detail}")
    tdev = devices.pop()
    ordinal = tdev.index if tdev.index is not None else torch.cuda.current_device()
    if device_id not in (-1, ordinal):
        raise ValueError(f"device_id={device_id} but the tensors are on {tdev}: move them or pass device_id=-1")
    dtype, n_i, n_j = reduction.check_arrays([_Meta(t) for t in tensors])
    if ranges is not None:
        ranges = reduction.kernel_ranges(ranges, n_i, n_j)
    dev = device(ordinal)
    kernels = dev.kernels(reduction.program, dtype, reduction.acc_dtype(dtype), reduction.sum_scheme)
    tdtype = getattr(torch, dtype)
    outs = [torch.empty(shape, dtype=torch.int64 if kind == "index" else tdtype, device=tdev)
            for shape, kind in reduction.output_shapes(n_i)]
    steps, scratch, tables = _steps_and_tables(dev, kernels, n_i, n_j, len(tensors), len(outs), scheme, ranges)
    if not steps:
        return outs
    inputs = [t.detach().contiguous() for t in tensors]  # a copy only where needed; never written
    buffers = {f"in{k}": t.data_ptr() for k, t in enumerate(inputs)}
    buffers.update({f"out{k}": o.data_ptr() for k, o in enumerate(outs)})
    states = {name: torch.empty(max(words, 1), dtype=torch.int64, device=tdev) for name, words in scratch.items()}
    states.update({name: torch.from_numpy(a).to(tdev) for name, a in tables.items()})
    buffers.update({name: s.data_ptr() for name, s in states.items()})
    stream = torch.cuda.current_stream(tdev).cuda_stream
    with dev.current():
        _launch(kernels, steps, buffers, stream)
    # the caching allocator orders reuse of `inputs` and `states` after this stream's work
    return outs


def wants_gpu(n_i, n_j):
    """backend='auto' on NumPy inputs: a GPU is present and the problem is large."""
    return n_i * max(n_j, 1) >= AUTO_MIN_PAIRS and available()


# ---- the simulator: the same kernels on the host, one OS thread per GPU thread -----------------


class _SimKernels:
    def __init__(self, program, dtype, acc_dtype, sum_scheme, config):
        import llvmlite.binding as llvm

        from . import cpu
        from .llvm.nvptx import KERNELS, render_module

        module, self.info = render_module(program, dtype, acc_dtype, sum_scheme, config, target="host-sim")
        mod = cpu.optimize(str(module))
        obj = cpu.target_machine().emit_object(mod)
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), cpu._new_target_machine())
        self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.addresses = {name: self.engine.get_function_address(name) for name in KERNELS}


_BARRIER_FN = ctypes.CFUNCTYPE(None)


def _simulate_steps(sim, steps, buffers):
    failures = []
    for st in steps:
        params = [buffers[p] if isinstance(p, str) else p for p in st.params]
        fn = ctypes.CFUNCTYPE(None, *([ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * len(params)))(
            sim.addresses[st.kernel])
        gx, gy = st.grid
        shared = np.zeros(max(sim.info.shared_bytes, 8), dtype=np.uint8)
        for by in range(gy):
            for bx in range(gx):
                if st.kernel in ("keomlir_merge", "keomlir_final"):  # no barrier: threads in turn
                    for t in range(st.block):
                        fn(t, bx, by, None, None, *params)
                    continue
                barrier = threading.Barrier(st.block, timeout=60)

                def wait():
                    try:
                        barrier.wait()
                    except threading.BrokenBarrierError as e:
                        failures.append(e)

                cb = _BARRIER_FN(wait)
                threads = [threading.Thread(target=fn, args=(t, bx, by, ctypes.cast(cb, ctypes.c_void_p),
                                                              shared.ctypes.data, *params))
                           for t in range(st.block)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                if failures:
                    raise RuntimeError(f"simulated {st.kernel}: a barrier broke ({failures[0]!r})")


_sims = {}


def simulate(reduction, arrays, block=8, scheme="auto", chunk=None, fan=FAN, sm_count=1, stage=None,
             fast_math=False, ranges=None):
    """Run a frontend Reduction's GPU kernels on the host: the kernels of
    `nvptx.py` built for the host with `block` threads per block, the launch
    plan of `plan`, every GPU thread an OS thread.  For tests; slow."""
    from .llvm.nvptx import GpuConfig, config_for

    dtype, n_i, n_j = reduction.check_arrays(arrays)
    base = config_for(reduction.program, dtype)
    config = GpuConfig(block, base.stage if stage is None else stage, fast_math)
    key = (kernel_key(reduction.program, dtype, reduction.acc_dtype(dtype), reduction.sum_scheme, "host-sim",
                      config))
    sim = _sims.get(key)
    if sim is None:
        sim = _sims[key] = _SimKernels(reduction.program, dtype, reduction.acc_dtype(dtype),
                                       reduction.sum_scheme, config)
    outs = [np.empty(shape, dtype=np.int64 if kind == "index" else dtype)
            for shape, kind in reduction.output_shapes(n_i)]
    tables = {}
    if ranges is None:
        steps, scratch = plan(n_i, n_j, len(arrays), len(outs), sim.info, sm_count, 2048, scheme, chunk, fan)
    else:  # as run_numpy: the kernel's checked half of the 6-tuple
        (steps, tables), scratch = ranges_steps(n_i, n_j, len(arrays), len(outs), sim.info, ranges), {}
    host = [np.ascontiguousarray(a) for a in arrays]
    states = {name: np.zeros(max(words, 1), dtype=np.int64) for name, words in scratch.items()}
    states.update(tables)
    buffers = {f"in{k}": a.ctypes.data for k, a in enumerate(host)}
    buffers.update({f"out{k}": o.ctypes.data for k, o in enumerate(outs)})
    buffers.update({name: s.ctypes.data for name, s in states.items()})
    _simulate_steps(sim, steps, buffers)
    return outs
