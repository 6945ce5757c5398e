"""Operations that read their vectors as sequences: B-spline bases (`BSpline`: a
vector of knots, a scalar point), soft dynamic time warping (`SoftDTW_SqDist`: two
series and a smoothing scalar), and the matrix of differences of two vectors
(`DifferenceMatrix`).

BSpline and SoftDTW_SqDist are recurrences.  The B-spline one is written once, in
`_bspline`, over an `Arith` (component-wise arithmetic): NumPy arrays for the reference
semantics, `Emitter` values for the lowering.  Soft-DTW's reference is the recurrence
unrolled on NumPy arrays (`_soft_dtw`); its lowering runs it as loops over a table in
stack memory (`_lower_soft_dtw`), so the code size does not grow with n * m.  Their
derivatives are operations of their own (`BSplineGrad`, `SoftDTWGrad`) that run the
recurrence forward and then back (reverse mode by hand), since the adjoint needs every
intermediate value.
"""

from __future__ import annotations

import numpy as np

from ..node import DimensionError
from .base import Op, cst, mk, register, require_dim


class Arith:
    """Component-wise arithmetic on NumPy arrays (each value one component, batched)."""

    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
    exp, log = np.exp, np.log

    @staticmethod
    def const(c):
        return np.float64(c)

    @staticmethod
    def lt(a, b):
        return np.less(a, b)

    @staticmethod
    def le(a, b):
        return np.less_equal(a, b)

    @staticmethod
    def both(p, q):
        return np.logical_and(p, q)

    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b)

    @staticmethod
    def to_float(cond):
        return np.asarray(cond, dtype=np.float64)

    def min(self, a, b):
        return self.where(self.lt(b, a), b, a)


class EmitterArith(Arith):
    """The same operations as LLVM values, through an `Emitter`."""

    def __init__(self, em):
        self.em = em

    def add(self, a, b):
        return self.em.add(a, b)

    def sub(self, a, b):
        return self.em.sub(a, b)

    def mul(self, a, b):
        return self.em.mul(a, b)

    def div(self, a, b):
        return self.em.div(a, b)

    def exp(self, a):
        return self.em.call("exp", a)

    def log(self, a):
        return self.em.call("log", a)

    def const(self, c):
        return self.em.const(c)

    def lt(self, a, b):
        return self.em.cmp("<", a, b)

    def le(self, a, b):
        return self.em.cmp("<=", a, b)

    def both(self, p, q):
        return self.em.and_(p, q)

    def where(self, cond, a, b):
        return self.em.select(cond, a, b)

    def to_float(self, cond):
        return self.em.to_float(cond)


def _components(x):
    """(..., d) array -> list of d arrays of shape (...)."""
    return [x[..., k] for k in range(x.shape[-1])]


def _stack(values, shape):
    return np.stack([np.broadcast_to(v, shape) for v in values], axis=-1)


def _batch_shape(*xs):
    return np.broadcast_shapes(*(x.shape[:-1] for x in xs))


# ---- B-splines -----------------------------------------------------------------------------------


def _bspline(A, t, x, order):
    """The Cox-de Boor recurrence: levels[k][i] = B_{i,k}(x) for the knots t, k = 0..order.
    B_{i,0} = 1 on [t_i, t_i+1); B_{i,k} = w_{i,k} B_{i,k-1} + (1 - w_{i+1,k}) B_{i+1,k-1} with
    w_{i,k} = (x - t_i) / (t_i+k - t_i), taken as 0 where the two knots coincide.
    Also returns the weights w[k][i] and the knot conditions t_i < t_i+k (for the adjoint)."""
    levels = [[A.to_float(A.both(A.le(t[j], x), A.lt(x, t[j + 1]))) for j in range(len(t) - 1)]]
    weights, spans = [None], [None]
    for k in range(1, order + 1):
        prev = levels[-1]
        span = [A.lt(t[i], t[i + k]) for i in range(len(prev))]
        w = [A.where(span[i], A.div(A.sub(x, t[i]), A.sub(t[i + k], t[i])), A.const(0)) for i in range(len(prev))]
        levels.append([A.add(A.mul(w[i], prev[i]), A.mul(A.sub(A.const(1), w[i + 1]), prev[i + 1]))
                       for i in range(len(prev) - 1)])
        weights.append(w)
        spans.append(span)
    return levels, weights, spans


def _bspline_adjoint(A, t, x, order, g):
    """(adjoints of the knots, adjoint of x) of Σ_i g_i B_{i,order}(x): the recurrence run
    back; the order-0 indicators are piecewise constant (zero derivative)."""
    levels, weights, spans = _bspline(A, t, x, order)
    zero = A.const(0)
    dt, dx = [zero] * len(t), zero
    adj = list(g)
    for k in range(order, 0, -1):
        prev, w = levels[k - 1], weights[k]
        dprev, dw = [zero] * len(prev), [zero] * len(prev)
        for i, a in enumerate(adj):
            dprev[i] = A.add(dprev[i], A.mul(a, w[i]))
            dprev[i + 1] = A.add(dprev[i + 1], A.mul(a, A.sub(A.const(1), w[i + 1])))
            dw[i] = A.add(dw[i], A.mul(a, prev[i]))
            dw[i + 1] = A.sub(dw[i + 1], A.mul(a, prev[i + 1]))
        for i, d in enumerate(dw):  # w = (x - t_i) / (t_i+k - t_i) where the span is not empty
            inv = A.where(spans[k][i], A.div(d, A.sub(t[i + k], t[i])), zero)
            dx = A.add(dx, inv)
            dt[i] = A.add(dt[i], A.mul(inv, A.sub(w[i], A.const(1))))
            dt[i + k] = A.sub(dt[i + k], A.mul(inv, w[i]))
        adj = dprev
    return dt, dx


def _bspline_dim(name, dims, order):
    if order < 0:
        raise DimensionError(f"{name}: the order must be >= 0, got {order}")
    require_dim(name, "x", dims[1], 1)
    if dims[0] < order + 2:
        raise DimensionError(f"{name}: B-splines of order {order} need at least {order + 2} knots, "
                             f"got a vector of {dims[0]}")
    return dims[0] - order - 1


@register
class BSpline(Op):
    """BSpline(t, x, k): the B-spline basis functions of order k (degree k) for the
    knots t (a vector of dimension K), evaluated at the scalar x: dimension K - k - 1."""

    name, signature = "BSpline", "ffi"

    def infer_dim(self, dims, attrs):
        return _bspline_dim(self.name, dims, attrs[0])

    def reference(self, xs, attrs):
        t, x = xs
        with np.errstate(divide="ignore", invalid="ignore"):
            levels = _bspline(Arith(), _components(t), x[..., 0], attrs[0])[0]
        return _stack(levels[-1], _batch_shape(t, x))

    def lower(self, em, xs, attrs):
        return _bspline(EmitterArith(em), xs[0], xs[1][0], attrs[0])[0][-1]

    def vjp(self, node, g):
        t, x = node.args
        grad = mk("BSplineGrad", t, x, g, attrs=node.attrs)
        return [mk("Extract", grad, attrs=(0, t.dim)), mk("Extract", grad, attrs=(t.dim, 1))]


@register
class BSplineGrad(Op):
    """BSplineGrad(t, x, g, k): the gradient of <g, BSpline(t, x, k)> in (t, x), concatenated."""

    name, signature = "BSplineGrad", "fffi"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "g", dims[2], _bspline_dim(self.name, dims, attrs[0]))
        return dims[0] + 1

    def reference(self, xs, attrs):
        t, x, g = xs
        with np.errstate(divide="ignore", invalid="ignore"):
            dt, dx = _bspline_adjoint(Arith(), _components(t), x[..., 0], attrs[0], _components(g))
        return _stack(dt + [dx], _batch_shape(t, x, g))

    def lower(self, em, xs, attrs):
        dt, dx = _bspline_adjoint(EmitterArith(em), xs[0], xs[1][0], attrs[0], xs[2])
        return dt + [dx]

    def vjp(self, node, g):
        raise NotImplementedError("BSpline has first derivatives only (second derivatives are not available)")


# ---- soft dynamic time warping -----------------------------------------------------------------------


def _soft_dtw(A, x, y, gamma, tangent=False):
    """The soft-DTW recurrence on the cost d_ij = (x_i - y_j)^2: R_00 = d_00, the first row
    and column cumulative sums, R_ij = d_ij + softmin_gamma(R_i-1,j-1, R_i-1,j, R_i,j-1) with
    softmin_gamma(a) = -gamma log Σ exp(-a / gamma) (shifted by min(a), never overflowing).
    Returns R, the softmin weights p[i][j] (for the adjoint) and, with `tangent`, dR/dgamma."""
    n, m = len(x), len(y)
    d = [[A.mul(A.sub(x[i], y[j]), A.sub(x[i], y[j])) for j in range(m)] for i in range(n)]
    zero = A.const(0)
    R = [[None] * m for _ in range(n)]
    T = [[zero] * m for _ in range(n)]
    p = [[None] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 or j == 0:
                R[i][j] = d[i][j] if i == j == 0 else A.add(d[i][j], R[i - 1][j] if j == 0 else R[i][j - 1])
                continue
            prev = (R[i - 1][j - 1], R[i - 1][j], R[i][j - 1])
            low = A.min(A.min(prev[0], prev[1]), prev[2])
            e = [A.exp(A.div(A.sub(low, a), gamma)) for a in prev]
            total = A.add(A.add(e[0], e[1]), e[2])
            soft = A.sub(low, A.mul(gamma, A.log(total)))
            R[i][j] = A.add(d[i][j], soft)
            p[i][j] = [A.div(v, total) for v in e]
            if tangent:  # d softmin / d gamma = (softmin - Σ p a) / gamma + Σ p dR/dgamma
                mean = A.add(A.add(A.mul(p[i][j][0], prev[0]), A.mul(p[i][j][1], prev[1])), A.mul(p[i][j][2], prev[2]))
                carried = A.add(A.add(A.mul(p[i][j][0], T[i - 1][j - 1]), A.mul(p[i][j][1], T[i - 1][j])),
                                A.mul(p[i][j][2], T[i][j - 1]))
                T[i][j] = A.add(carried, A.div(A.sub(soft, mean), gamma))
    return R, p, T


def _soft_dtw_gradient(A, x, y, gamma):
    """(dR/dx, dR/dy, dR/dgamma) of R = SoftDTW_SqDist(x, y, gamma): E_ij = dR/dR_ij runs back
    from E_n-1,m-1 = 1 through the softmin weights (1 along the first row and column)."""
    n, m = len(x), len(y)
    R, p, T = _soft_dtw(A, x, y, gamma, tangent=True)
    zero, one = A.const(0), A.const(1)
    E = [[zero] * m for _ in range(n)]
    E[n - 1][m - 1] = one
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            # R_ij flows into its successors: the diagonal one through its softmin weight, the
            # next in i and in j through theirs, or as is along the first column and row
            if i + 1 < n and j + 1 < m:
                E[i][j] = A.add(E[i][j], A.mul(E[i + 1][j + 1], p[i + 1][j + 1][0]))
            if i + 1 < n:
                E[i][j] = A.add(E[i][j], E[i + 1][j] if j == 0 else A.mul(E[i + 1][j], p[i + 1][j][1]))
            if j + 1 < m:
                E[i][j] = A.add(E[i][j], E[i][j + 1] if i == 0 else A.mul(E[i][j + 1], p[i][j + 1][2]))
    dx, dy = [zero] * n, [zero] * m
    for i in range(n):
        for j in range(m):
            w = A.mul(A.mul(A.const(2), A.sub(x[i], y[j])), E[i][j])
            dx[i] = A.add(dx[i], w)
            dy[j] = A.sub(dy[j], w)
    return dx, dy, T[n - 1][m - 1]


class _Grid:
    """The soft-DTW table as loops (code size independent of n and m): cell (i, j) of the
    recurrence at c = (j+1)(n+1) + (i+1) of a stack array, with a padding column (i = -1),
    row (j = -1) and, for the adjoint, a last row: R is +inf there but for R_-1,-1 = 0, which
    makes the first row and column cumulative sums with softmin weights exactly 0 or 1."""

    def __init__(self, em, x, y):
        self.em, self.es = em, em.with_lanes(None)
        self.n, self.m = len(x), len(y)
        self.width = self.n + 1
        self.size = self.width * (self.m + 2)
        self.x, self.y = self.constant_array(x), self.constant_array(y)

    def constant_array(self, values):
        arr = self.em.array(self.em.t, len(values))
        for k, v in enumerate(values):
            self.store(arr, self.es.index_const(k), v)
        return arr

    def filled(self, value, n=None):
        arr = self.em.array(self.em.t, n or self.size)
        with self.es.loop(self.es.index_const(0), self.es.index_const(n or self.size), "fill") as c:
            self.store(arr, c, value)
        return arr

    def load(self, arr, c, offset=0):
        return self.em.load(self.em.at(arr, self.es.index_add(c, offset) if offset else c))

    def store(self, arr, c, v):
        self.em.store(self.em.at(arr, c), v)

    def cell(self, c):
        """(is c a padding cell, index of x_i, index of y_j), padding cells given index 0."""
        es = self.es
        row, col = es.index_divmod(c, self.width)
        pad = es.index_cmp("==", col, es.index_const(0))
        zero = es.index_const(0)
        return pad, es.select(pad, zero, es.index_add(col, -1)), es.select(pad, zero, es.index_add(row, -1))

    @property
    def last(self):
        return self.m * self.width + self.n


def _lower_soft_dtw(em, x, y, gamma, gradient=False):
    """SoftDTW_SqDist (a list of one value) or, with `gradient`, SoftDTWGrad (n + m + 1 values)."""
    A, g = EmitterArith(em), _Grid(em, x, y)
    es, w = g.es, g.width
    inf, zero = em.const(float("inf")), em.const(0)
    R = g.filled(inf)
    g.store(R, es.index_const(0), zero)
    if gradient:
        P = [g.filled(zero) for _ in range(3)]
        T = g.filled(zero)
    with es.loop(es.index_const(w + 1), es.index_const(g.last + 1), "cell") as c:
        pad, i, j = g.cell(c)
        diff = A.sub(g.load(g.x, i), g.load(g.y, j))
        prev = (g.load(R, c, -w - 1), g.load(R, c, -1), g.load(R, c, -w))
        low = A.min(A.min(prev[0], prev[1]), prev[2])
        e = [A.exp(A.div(A.sub(low, a), gamma)) for a in prev]
        total = A.add(A.add(e[0], e[1]), e[2])
        soft = A.sub(low, A.mul(gamma, A.log(total)))
        g.store(R, c, em.select(pad, inf, A.add(A.mul(diff, diff), soft)))
        if gradient:
            p = [A.div(v, total) for v in e]
            for k in range(3):
                g.store(P[k], c, em.select(pad, zero, p[k]))
            # dR/dgamma: (softmin - Σ p a) / gamma + Σ p dR/dgamma (terms of weight 0 dropped: a = inf there)
            mean = carried = zero
            for k, offset in enumerate((-w - 1, -1, -w)):
                mean = A.add(mean, em.select(em.cmp(">", e[k], zero), A.mul(p[k], prev[k]), zero))
                carried = A.add(carried, A.mul(p[k], g.load(T, c, offset)))
            g.store(T, c, em.select(pad, zero, A.add(carried, A.div(A.sub(soft, mean), gamma))))
    if not gradient:
        return [g.load(R, es.index_const(g.last))]
    E, dx, dy = g.filled(zero), g.filled(zero, g.n), g.filled(zero, g.m)
    g.store(E, es.index_const(g.last), em.const(1))
    with es.loop(es.index_const(0), es.index_const(g.last - w), "back") as k:
        c = es.index_from(g.last, k)  # from the last cell back to the first
        pad, i, j = g.cell(c)
        e = A.add(A.add(A.mul(g.load(E, c, w + 1), g.load(P[0], c, w + 1)), A.mul(g.load(E, c, 1), g.load(P[1], c, 1))),
                  A.mul(g.load(E, c, w), g.load(P[2], c, w)))
        e = em.select(es.index_cmp("==", k, es.index_const(0)), em.const(1), em.select(pad, zero, e))
        g.store(E, c, e)
        term = A.mul(A.mul(em.const(2), A.sub(g.load(g.x, i), g.load(g.y, j))), e)
        g.store(dx, i, A.add(g.load(dx, i), term))
        g.store(dy, j, A.sub(g.load(dy, j), term))
    return ([g.load(dx, es.index_const(k)) for k in range(g.n)] + [g.load(dy, es.index_const(k)) for k in range(g.m)]
            + [g.load(T, es.index_const(g.last))])


def _soft_dtw_dim(name, dims):
    require_dim(name, "gamma", dims[2], 1)
    return 1


@register
class SoftDTW_SqDist(Op):
    """SoftDTW_SqDist(x, y, gamma): the soft-DTW discrepancy of the series x (dimension n)
    and y (dimension m) for the cost (x_i - y_j)^2, smoothed by gamma > 0: a scalar."""

    name, signature = "SoftDTW_SqDist", "fff"

    def infer_dim(self, dims, attrs):
        return _soft_dtw_dim(self.name, dims)

    def reference(self, xs, attrs):
        x, y, gamma = xs
        with np.errstate(divide="ignore", invalid="ignore"):
            R = _soft_dtw(Arith(), _components(x), _components(y), gamma[..., 0])[0]
        return _stack([R[-1][-1]], _batch_shape(x, y, gamma))

    def lower(self, em, xs, attrs):
        return _lower_soft_dtw(em, xs[0], xs[1], xs[2][0])

    def vjp(self, node, g):
        x, y, gamma = node.args
        grad = mk("SoftDTWGrad", x, y, gamma)
        parts = [(0, x.dim), (x.dim, y.dim), (x.dim + y.dim, 1)]
        return [mk("Mult", g, mk("Extract", grad, attrs=span)) for span in parts]


@register
class SoftDTWGrad(Op):
    """SoftDTWGrad(x, y, gamma): the gradient of SoftDTW_SqDist in (x, y, gamma), concatenated."""

    name, signature = "SoftDTWGrad", "fff"

    def infer_dim(self, dims, attrs):
        _soft_dtw_dim(self.name, dims)
        return dims[0] + dims[1] + 1

    def reference(self, xs, attrs):
        x, y, gamma = xs
        with np.errstate(divide="ignore", invalid="ignore"):
            dx, dy, dgamma = _soft_dtw_gradient(Arith(), _components(x), _components(y), gamma[..., 0])
        return _stack(dx + dy + [dgamma], _batch_shape(x, y, gamma))

    def lower(self, em, xs, attrs):
        return _lower_soft_dtw(em, xs[0], xs[1], xs[2][0], gradient=True)

    def vjp(self, node, g):
        raise NotImplementedError("SoftDTW_SqDist has first derivatives only (second derivatives are not available)")


# ---- difference matrix ----------------------------------------------------------------------------


@register
class DifferenceMatrix(Op):
    """DifferenceMatrix(x, y): the m x n matrix x_i - y_j (x of dimension n, y of dimension m),
    stored row by row: component j*n + i."""

    name, signature = "DifferenceMatrix", "ff"

    def infer_dim(self, dims, attrs):
        return dims[0] * dims[1]

    def reference(self, xs, attrs):
        x, y = xs
        diff = x[..., None, :] - y[..., :, None]
        return diff.reshape(diff.shape[:-2] + (-1,))

    def lower(self, em, xs, attrs):
        x, y = xs
        return [em.sub(xi, yj) for yj in y for xi in x]

    def vjp(self, node, g):  # x: the column sums of g as a matrix; y: minus its row sums
        x, y = node.args
        return [mk("VecMatMult", mk("SumT", cst(1), attrs=(y.dim,)), g),
                mk("Minus", mk("MatVecMult", g, mk("SumT", cst(1), attrs=(x.dim,))))]
