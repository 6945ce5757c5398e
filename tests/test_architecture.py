"""The layering ARCHITECTURE.md describes, checked on the source: imports only point
down the pipeline, no import cycle, no import hidden inside a function except of an
optional dependency, and no module over 800 lines."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "keomlir"
MAX_LINES = 800
# each top-level part of the package and its layer: a module imports only its own layer or lower ones
LAYERS = {
    "_version": 0,
    "ir": 1,
    "grammar": 2, "passes": 2, "schedule": 2,
    "backends": 3,
    "ranges": 4, "config": 4, "compile": 4, "tune": 4,
    "calls": 5, "arrays": 5, "derivatives": 5, "lazy": 5, "solve": 5, "cluster": 5,
    "numpy": 6, "torch": 6, "jax": 6, "dask": 6,
    "explain": 7, "workbench": 7, "checks": 7, "compat": 7, "common": 7, "cli": 7, "demo": 7, "__main__": 8, "__init__": 8,
}
# inside backends/: the records and the interface every runtime takes, then code generation (llvm/),
# then the runtimes, then the registry of them; a module imports only its own sub-layer or lower ones
BACKEND_LAYERS = {
    "launch": 0, "base": 0, "cache": 0, "tuned": 0,
    "llvm": 1,
    "threads": 2, "xla_ffi": 2, "cpu": 2, "reference": 2, "cuda": 2,
    "registry": 3,
}
# what the layers above may import from backends/: the registry (every run and compile goes through
# it, no path around it), the records it takes, the disk cache and the tuning database beside it,
# the CUDA driver (device queries) and XLA's FFI call frame (keomlir.jax's Python handler)
BACKEND_DOORS = {"keomlir.backends.registry", "keomlir.backends.base", "keomlir.backends.launch",
                 "keomlir.backends.cache", "keomlir.backends.tuned", "keomlir.backends.cuda.driver",
                 "keomlir.backends.xla_ffi"}
# optional dependencies, imported where they are needed rather than at the top: third-party
# packages, and the front ends that need them
OPTIONAL = {"torch", "jax", "scipy", "dask", "distributed", "matplotlib", "ml_dtypes", "keomlir.torch", "keomlir.jax",
            "keomlir.dask"}


def _modules():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module):
    parts = module.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def _resolve(module, path, node):
    """The keomlir modules an import statement names (a `from pkg import sub` may name a submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "keomlir"]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "keomlir":
        return []
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def _imports():
    """{module: (top-level keomlir imports, [(function-local import, line)])}."""
    table = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top, local = set(), []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if node.col_offset == 0:
                top.update(_resolve(module, path, node))
            else:
                local.append((node, node.lineno))
        table[module] = (top, local)
    return table


IMPORTS = _imports()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_short(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


def test_imports_point_down_the_pipeline():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, (top, _) in IMPORTS.items() for t in top if t in MODULES and _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def _backend_layer(module):
    return BACKEND_LAYERS[module.split(".")[2]]


def test_backends_are_layered_inside():
    """llvm/ code generation imports no runtime, a runtime not the registry."""
    inside = [m for m in MODULES if m.startswith("keomlir.backends.")]
    assert {m.split(".")[2] for m in inside} == set(BACKEND_LAYERS)
    upward = [f"{m} (sub-layer {_backend_layer(m)}) imports {t} (sub-layer {_backend_layer(t)})"
              for m in inside for t in IMPORTS[m][0]
              if t.startswith("keomlir.backends.") and _backend_layer(t) > _backend_layer(m)]
    assert not upward, "\n".join(upward)


def test_the_layers_above_reach_backends_through_the_registry():
    around = [f"{m} imports {t}" for m, (top, _) in IMPORTS.items() if not m.startswith("keomlir.backends")
              for t in top if t.startswith("keomlir.backends.") and t not in BACKEND_DOORS]
    assert not around, "\n".join(around)
    assert "keomlir.backends.registry" in IMPORTS["keomlir.compile"][0]
    assert "keomlir.backends.registry" in IMPORTS["keomlir.dask.partials"][0]


def test_no_import_cycle():
    graph = {m: {t for t in top if t in MODULES and t != m} for m, (top, _) in IMPORTS.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_function_local_imports_are_optional_dependencies_only():
    hidden = []
    for module, (_, local) in IMPORTS.items():
        for node, line in local:
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("keomlir")):
                names = _resolve(module, MODULES[module], node)
            else:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            hidden += [f"{module}:{line} imports {n}" for n in names
                       if not any(n == o or n.startswith(o + ".") for o in OPTIONAL)]
    assert not hidden, "\n".join(hidden)


def test_the_checker_sees_the_layers():
    """The checks above would pass vacuously on a misread tree."""
    assert {"keomlir.compile", "keomlir.backends.cpu", "keomlir.ir.node", "keomlir.grammar.parser"} <= set(MODULES)
    assert "keomlir.backends.registry" in IMPORTS["keomlir.compile"][0]
    assert "keomlir.backends.llvm.renderer" in IMPORTS["keomlir.backends.cpu"][0]
    assert "keomlir.ir.node" in IMPORTS["keomlir.grammar.parser"][0]
    assert all(m.split(".")[1] in LAYERS for m in MODULES if "." in m)
