"""The LLVM toolchain every backend shares: target machines, the host's
features, the O3 pipeline, and a JIT engine for host object code.

Backends never create target machines or pass builders themselves, so the
optimization pipeline is the same for the CPU kernels, the PTX and the GPU
simulator.
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm

NVPTX_TRIPLE = "nvptx64-nvidia-cuda"


@functools.lru_cache(maxsize=None)
def _initialize():
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def new_host_target_machine():
    """A fresh target machine for the host CPU (an MCJIT engine owns and frees its own)."""
    _initialize()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
        opt=3, reloc="pic", codemodel="default",
    )


@functools.lru_cache(maxsize=None)
def host_target_machine():
    """The host's target machine shared by compilations (never given to an engine)."""
    return new_host_target_machine()


@functools.lru_cache(maxsize=None)
def host_target_id():
    """Everything about the host that changes its machine code: triple, CPU, features."""
    return f"{host_target_machine().triple}|{llvm.get_host_cpu_name()}|{llvm.get_host_cpu_features().flatten()}"


@functools.lru_cache(maxsize=None)
def host_vector_bits():
    """The host's SIMD register width, from LLVM's view of the CPU's features."""
    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return 512
    if features.get("avx") or features.get("avx2"):
        return 256
    return 128


@functools.lru_cache(maxsize=None)
def nvptx_target_machine(arch):
    _initialize()
    return llvm.Target.from_triple(NVPTX_TRIPLE).create_target_machine(cpu=arch, opt=3)


def optimize(module, tm=None):
    """Parse and verify an LLVM module (llvmlite.ir module or text) and run LLVM's O3
    pipeline for target machine `tm` (default: the host); returns the ModuleRef."""
    tm = tm or host_target_machine()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    return mod


def host_object(module):
    """Optimized object code for the host."""
    return host_target_machine().emit_object(optimize(module))


def host_engine(obj: bytes):
    """An MCJIT engine with `obj` loaded and finalized: look functions up with
    `engine.get_function_address(name)`; keep the engine alive while they are used."""
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), new_host_target_machine())
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine
