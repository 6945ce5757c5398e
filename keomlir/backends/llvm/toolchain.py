"""The LLVM toolchain every backend shares: target machines (of `schedule.Target`s),
the O3 pipeline, and a JIT engine for host object code.

Backends never create target machines or pass builders themselves, so the
optimization pipeline is the same for the CPU kernels, the PTX and the GPU
simulator.
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm

from ...schedule import host


@functools.lru_cache(maxsize=None)
def _initialize():
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def new_target_machine(target):
    """A fresh LLVM target machine for a `Target` (an MCJIT engine owns and frees its own)."""
    _initialize()
    if target.kind == "gpu":
        return llvm.Target.from_triple(target.triple).create_target_machine(cpu=target.cpu, opt=3)
    return llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")


@functools.lru_cache(maxsize=None)
def target_machine(target):
    """The target machine of `target` shared by compilations (never given to an engine)."""
    return new_target_machine(target)


def host_target_machine():
    """The target machine of the host's code (`schedule.host()`, $KEOMLIR_TARGET's if set)."""
    return target_machine(host())


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
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), new_target_machine(host()))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine
