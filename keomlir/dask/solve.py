"""KernelSolve on dask arrays: `(alpha Id + K) a = b` by conjugate gradient, each
matrix-vector product a keomlir.dask Sum reduction over the cluster.

The iterates (a, r, p and K p) are dask arrays persisted where the scheduler put
them: the points and the vectors stay on the workers, and only one number per
column (the dot products that set the step sizes) comes back to the client at
each step.  The recurrences are those of keomlir.numpy's KernelSolve (float64
vectors, the kernel in the data's dtype, block-diagonal steps when the formula
is `scalar kernel * a`), so both stop after the same number of steps.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from .. import solve
from ..solve import ConvergenceError, NotPositiveDefiniteError, cg_setup
from .arrays import DASK
from .genred import Genred

__all__ = ["KernelSolve"]


class KernelSolve(solve.KernelSolve):
    """keomlir.numpy.KernelSolve (same constructor, `from_ir`, checks and messages) whose
    call takes dask arrays (or NumPy arrays).  The call runs the iterations (each step
    needs the previous residual) and returns the solution as a persisted dask array,
    chunked like b."""

    genred_class = Genred
    arrays = DASK

    def _solve(self, args, alpha, opts):
        backend, _, eps, maxiter, x0, verbose, ranges = opts
        core = self.core
        if ranges is not None:
            raise ValueError("ranges: block-sparse reductions are not supported by keomlir.dask")
        out = core.genred(*args, backend=backend)  # the dask checks (chunks, dtype); nothing runs
        pos = core.varinvpos
        b = args[pos]
        b = (b if isinstance(b, da.Array) else da.from_array(b, chunks=(out.chunks[0], -1))).astype(np.float64)
        dtype = out.dtype

        def linop(p):
            full = list(args)
            full[pos] = p.astype(dtype)
            return core.genred(*full, backend=backend).astype(np.float64).rechunk(b.chunks) + alpha * p

        if x0 is not None:
            if tuple(x0.shape) != tuple(b.shape):
                raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
            x0 = x0 if isinstance(x0, da.Array) else da.from_array(np.asarray(x0), chunks=b.chunks)
            x0 = x0.astype(np.float64).rechunk(b.chunks)
        return _conjugate_gradient(linop, b, x0, eps, maxiter, core.separable, verbose, core.label).astype(dtype)


def _conjugate_gradient(linop, b, x0, eps, maxiter, columns, verbose, what):
    """keomlir.solve.conjugate_gradient's recurrences on persisted dask arrays: the
    scalars are gathered, the vectors never leave the workers."""
    n = b.shape[0]
    maxiter, dot, delta = cg_setup(n, b.size, eps, maxiter, columns, what)
    if x0 is not None:
        a = x0
        r = b - linop(a)
    else:
        a = da.zeros_like(b)
        r = b
    a, r = dask.persist(a, r)
    rr = dot(r, r).compute()
    active = rr > delta
    status = {"status": "Converged", "niter": 0, "x0_provided": x0 is not None}
    if not active.any():
        if verbose:
            print(dict(status, residual=(float(rr.max()) / n) ** 0.5))
        return a
    p = r
    for k in range(maxiter):
        (Mp,) = dask.persist(linop(p))
        pMp = dot(p, Mp).compute()
        bad = active & ~(pMp > 0)
        if bad.any():
            raise NotPositiveDefiniteError(
                f"{what}: the operator alpha*Id + K is not positive definite (a search direction p has "
                f"<p, (alpha Id + K) p> = {float(pMp[bad][0]):.3e} <= 0 at iteration {k}); conjugate gradient "
                "needs a symmetric positive definite system: check the kernel, or increase alpha")
        step = np.where(active, rr / np.where(active, pMp, 1.0), 0.0)
        a, r = dask.persist(a + step * p, r - step * Mp)
        rr_new = dot(r, r).compute()
        active = active & (rr_new > delta)
        if not active.any():
            if verbose:
                print(dict(status, niter=k + 1, residual=(float(rr_new.max()) / n) ** 0.5))
            return a
        beta = np.where(active, rr_new / np.where(active, rr, 1.0), 0.0)
        (p,) = dask.persist(r + beta * p)
        rr = rr_new
    residual = (float(rr.max()) / (n if columns else b.size)) ** 0.5
    if verbose:
        print(dict(status, status="Not converged", niter=maxiter, residual=residual))
    raise ConvergenceError(
        f"{what}: conjugate gradient did not converge in maxiter={maxiter} iterations: the residual "
        f"(root mean square) is {residual:.3e}, above eps={eps:g}; raise maxiter, loosen eps, or increase "
        "alpha (a better conditioned system)")
