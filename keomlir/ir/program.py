"""A reduction program: what one compiled kernel computes.

`out_i = Red_j F(x_i, y_j, p)` (with G for the weighted reductions).  Axis 0
is normalised away by swapping the i and j categories, so a program always
reduces over j.  Passes map programs to programs.
"""

from __future__ import annotations

import dataclasses

from .node import WIDE_THRESHOLD, print_ssa, variables  # noqa: F401 (WIDE_THRESHOLD: here too)
from .ops import make
from .reductions import get as get_reduction



@dataclasses.dataclass(frozen=True)
class Program:
    reduction: str
    formula: object  # Node
    formula2: object = None  # Node or None
    opt_arg: int | None = None
    arguments: tuple = ()  # (pos, dim, cat) of every argument, by position
    names: tuple = ()  # ((pos, dim, cat), alias) pairs, for printing only

    def __hash__(self):  # cached: a program is the key of the kernel caches, looked up on every call
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.reduction, self.formula, self.formula2, self.opt_arg, self.arguments, self.names))
            object.__setattr__(self, "_hash", found)
        return found

    @property
    def red(self):
        return get_reduction(self.reduction)

    def roots(self):
        return [("F", self.formula)] + ([("G", self.formula2)] if self.formula2 is not None else [])

    def with_formulas(self, formula, formula2):
        return dataclasses.replace(self, formula=formula, formula2=formula2)

    def text(self):
        """Stable text: the header, then the SSA of F (and G)."""
        names = dict(self.names)
        # an unnamed argument is its Var alone: `_=` would read as an alias called _
        args = ", ".join(
            (f"{names[a]}=" if a in names else "") + f"Var({a[0]},{a[1]},{'ijp'[a[2]]})" for a in self.arguments
        )
        k = f", K={self.opt_arg}" if self.opt_arg is not None else ""
        head = f"reduce {self.reduction}{k} over j  args({args})"
        return head + "\n" + print_ssa(self.roots(), names)

    def used_variables(self):
        return variables(self.formula, self.formula2)


def replace_vars(node, new_attrs):
    """The same formula with every Var(pos, dim, cat) replaced by Var(*new_attrs(pos, dim, cat)),
    inside derivative attributes too."""
    memo = {}
    for n in node.walk():
        if n.name == "Var":
            memo[id(n)] = make("Var", (), tuple(new_attrs(*n.attrs)))
        else:
            attrs = tuple(memo.get(id(a), replace_vars(a, new_attrs)) if hasattr(a, "op") else a for a in n.attrs)
            memo[id(n)] = make(n.name, [memo[id(a)] for a in n.args], attrs)
    return memo[id(node)]


def swap_ij(node):
    """The same formula with i and j variables exchanged (axis=0 -> axis=1)."""
    return replace_vars(node, lambda pos, dim, cat: (pos, dim, {0: 1, 1: 0, 2: 2}[cat]))
