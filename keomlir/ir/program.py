"""A reduction program: what one compiled kernel computes.

`out_i = Red_j F(x_i, y_j, p)` (with G for the weighted reductions).  Axis 0
is normalised away by swapping the i and j categories, so a program always
reduces over j.  Passes map programs to programs.
"""

from __future__ import annotations

import dataclasses

from .node import print_ssa, variables
from .ops import make
from .reductions import get as get_reduction


# nodes and Sum states wider than this are lowered as loops over components (CPU and GPU)
# (backends/llvm/wide.py): unrolled, a 512-wide variable took seconds of LLVM time and
# spilled every register; the tiling pass blocks contractions of such variables
WIDE_THRESHOLD = 16


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How the loop nest is tiled (set by the tiling pass, read by code generators)."""

    vector_bits: int | None = None  # SIMD register width across j; None: scalar code
    rows: int = 1  # i rows sharing each load of j data (register tiling)
    block: int = 512  # j per block: the unit of compensated summation
    contractions: int = 0  # wide contractions of an i and a j variable run as one micro-kernel per tile of rows
    cache_bytes: int = 0  # j data per cache block, read by every tile of a chunk of rows (0: no cache blocking)
    # (pos, width): F = s * b, b = argument pos given row-major (n_j, width), `width` columns of b per call
    columns: tuple = ()
    screen: bool = False  # F = SqDist(x,y) ranked by its expanded form, exact values only for j that may enter
    registers: int = 32  # the target's vector registers (the micro-kernels' accumulators are a share)

    def lanes(self, scalar_bits):
        return self.vector_bits // scalar_bits if self.vector_bits else None

    def text(self):
        simd = f"SIMD {self.vector_bits}-bit across j" if self.vector_bits else "scalar j"
        text = f"tiling: {simd}, {self.rows} row(s) of i per load of j, blocks of {self.block} j"
        if self.contractions:
            text += f", {self.contractions} contraction(s) over components register-blocked across the rows"
        if self.cache_bytes:
            text += f", j in cache blocks of {self.cache_bytes // 1024} KiB of j data"
        if self.columns:
            text += (f", argument {self.columns[0]} in blocks of {self.columns[1]} columns (one call each, "
                     f"row-major), multiplied into register tiles of rows x column vectors")
        if self.screen:
            text += ", SqDist screened by |x|^2 + |y|^2 - 2<x,y> (exact values for the j that may enter)"
        return text


@dataclasses.dataclass(frozen=True)
class Program:
    reduction: str
    formula: object  # Node
    formula2: object = None  # Node or None
    opt_arg: int | None = None
    arguments: tuple = ()  # (pos, dim, cat) of every argument, by position
    names: tuple = ()  # ((pos, dim, cat), alias) pairs, for printing only
    tiling: Tiling | None = None

    def __hash__(self):  # cached: a program is the key of the kernel caches, looked up on every call
        found = self.__dict__.get("_hash")
        if found is None:
            found = hash((self.reduction, self.formula, self.formula2, self.opt_arg, self.arguments, self.names,
                          self.tiling))
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
        args = ", ".join(
            f"{names.get(a, '_')}=Var({a[0]},{a[1]},{'ijp'[a[2]]})" for a in self.arguments
        )
        k = f", K={self.opt_arg}" if self.opt_arg is not None else ""
        head = f"reduce {self.reduction}{k} over j  args({args})"
        if self.tiling is not None:
            head += "\n  " + self.tiling.text()
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
