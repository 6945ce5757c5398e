"""Per-call overhead at M = N = 100 (Gaussian sum, D = 3, float32): the ways a JAX program
can call a keomlir kernel, and torch eager against torch.compile.

    python bench/call_overhead.py          # prints markdown tables (medians of alternating runs)

JAX: keomlir.numpy (the baseline, NumPy arrays), keomlir.jax eagerly, keomlir.jax inside
jax.jit (an XLA FFI custom call of a generated handler that calls the kernel), the same
with the FFI's Python handler instead (what keomlir.jax lowers larger, block-sparse or
threaded calls to), jax.pure_callback around keomlir.numpy (the other way to call a
foreign function from jax.jit), and a dense jax.jit computation of the same sum.
torch: keomlir.torch eagerly, and torch.compile(fullgraph=True) of a function calling it
(backend aot_eager: the custom operator and nothing else; inductor: the default).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

M = N = 100
CALLS = 100  # calls per timed run (one time per run: the mean call)
FORMULA = "Exp(-SqDist(x,y)) * b"
ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"]


def alternate(impls, reps):
    """Median over `reps` runs, in turns, of each implementation's mean call (seconds)."""
    times = {name: [] for name in impls}
    for _ in range(reps):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            for _ in range(CALLS):
                fn()
            times[name].append((time.perf_counter() - t0) / CALLS)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(title, results, base):
    lines = [f"| {title} | per call | vs {base} |", "|---|---|---|"]
    for name, t in results.items():
        lines.append(f"| {name} | {t * 1e6:.1f} µs | {t / results[base]:.2f}x |")
    return "\n".join(lines)


def jax_cases(x, y, b, reps):
    import jax
    import jax.numpy as jnp

    import keomlir.numpy as kn
    from keomlir.jax import Genred, primitives

    g_np = kn.Genred(FORMULA, ALIASES, "Sum", axis=1)
    g = Genred(FORMULA, ALIASES, "Sum", axis=1)
    X, Y, B = (jnp.asarray(a) for a in (x, y, b))
    direct = jax.jit(lambda x, y, b: g(x, y, b))
    python = jax.jit(lambda x, y, b: g(x, y, b) + 0)  # another program: lowered below with the Python handler
    chosen = primitives._generated_handler
    primitives._generated_handler = lambda *a: None
    try:
        python(X, Y, B).block_until_ready()
    finally:
        primitives._generated_handler = chosen
    shape = jax.ShapeDtypeStruct((M, 1), jnp.float32)
    callback = jax.jit(lambda x, y, b: jax.pure_callback(lambda *a: g_np(*map(np.asarray, a)), shape, x, y, b))
    dense = jax.jit(lambda x, y, b: jnp.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b)
    impls = {
        "keomlir.numpy": lambda: g_np(x, y, b),
        "keomlir.jax, eager": lambda: g(X, Y, B).block_until_ready(),
        "keomlir.jax in jax.jit (FFI, generated handler)": lambda: direct(X, Y, B).block_until_ready(),
        "keomlir.jax in jax.jit (FFI, Python handler)": lambda: python(X, Y, B).block_until_ready(),
        "jax.pure_callback(keomlir.numpy) in jax.jit": lambda: callback(X, Y, B).block_until_ready(),
        "dense jnp in jax.jit": lambda: dense(X, Y, B).block_until_ready(),
    }
    for fn in impls.values():
        fn()
    ref = g_np(x, y, b)
    for name, fn in [("direct", direct), ("python", python), ("callback", callback)]:
        assert np.allclose(np.asarray(fn(X, Y, B)), ref, rtol=1e-5, atol=1e-6), name
    return alternate(impls, reps)


def torch_cases(x, y, b, reps):
    import torch

    from keomlir.torch import Genred

    g = Genred(FORMULA, ALIASES, "Sum", axis=1)
    X, Y, B = (torch.from_numpy(a) for a in (x, y, b))

    def f(x, y, b):
        return g(x, y, b)

    aot = torch.compile(f, fullgraph=True, backend="aot_eager")
    inductor = torch.compile(f, fullgraph=True)
    impls = {"keomlir.torch, eager": lambda: f(X, Y, B),
             "torch.compile(fullgraph=True, backend='aot_eager')": lambda: aot(X, Y, B),
             "torch.compile(fullgraph=True) (inductor)": lambda: inductor(X, Y, B)}
    with torch.no_grad():
        for fn in impls.values():
            fn()
        assert torch.allclose(aot(X, Y, B), f(X, Y, B)) and torch.allclose(inductor(X, Y, B), f(X, Y, B))
        return alternate(impls, reps)


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    r = np.random.default_rng(0)
    x, y = ((r.normal(size=(n, 3)) / np.sqrt(3)).astype(np.float32) for n in (M, N))
    b = r.normal(size=(N, 1)).astype(np.float32)
    print(table(f"JAX, M = N = {M}", jax_cases(x, y, b, reps), "keomlir.numpy"))
    print()
    print(table(f"torch, M = N = {M}", torch_cases(x, y, b, reps), "keomlir.torch, eager"))


if __name__ == "__main__":
    main()
