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
from ..llvm.nvptx import KERNELS, KernelInfo, compile_ptx, config_for
from ...schedule import gpu
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


def ptx_key(launch, arch, config):
    """The cache key of a launch's PTX for `arch` (the program is target-independent: untiled)."""
    return cache.kernel_key(launch.program, f"nvptx64 {arch}", dtype=launch.dtype, acc=launch.acc_dtype,
                            scheme=launch.sum_scheme, config=config)


def ptx_for(key, launch, arch, config):
    """(PTX, KernelInfo) from memory, from the disk cache, or freshly generated."""
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
            found = compile_ptx(launch.program, launch.dtype, arch, launch.acc_dtype, launch.sum_scheme, config)
            cache.store(key, found[0].encode())
        _ptx[key] = found
    return found


def kernels(dev, launch):
    """The launch's kernels loaded on `dev` (compiled or cached once per device)."""
    config = config_for(launch.program, launch.dtype, FAST_MATH, gpu(dev.arch))
    key = ptx_key(launch, dev.arch, config)

    def load():
        ptx, info = ptx_for(key, launch, dev.arch, config)
        return GpuKernels(dev.load_module(ptx, KERNELS), info)

    return dev.loaded(key, load)


def _launch(gpu_kernels, steps, buffers, stream):
    for st in steps:
        params = [buffers[p] if isinstance(p, str) else p for p in st.params]
        driver.launch_kernel(gpu_kernels.functions[st.kernel], st.grid, st.block, params, stream)


def run_numpy(launch, arrays, device_id=-1, scheme="auto"):
    """Run a checked Launch on NumPy arrays on a GPU; returns NumPy outputs."""
    dev = driver.device(device_id)
    gpu_kernels = kernels(dev, launch)
    outs = launch.numpy_outputs()
    steps, scratch, tables = launch_steps(launch, gpu_kernels.info, dev.sm_count, dev.threads_per_sm, scheme)
    if not steps:
        return outs
    host = [np.ascontiguousarray(a, dtype=launch.dtype) for a in arrays]  # row-major; inputs never written
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


def run_torch(launch, tensors, device_id=-1, scheme="auto"):
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
    gpu_kernels = kernels(dev, launch)
    outs = [torch.empty(shape, dtype=getattr(torch, launch.output_dtype(kind)), device=tdev)
            for shape, kind in launch.outputs]
    steps, scratch, tables = launch_steps(launch, gpu_kernels.info, dev.sm_count, dev.threads_per_sm, scheme)
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
    # the caching allocator orders reuse of `inputs` and `states` after this stream's work
    return outs


def wants_gpu(n_i, n_j):
    """backend='auto' on NumPy inputs: a GPU is present and the problem is large."""
    return n_i * max(n_j, 1) >= AUTO_MIN_PAIRS and driver.available()
