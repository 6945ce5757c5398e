"""pykeops's variable helpers `Var`, `Vi`, `Vj` and `Pm`, made for one front end's LazyTensor."""

from __future__ import annotations


def make_variable_helpers(cls):
    """Vi, Vj, Pm (and Var) for the LazyTensor class `cls`."""

    def Var(x_or_ind, dim=None, cat=None):
        if dim is None:
            return cls(x_or_ind, axis=cat)
        return cls((x_or_ind, dim, cat))

    def Vi(x_or_ind, dim=None):
        """An i-indexed variable: `Vi(x)` for an (M, D) array, `Vi(k, d)` symbolic."""
        return Var(x_or_ind, dim, 0)

    def Vj(x_or_ind, dim=None):
        """A j-indexed variable: `Vj(y)` for an (N, D) array, `Vj(k, d)` symbolic."""
        return Var(x_or_ind, dim, 1)

    def Pm(x_or_ind, dim=None):
        """A parameter: `Pm(p)` for a (D,) array or a number, `Pm(k, d)` symbolic."""
        return Var(x_or_ind, dim, 2)

    return Var, Vi, Vj, Pm
