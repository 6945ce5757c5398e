"""The loop nests a schedule chooses among, by name: where each applies, which one is the default.

A `Strategy` is the schedule's side of a loop nest: its name (the Schedule's `strategy`
field), the kind of target it runs on, when it applies to a program, and whether
`schedule()` may pick it by default.  The code that runs it lives with the code
generator (`backends/llvm/strategies/` on the CPU, `nvptx.py` on the GPU); a loop nest
registered there from outside the package registers its Strategy here too, never a
default (only named, through `Genred(schedule={"strategy": ...})` and the like), its
fields chosen by the rules of the built-in strategy it is `like`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ..ir.node import ssa_nodes
from ..ir.program import WIDE_THRESHOLD

CONTRACTIONS = ("SqDist", "Scalprod")


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    kind: str  # "cpu" or "gpu"
    doc: str
    applies: Callable  # applies(program, target, threshold) -> bool
    default: bool = True  # schedule() may choose it (the first default that applies, in registration order)
    like: str | None = None  # its fields are chosen as for this built-in strategy (None: its own name)

    @property
    def rules(self):
        """The built-in strategy whose rules choose this one's fields."""
        return STRATEGIES[self.like].rules if self.like else self.name


STRATEGIES: dict[str, Strategy] = {}


def register(strategy):
    """Add a Strategy (a name taken is an error: a loop nest is not replaced behind the cache keys)."""
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    if strategy.kind not in ("cpu", "gpu"):
        raise ValueError(f"strategy {strategy.name!r}: kind must be 'cpu' or 'gpu', got {strategy.kind!r}")
    if strategy.like is not None and STRATEGIES.get(strategy.like, strategy).kind != strategy.kind:
        raise ValueError(f"strategy {strategy.name!r}: like={strategy.like!r} is not a {strategy.kind} strategy")
    STRATEGIES[strategy.name] = strategy
    return strategy


class _Names:
    """The registered strategies' names, read when asked (those registered later too): the
    choices of the Schedule's `strategy` field."""

    def __iter__(self):
        return iter(tuple(STRATEGIES))

    def __contains__(self, name):
        return name in STRATEGIES

    def __len__(self):
        return len(STRATEGIES)


NAMES = _Names()


def possible(program, target, threshold):
    """The strategies that apply to `program` on `target`, the default first."""
    found = [s for s in STRATEGIES.values() if s.kind == target.kind and s.applies(program, target, threshold)]
    return [s.name for s in found if s.default] + [s.name for s in found if not s.default]


# ---- the built-in strategies' conditions --------------------------------------------------------
def wide_contractions(program, threshold=WIDE_THRESHOLD):
    """{SSA name: node} of the contractions of one wide i and one wide j variable, in walk order."""
    found = {}
    for name, n in ssa_nodes(program.roots()).items():
        if n.name in CONTRACTIONS and n.args[0].dim > threshold and all(a.name == "Var" for a in n.args):
            if sorted(a.attrs[2] for a in n.args) == [0, 1]:  # one i and one j variable
                found[name] = n
    return found


def column_split(program, threshold=WIDE_THRESHOLD):
    """(pos, width) of the j variable b when the program sums its terms (a reduction with
    `term_slots`) of F = s * b (b used nowhere else, s a scalar) and b is wide, else None."""
    f = program.formula
    if program.red.term_slots is None or program.formula2 is not None or f.name != "Mult":
        return None
    scalars = [a for a in f.args if a.dim == 1]
    wide_vars = [a for a in f.args if a.name == "Var" and a.attrs[2] == 1 and a.dim > threshold]
    if len(scalars) != 1 or len(wide_vars) != 1:
        return None
    b = wide_vars[0]
    if any(n is b for n in scalars[0].walk()):
        return None
    return b.attrs[0], b.dim


def _screenable(program, target, threshold):
    """A K-min (a reduction with `update_screened`) of F = SqDist(x, y) itself, x and y wide."""
    contractions = wide_contractions(program, threshold)
    return (len(contractions) == 1 and program.red.update_screened is not None and program.formula2 is None
            and next(iter(contractions.values())) is program.formula and program.formula.name == "SqDist")


# in order of preference: the first that applies is the default
register(Strategy("columns", "cpu", "K @ B by blocks of B's columns", lambda p, t, w: column_split(p, w) is not None))
register(Strategy("screened", "cpu", "a K-min of SqDist ranked by its expanded form", _screenable))
register(Strategy("contraction", "cpu", "wide SqDist / scalar products of a tile of rows as one register-blocked "
                  "micro-kernel", lambda p, t, w: bool(wide_contractions(p, w))))
register(Strategy("lanes", "cpu", "SIMD across j", lambda p, t, w: True))
register(Strategy("threads", "gpu", "one thread a row", lambda p, t, w: True))
