"""Derivative operations.  They are parsed and dimension-checked here, and each
says how it expands into plain IR given reverse mode (`expand(node, grad)`,
`grad(f, x, e)` being the autodiff pass's vector-Jacobian product): the pass
asks the operation, so a new derivative form is one class here."""

from __future__ import annotations

from ..node import DimensionError
from .base import Op, cst, mk, register, require_dim


def _unit(k, dim):
    """The k-th basis vector of dimension dim."""
    return mk("ElemT", cst(1), attrs=(dim, k)) if dim > 1 else cst(1)


def _concat(parts):
    out = parts[0]
    for p in parts[1:]:
        out = mk("Concat", out, p)
    return out


def _jacobian_rows(f, x, grad):
    """The rows of the Jacobian of f in x: grad(f, x, unit_k) for each component k of f."""
    return [grad(f, x, _unit(k, f.dim)) for k in range(f.dim)]


def _divergence(f, x, grad):
    out = None
    for k, row in enumerate(_jacobian_rows(f, x, grad)):
        part = mk("Elem", row, attrs=(k,))
        out = part if out is None else mk("Add", out, part)
    return out


class Derivative(Op):
    lowers = False

    def expand(self, node, grad):
        """The plain-IR form of `node` (whose operands are plain), built with `grad`."""
        raise NotImplementedError

    def lower(self, em, xs, attrs):
        raise NotImplementedError(f"{self.name} must be rewritten by the autodiff pass before code generation")

    def reference(self, xs, attrs):
        raise NotImplementedError(f"{self.name} must be rewritten by the autodiff pass before evaluation")


@register
class Grad(Derivative):
    """Grad(f, x, e): the adjoint of df/dx applied to e (dimension of x)."""

    name, signature = "Grad", "fvf"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "e", dims[1], dims[0])
        return attrs[0].dim

    def expand(self, node, grad):
        return grad(node.args[0], node.attrs[0], node.args[1])


@register
class Diff(Derivative):
    """Diff(f, x, e): the differential of f in x applied to e (dimension of f)."""

    name, signature = "Diff", "fvf"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "e", dims[1], attrs[0].dim)
        return dims[0]

    def expand(self, node, grad):  # row by row of the Jacobian
        f, x, e = node.args[0], node.attrs[0], node.args[1]
        return _concat([mk("Scalprod", row, e) for row in _jacobian_rows(f, x, grad)])


@register
class GradMatrix(Derivative):
    name, signature = "GradMatrix", "fv"

    def infer_dim(self, dims, attrs):
        return dims[0] * attrs[0].dim

    def expand(self, node, grad):
        return _concat(_jacobian_rows(node.args[0], node.attrs[0], grad))


@register
class Divergence(Derivative):
    name, signature = "Divergence", "fv"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], attrs[0].dim)
        return 1

    def expand(self, node, grad):
        return _divergence(node.args[0], node.attrs[0], grad)


@register
class Laplacian(Derivative):
    name, signature = "Laplacian", "fv"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], 1)
        return 1

    def expand(self, node, grad):
        x = node.attrs[0]
        return _divergence(grad(node.args[0], x, cst(1)), x, grad)


def _substitute(f, x, e):
    """f with every occurrence of the variable x replaced by the node e."""
    memo = {}
    for n in f.walk():
        if n == x:
            memo[id(n)] = e
        elif n.args:
            memo[id(n)] = mk(n.name, *[memo[id(a)] for a in n.args], attrs=n.attrs)
        else:
            memo[id(n)] = n
    return memo[id(f)]


@register
class TraceOperator(Derivative):
    """TraceOperator(f, v): the trace of the linear map v -> f (f linear in v, of the
    dimension of v or 1): Σ_k f(e_k)_k, or Σ_k f(e_k) for a scalar f (the trace of the
    1 x d matrix against a column of ones).  The result no longer depends on v."""

    name, signature = "TraceOperator", "fv"

    def infer_dim(self, dims, attrs):
        if dims[0] not in (1, attrs[0].dim):
            raise DimensionError(f"{self.name}: f must have dimension 1 or that of the variable ({attrs[0].dim}), "
                             f"got {dims[0]}")
        return 1

    def expand(self, node, grad):
        f, x = node.args[0], node.attrs[0]
        terms = [_substitute(f, x, _unit(k, x.dim)) for k in range(x.dim)]
        if f.dim > 1:
            terms = [mk("Elem", t, attrs=(k,)) for k, t in enumerate(terms)]
        out = terms[0]
        for t in terms[1:]:
            out = mk("Add", out, t)
        return out
