"""The GPU runtime: PTX from `llvm/nvptx.py`, loaded and launched through the
CUDA driver API (libcuda) with ctypes; no CUDA toolkit at run time.

By concern: `driver` (libcuda bindings, devices, contexts, modules, memory),
`plan` (launch plans as plain data), `runner` (a `Launch` on NumPy arrays or
torch CUDA tensors; its `GpuBackend`, "GPU"), `simulator` (the same kernels and plans on
the host; "host-sim").
Settings that tests and benchmarks change live in their module
(`runner.AUTO_MIN_PAIRS`, `runner.FAST_MATH`, `driver._driver`).  The planner is
`plan.plan`: re-exporting it would hide the `plan` module behind the function.
"""

from . import driver, plan, runner, simulator
from .driver import CudaError, Device, available, call, device, device_count, unavailable_reason
from .plan import FAN, Step, launch_steps, ranges_plan, ranges_steps
from .runner import run_numpy, run_torch, wants_gpu
from .simulator import simulate

__all__ = ["CudaError", "Device", "FAN", "Step", "available", "call", "device", "device_count", "driver",
           "launch_steps", "plan", "ranges_plan", "ranges_steps", "run_numpy", "run_torch", "runner", "simulate",
           "simulator", "unavailable_reason", "wants_gpu"]
