"""The GPU kernels without a GPU: the kernels of `llvm/nvptx.py` built for the
host (`target="host-sim"`) and run on the launch plans of `plan.py`, every GPU
thread an OS thread with real barriers, so the tiling, the 2-D scheme and the
merges are tested on any machine.  For tests; slow.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ...schedule import gpu, schedule
from ..base import Backend, register
from ..llvm import toolchain
from ..llvm.nvptx import KERNELS, render_module
from .plan import launch_steps
from .runner import ptx_key


class _SimKernels:
    def __init__(self, launch, sched):
        module, self.info = render_module(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, sched,
                                          target="host-sim")
        self.engine = toolchain.host_engine(toolchain.host_object(module))
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


def simulate(launch, arrays, block=8, scheme="auto", chunk=None, fan=None, sm_count=1, stage=None,
             fast_math=False, tile=None):
    """Run a Launch's GPU kernels on the host with `block` threads per block and the
    launch plan of `plan.py` (dense, or block-sparse when the launch has ranges), on
    sm_80's schedule with these fields set: `tile` j rows per tile (default: as many as
    the GPU's tile, at most `block`), `stage`, `fast_math`, `fan` (default: the schedule's)."""
    base = schedule(launch.program, gpu("sm_80"), dtype=launch.dtype)
    fields = {"block": block, "stage": base.stage if stage is None else stage, "fast_math": fast_math,
              "tile": min(block, base.tile) if tile is None else tile, **({"fan": fan} if fan else {})}
    sched = schedule(launch.program, gpu("sm_80"), dtype=launch.dtype, overrides=fields)
    key = ptx_key(launch.program, launch.dtype, launch.acc_dtype, launch.sum_scheme, sched) + "\nhost-sim"
    sim = _sims.get(key)
    if sim is None:
        sim = _sims[key] = _SimKernels(launch, sched)
    outs = launch.numpy_outputs()
    steps, scratch, tables = launch_steps(launch, sim.info, sm_count, 2048, scheme, chunk, sched.fan)
    host = [np.ascontiguousarray(a) for a in arrays]
    states = {name: np.zeros(max(words, 1), dtype=np.int64) for name, words in scratch.items()}
    states.update(tables)
    buffers = {f"in{k}": a.ctypes.data for k, a in enumerate(host)}
    buffers.update({f"out{k}": o.ctypes.data for k, o in enumerate(outs)})
    buffers.update({name: s.ctypes.data for name, s in states.items()})
    _simulate_steps(sim, steps, buffers)
    return outs


class SimulatorBackend(Backend):
    """The GPU kernels run on the host (`simulate`: blocks of 8 threads, sm_80's schedule); slow."""

    name = "host-sim"

    def run(self, launch, arrays, device_id=-1):
        return simulate(launch, arrays)


BACKEND = register(SimulatorBackend())
