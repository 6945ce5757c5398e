"""The rest of pykeops 2.3's LazyTensor surface, mixed into GenericLazyTensor: the
sequence operations (`bspline`, `softdtw_sqdist`, `difference_matrix`, on the IR
operations of keomlir/ir/ops/sequence.py), the trace of a linear operator, the
factorization hints, and pykeops's attributes (`Genred`, `KernelSolve`, `backend`,
`symbolic_variables`...)."""

from __future__ import annotations

from .tree import is_int, leaf_int, op_node, substitute, symbolic_leaves


class SurfaceMethods:
    """Methods of GenericLazyTensor (a mixin; see the module docstring)."""

    # pykeops's attributes of a LazyTensor that is not a reduction
    axis = formula2 = None
    ni = nj = batchdims = None
    backend = None  # set it (K.backend = "CPU") to run this LazyTensor's reductions, and those of
    # LazyTensors made from it, on that backend

    @property
    def Genred(self):  # noqa: N802  (pykeops's name)
        """The Genred class of this LazyTensor's front end."""
        return self.genred_class

    @property
    def KernelSolve(self):  # noqa: N802
        return self.kernel_solve_class

    @property
    def symbolic_variables(self):
        """(index, dimension, category) of each symbolic variable (Vi(k, d)...), by index."""
        return tuple((k, s.dim, s.cat) for k, s in sorted(symbolic_leaves(self._sym).items()))

    # ---- operations on sequences --------------------------------------------------------------
    def bspline(self, x, k=0):
        """`t.bspline(x, k)`: the B-spline basis functions of order k for the knots t (this
        LazyTensor, of dimension K >= k + 2), at the scalar x: dimension K - k - 1."""
        if not is_int(k) or k < 0:
            raise ValueError(f"bspline(x, k): the order k must be a non-negative integer, got {k!r}")
        return self._op("BSpline", [x], [int(k)], what="bspline")

    def softdtw_sqdist(self, other, gamma):
        """`x.softdtw_sqdist(y, gamma)`: the soft-DTW discrepancy of the series x and y
        (their components, in order) for the squared difference cost, smoothing gamma > 0."""
        return self._op("SoftDTW_SqDist", [other, gamma], what="softdtw_sqdist")

    def difference_matrix(self, other):
        """`x.difference_matrix(y)`: x_i - y_j for the n components of x and m of y, an
        m x n matrix stored row by row (dimension n * m)."""
        return self._op("DifferenceMatrix", [other], what="difference_matrix")

    # ---- linear operators and factorization -------------------------------------------------------
    def trace_operator(self, var):
        """`f.trace_operator(v)`: the trace of the linear map v -> f (self must be linear in the
        variable v and have its dimension, or dimension 1: then the sum of the 1 x d matrix).
        Computed as Σ_k f(e_k)_k, so the result does not depend on v (no array is needed for it)."""
        v = self._variable(var, "trace_operator")
        d = v.ndim
        if self.ndim not in (1, d):
            raise ValueError(f"trace_operator: the formula must have dimension 1 or that of the variable ({d}), "
                             f"got {self.ndim}")
        total = None
        for k in range(d):
            unit = leaf_int(1) if d == 1 else op_node("ElemT", [leaf_int(1)], (d, k))
            term = substitute(self._sym, v._sym, unit)
            if self.ndim > 1:
                term = op_node("Elem", [term], (k,))
            total = term if total is None else op_node("Add", [total, term])
        return self._wrap(total, self._meta(), self.ranges)

    def factorize(self, other):
        """`f.factorize(g)`: f, with its subformula g computed once.  keomlir always computes a
        repeated subformula once (its nodes are shared), so this is f itself."""
        return self._op("Factorize", [other], what="factorize")

    def auto_factorize(self):
        """f, its repeated subformulas computed once (what keomlir always does)."""
        return self._op("AutoFactorize", what="auto_factorize")
