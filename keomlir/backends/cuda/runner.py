"""Running a `Launch` on a GPU: PTX compiled and cached, modules loaded per
device, the launch plan of `plan.py` executed through the driver.

NumPy arrays are copied to the device and back; torch CUDA tensors are read
and written in place, on torch's current stream.  No CUDA toolkit is needed:
the driver JIT-compiles the PTX (and caches the result); the PTX itself is
cached in memory and on disk under `cache.kernel_key`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .. import cache
from ...schedule import gpu, schedule, with_env, with_sizes
from ...schedule.record import ENV
from ..base import Backend, register, untimed
from ..llvm.nvptx import KERNELS, KernelInfo, compile_ptx
from . import driver
from .plan import launch_steps

AUTO_MIN_PAIRS = 1 << 26  # backend='auto' sends NumPy problems at least this big to a present GPU
# float32 exp/log through the GPU's approximate ex2/lg2 (not yet measured on hardware: off by default)
FAST_MATH = os.environ.get("KEOMLIR_GPU_FAST_MATH", "") == "1"


@dataclasses.dataclass
class GpuKernels:
    functions: dict  # kernel name -> CUfunction
    info: KernelInfo


_ptx = {}
_schedules = {}


def gpu_schedule(program, dtype, target, overrides=()):
    """The schedule the GPU runtime runs `program` with on `target` (a `schedule.Target`):
    fast math as FAST_MATH says, then $KEOMLIR_SCHEDULE's overrides, then `overrides`."""
    return schedule(program, target, dtype=dtype, overrides=(("fast_math", FAST_MATH),) + with_env(overrides))


def ptx_key(program, dtype, acc_dtype, sum_scheme, sched):
    """The cache key of a program's PTX run as `sched` says (the program is target-independent)."""
    return cache.kernel_key(program, sched.target.key, dtype=dtype, acc=acc_dtype, scheme=sum_scheme,
                            schedule=sched.key())


def ptx_for(program, dtype, acc_dtype, sum_scheme, sched):
    """(key, PTX, KernelInfo) from memory, from the disk cache, or freshly generated: the PTX the
    runtime loads (`keomlir ir --emit ptx` prints it)."""
    key = ptx_key(program, dtype, acc_dtype, sum_scheme, sched)
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
            found = compile_ptx(program, dtype, acc_dtype, sum_scheme, sched)
            cache.store(key, found[0].encode())
        _ptx[key] = found
    return (key,) + found


def launch_schedule(dev, launch):
    """The schedule of a launch on device `dev` (memoized: looked up on every call)."""
    memo = (launch.program, launch.dtype, dev.arch, dev.sm_count, dev.threads_per_sm, launch.schedule, FAST_MATH,
            os.environ.get(ENV))
    found = _schedules.get(memo)
    if found is None:
        target = gpu(dev.arch, dev.sm_count, dev.threads_per_sm)
        found = _schedules[memo] = gpu_schedule(launch.program, launch.dtype, target, launch.schedule)
    return found


def kernels(dev, launch):
    """(the launch's kernels loaded on `dev`, compiled or cached once per device; the schedule)."""
    sched = launch_schedule(dev, launch)
    key = ptx_key(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, sched)

    def load():
        _, ptx, info = ptx_for(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, sched)
        return GpuKernels(dev.load_module(ptx, KERNELS), info)

    return dev.loaded(key, load), sched


def _launch(gpu_kernels, steps, buffers, stream):
    for st in steps:
        params = [buffers[p] if isinstance(p, str) else p for p in st.params]
        driver.launch_kernel(gpu_kernels.functions[st.kernel], st.grid, st.block, params, stream)


def _steps(launch, gpu_kernels, sched, dev, scheme):
    return launch_steps(launch, gpu_kernels.info, dev.sm_count, dev.threads_per_sm, scheme or sched.plan, sched.chunk,
                        sched.fan)


def run_numpy(launch, arrays, device_id=-1, scheme=None):
    """Run a checked Launch on NumPy arrays on a GPU; returns NumPy outputs (scheme: the
    schedule's `plan` unless given)."""
    dev = driver.device(device_id)
    gpu_kernels, sched = kernels(dev, launch)
    outs = launch.numpy_outputs()
    steps, scratch, tables = _steps(launch, gpu_kernels, sched, dev, scheme)
    if not steps:
        return outs
    # row-major; inputs never written (of the launch's dtype, checked: torch.bfloat16's bits as int16 kept)
    host = [np.ascontiguousarray(a) for a in arrays]
    uploads = {f"in{k}": a for k, a in enumerate(host)}
    uploads.update(tables)
    mem = driver.DeviceMemory()
    with dev.current():
        try:
            buffers = {}
            for name, a in uploads.items():
                buffers[name] = mem.alloc(a.nbytes)
                driver.copy_to_device(buffers[name], a)
            for k, o in enumerate(outs):
                buffers[f"out{k}"] = mem.alloc(o.nbytes)
            for name, words in scratch.items():
                buffers[name] = mem.alloc(8 * words)
            _launch(gpu_kernels, steps, buffers, 0)
            for k, o in enumerate(outs):
                driver.copy_to_host(o, buffers[f"out{k}"])
            # the copies are synchronous on the legacy default stream: the results are ready, and
            # a kernel's asynchronous error surfaces here (no context-wide synchronize, which
            # would also wait for other threads' torch streams)
        except BaseException:
            mem.free(check=False)
            raise
        mem.free()
    return outs


def run_torch(launch, tensors, device_id=-1, scheme=None):
    """Run a checked Launch on torch CUDA tensors (all on one device), in place, on
    torch's current stream of that device; returns CUDA tensors."""
    import torch

    devices = {t.device for t in tensors}
    if len(devices) != 1:
        detail = ", ".join(f"argument {k} is on {t.device}" for k, t in enumerate(tensors))
        raise ValueError(f"all tensors must be on one device: {detail}")
    tdev = devices.pop()
    ordinal = tdev.index if tdev.index is not None else torch.cuda.current_device()
    if device_id not in (-1, ordinal):
        raise ValueError(f"device_id={device_id} but the tensors are on {tdev}: move them or pass device_id=-1")
    dev = driver.device(ordinal)
    gpu_kernels, sched = kernels(dev, launch)
    outs = [torch.empty(shape, dtype=getattr(torch, launch.output_dtype(kind)), device=tdev)
            for shape, kind in launch.outputs]
    steps, scratch, tables = _steps(launch, gpu_kernels, sched, dev, scheme)
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
        _launch(gpu_kernels, steps, buffers, stream)
    # `buffers` holds raw addresses of `inputs` and `states`: they live until the launches
    # are queued (this last use; see cpu.run), and the caching allocator orders their
    # reuse after this stream's work
    del inputs, states
    return outs


def wants_gpu(n_i, n_j):
    """backend='auto' on NumPy inputs: a GPU is present and the problem is large."""
    return n_i * max(n_j, 1) >= AUTO_MIN_PAIRS and driver.available()


class GpuBackend(Backend):
    """An NVIDIA GPU through the CUDA driver: PTX, one thread a row, tiles in shared memory."""

    name, kind = "GPU", "gpu"
    # pykeops's GPU schemes and memory placements: this backend picks its scheme itself
    aliases = tuple(f"GPU_{grid}{mem}" for grid in ("1D", "2D") for mem in ("", "_host", "_device"))

    def available(self):
        return driver.available()

    def unavailable_reason(self):
        return driver.unavailable_reason()

    def target(self, device_id=-1):
        dev = driver.device(device_id)
        return gpu(dev.arch, dev.sm_count, dev.threads_per_sm)

    def schedule(self, program, dtype="float32", overrides=(), sizes=None, target=None):
        sched = gpu_schedule(program, dtype, target or self.target(), overrides)
        return sched if sizes is None else with_sizes(sched, sizes)

    def compile(self, program, dtype, acc_dtype=None, sum_scheme="block_sum", overrides=(), target=None):
        """(cache key, PTX, KernelInfo): the PTX the runtime loads for `target` (default: the device's)."""
        return ptx_for(program, dtype, acc_dtype or dtype, sum_scheme, self.schedule(program, dtype, overrides,
                                                                                        target=target))

    def run(self, launch, arrays, device_id=-1):
        """NumPy arrays (copied to the device and back), or torch CUDA tensors (used in place)."""
        if arrays and type(arrays[0]).__module__.startswith("torch"):
            return run_torch(launch, arrays, device_id)
        return run_numpy(launch, arrays, device_id)

    def wants(self, launch):
        return wants_gpu(launch.n_i, launch.n_j)

    def emit(self, program, dtype, acc_dtype, sum_scheme, sched, forms, timed=untimed, variant="kernel"):
        if "ptx" not in forms:
            return {}
        return {"ptx": timed("NVPTX", ptx_for, program, dtype, acc_dtype, sum_scheme, sched)[1]}


BACKEND = register(GpuBackend())
