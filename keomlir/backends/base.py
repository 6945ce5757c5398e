"""The one interface every backend implements, and the registry the layers above use.

A `Backend` runs checked `Launch`es (`launch.py`) on one kind of machine: its `name` (what
`backend=` says), the `target` it compiles for, the `schedule` of a program there, `compile`
(the code a schedule makes, cached), `run` (the outputs of a launch) and `emit` (the stages of
that code as text, for `keomlir ir`).  The compile entry, the torch forward, keomlir.dask and
keomlir.explain reach the runtimes through `get` / `for_target` only (`registry.py` registers
the built-in ones: CPU, GPU, reference, host-sim).
"""

from __future__ import annotations

from .launch import DTYPES


def untimed(stage, fn, *args):
    return fn(*args)


class Backend:
    name = ""
    kind = None  # the kind of Target it compiles for ("cpu", "gpu"); None: it compiles nothing
    aliases = ()  # other names backend= may give it (pykeops's)
    dtypes = DTYPES  # of the data it runs

    def available(self):
        return True

    def unavailable_reason(self):
        return ""

    def target(self, device_id=-1):
        """The Target its code is for (a GPU backend: that of device `device_id`)."""
        raise NotImplementedError(f"backend {self.name} compiles nothing")

    def schedule(self, program, dtype="float32", overrides=(), sizes=None, target=None):
        """The Schedule it runs `program` with on `target` (default: its own): $KEOMLIR_SCHEDULE's
        overrides, then `overrides`; with sizes=(n_i, n_j), those of a call of those sizes."""
        raise NotImplementedError(f"backend {self.name} has no schedule")

    def compile(self, program, dtype, acc_dtype=None, sum_scheme="block_sum", overrides=(), **options):
        """The compiled code of `program` for `dtype`, as its schedule says (cached)."""
        raise NotImplementedError(f"backend {self.name} compiles nothing")

    def run(self, launch, arrays, device_id=-1):
        """The outputs of a checked Launch on `arrays`."""
        raise NotImplementedError

    def wants(self, launch):
        """backend='auto': whether this backend should take `launch`."""
        return False

    def flops(self, program, dtype="float32", target=None):
        """The floating-point operations per pair and per row of `program`'s kernel, counted
        from this backend's own lowering (`keomlir bench`'s GFLOP/s)."""
        raise NotImplementedError(f"backend {self.name} counts no operations")

    def emit(self, program, dtype, acc_dtype, sum_scheme, sched, forms, timed=untimed, variant="kernel"):
        """{form: text} of the code `sched` makes, for the forms of `keomlir ir --emit` it has
        (timed(stage, fn, *args) runs each stage; `variant`: the CPU entry points, see
        `registry.VARIANTS`)."""
        return {}


BACKENDS: dict[str, Backend] = {}
_ALIASES: dict[str, str] = {}


def register(backend):
    """Add a backend under its name and aliases (a name taken is an error)."""
    for name in (backend.name, *backend.aliases):
        if name in BACKENDS or name in _ALIASES:
            raise ValueError(f"backend {name!r} is already registered")
    BACKENDS[backend.name] = backend
    _ALIASES.update(dict.fromkeys(backend.aliases, backend.name))
    return backend


def names():
    return tuple(BACKENDS)


def canonical(name):
    """The registered name `name` stands for, or None."""
    if name in BACKENDS:
        return name
    return _ALIASES.get(name)


def get(name):
    found = name if name in BACKENDS else _ALIASES.get(name)  # (on every call: no call of `canonical`)
    if found is None:
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, BACKENDS))} (or pykeops's "
                         f"'GPU_1D', 'GPU_2D'...), got {name!r}")
    return BACKENDS[found]


def for_target(target):
    """The backend that compiles for `target`'s kind (the first registered)."""
    for backend in BACKENDS.values():
        if backend.kind == target.kind:
            return backend
    raise ValueError(f"no backend compiles for {target.name} ({target.kind})")
