"""Derivative operations.  They are parsed and dimension-checked here; the
autodiff pass rewrites them into plain IR before code generation."""

from __future__ import annotations

from .base import Op, register, require_dim


class Derivative(Op):
    lowers = False

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


@register
class Diff(Derivative):
    """Diff(f, x, e): the differential of f in x applied to e (dimension of f)."""

    name, signature = "Diff", "fvf"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "e", dims[1], attrs[0].dim)
        return dims[0]


@register
class GradMatrix(Derivative):
    name, signature = "GradMatrix", "fv"

    def infer_dim(self, dims, attrs):
        return dims[0] * attrs[0].dim


@register
class Divergence(Derivative):
    name, signature = "Divergence", "fv"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], attrs[0].dim)
        return 1


@register
class Laplacian(Derivative):
    name, signature = "Laplacian", "fv"

    def infer_dim(self, dims, attrs):
        require_dim(self.name, "f", dims[0], 1)
        return 1
