"""Entropic optimal transport between two point clouds in JAX, with keomlir's LogSumExp
reductions: log-domain Sinkhorn, jax.jit-compiled, and its gradient with respect to the
points.

    python examples/sinkhorn_jax.py                    # the check, then 50 000 points against chunked dense JAX
    python examples/sinkhorn_jax.py --n 50000 --reps 2 --iters 10

The cost is C(x, y) = |x - y|^2 / 2, the weights uniform, the blur eps fixed.  Sinkhorn's
dual potentials are updated in the log domain,

    f_i = -eps log sum_j b_j exp((g_j - C(x_i, y_j)) / eps)     (a LogSumExp over j)
    g_j = -eps log sum_i a_i exp((f_i - C(x_i, y_j)) / eps)     (a LogSumExp over i)

for a fixed number of iterations, then the loss is the dual objective <a, f> + <b, g> of one
last update from the potentials held constant: its gradient in x and y is the gradient of the
regularized transport cost at convergence (the envelope theorem), one differentiable update
instead of the whole loop.  First a check: keomlir against the same algorithm on the dense
(n, n) matrix in JAX (float64, n = 500); then the timing at --n points (float32) against a dense
JAX version computed by chunks of rows, run in turns in one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 for the check; the large run is float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from keomlir.jax import Vi, Vj  # noqa: E402


def keomlir_softmin(eps, x, y, h):
    """-eps log sum_j exp((h_j - |x_i - y_j|^2 / 2) / eps), by a keomlir LogSumExp reduction."""
    return -eps * ((Vj(h[:, None]) - Vi(x).sqdist(Vj(y)) / 2) / eps).logsumexp(dim=1)[:, 0]


def dense_softmin(eps, x, y, h, chunk=None):
    """The same on the dense matrix, in chunks of `chunk` rows of x (all at once if None)."""
    def rows(xc):
        cost = ((xc[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 2
        return -eps * jax.nn.logsumexp((h[None, :] - cost) / eps, axis=1)

    if chunk is None:
        return rows(x)
    # rematerialized: reverse mode recomputes a chunk's matrix instead of keeping every chunk's
    return jax.lax.map(jax.checkpoint(rows), x.reshape(-1, chunk, x.shape[1])).reshape(-1)


def sinkhorn_loss(softmin, eps, iters):
    """loss(x, y): the regularized optimal transport cost between uniform measures on x and y."""
    def loss(x, y):
        log_a = jnp.full(len(x), -np.log(len(x)), x.dtype)
        log_b = jnp.full(len(y), -np.log(len(y)), y.dtype)

        # the loop on constants (stop_gradient): nothing of it is differentiated or kept for reverse mode
        x0, y0 = jax.lax.stop_gradient((x, y))

        def step(_, fg):
            f, g = fg
            f = softmin(eps, x0, y0, g + eps * log_b)
            return f, softmin(eps, y0, x0, f + eps * log_a)

        f, g = jax.lax.fori_loop(0, iters, step, (jnp.zeros_like(log_a), jnp.zeros_like(log_b)))
        f, g = softmin(eps, x, y, g + eps * log_b), softmin(eps, y, x, f + eps * log_a)
        return f.mean() + g.mean()

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def clouds(n, dtype, seed=0):
    r = np.random.default_rng(seed)
    x = r.uniform(size=(n, 3))
    y = r.normal(loc=0.5, scale=0.2, size=(n, 3))
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def check(n=500, eps=0.05, iters=30):
    """keomlir against the dense matrix in float64: loss and gradients."""
    x, y = clouds(n, jnp.float64, seed=1)
    (loss, grads), (want, want_grads) = (sinkhorn_loss(keomlir_softmin, eps, iters)(x, y),
                                         sinkhorn_loss(dense_softmin, eps, iters)(x, y))
    errors = [abs(float(loss - want)) / abs(float(want))] + [
        float(jnp.abs(g - w).max() / jnp.abs(w).max()) for g, w in zip(grads, want_grads)]
    print(f"check, n = {n}, float64, {iters} iterations: loss {float(loss):.12g} (dense {float(want):.12g}); "
          f"relative differences: loss {errors[0]:.1e}, gradient in x {errors[1]:.1e}, in y {errors[2]:.1e}")
    assert max(errors) < 1e-9, errors


def timing(n, eps, iters, reps, chunk):
    """keomlir and chunked dense JAX at n points (float32), in turns; returns the markdown rows."""
    x, y = clouds(n, jnp.float32)
    runs = {"keomlir.jax": sinkhorn_loss(keomlir_softmin, eps, iters),
            f"dense JAX, chunks of {chunk} rows": sinkhorn_loss(
                lambda *a: dense_softmin(*a, chunk=chunk), eps, iters)}
    compile_s, times, results = {}, {name: [] for name in runs}, {}
    for name, run in runs.items():  # XLA's compilation, and keomlir's of its kernels (when JAX lowers the program)
        t0 = time.perf_counter()
        runs[name] = run.lower(x, y).compile()
        compile_s[name] = time.perf_counter() - t0
    for _ in range(reps):
        for name, run in runs.items():
            t0 = time.perf_counter()
            results[name] = jax.block_until_ready(run(x, y))
            times[name].append(time.perf_counter() - t0)
    (loss, grads), (want, want_grads) = results.values()
    agree = max([abs(float(loss - want)) / abs(float(want))] + [
        float(jnp.abs(g - w).max() / jnp.abs(w).max()) for g, w in zip(grads, want_grads)])
    base = statistics.median(times["keomlir.jax"])
    rows = [f"| Sinkhorn, n = {n}, D = 3, float32, {iters} iterations + gradient | median of {reps} runs | "
            "compilation | vs keomlir |", "|---|---|---|---|"]
    for name in runs:
        t = statistics.median(times[name])
        rows.append(f"| {name} | {t:.2f} s | {compile_s[name]:.2f} s | {t / base:.1f}x |")
    rows.append(f"\nloss {float(loss):.6g}; largest relative difference keomlir vs dense (loss, gradients): {agree:.1e}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50000, help="points in each cloud (a multiple of --chunk)")
    parser.add_argument("--iters", type=int, default=10, help="Sinkhorn iterations")
    parser.add_argument("--eps", type=float, default=0.05, help="the blur (entropic regularization)")
    parser.add_argument("--reps", type=int, default=2, help="timed runs of each version, in turns")
    parser.add_argument("--chunk", type=int, default=1000, help="rows of the dense version's chunks")
    args = parser.parse_args()
    check()
    print("\n".join(timing(args.n, args.eps, args.iters, args.reps, args.chunk)))


if __name__ == "__main__":
    main()
